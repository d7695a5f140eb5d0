"""Rendering of `layerwise time`: a short table, or stable JSON."""
from __future__ import annotations

from layerwise.report.fmt import count


def _layout(layout) -> dict:
    return {"dp": layout.dp, "tp": layout.tp, "pp": layout.pp, "ep": layout.ep, "zero": layout.zero,
            "sequence_parallel": layout.sequence_parallel, "schedule": layout.schedule,
            "interleave": layout.interleave, "micro_batch": layout.micro_batch, "grad_accum": layout.grad_accum,
            "global_batch": layout.global_batch, "checkpointing": layout.checkpointing}


def any_time_json(answer) -> dict:
    """`time --json` in either mode: a training estimate, or inference per GPU (report/infer_time.py)."""
    from layerwise.report.infer_time import infer_time_json

    return infer_time_json(answer) if hasattr(answer, "times") else time_json(answer)


def time_json(est) -> dict:
    b, st = est.budget, est.step
    return {
        "model": b.model,
        "gpu": b.gpu,
        "gpu_source": b.gpu_source,
        "gpus": st.layout.n_gpus,
        "layout": _layout(st.layout),
        "precision": est.precision,
        "dtype": b.dtype,
        "peak_flops_per_gpu": st.peak_flops,
        "mfu_override": est.mfu_override,
        "step_seconds": st.step_seconds,
        "step_parts": st.parts if est.mfu_override is None else None,
        "tokens_per_step": st.tokens_per_step,
        "tokens_per_second": st.tokens_per_second,
        "tflops_per_gpu": st.tflops_per_gpu,
        "mfu": st.mfu,
        "hfu": st.hfu,
        "tokens": b.tokens,
        "tokens_default": b.tokens_default,
        "samples": b.samples,
        "seq": b.seq,
        "params": b.n_params,
        "active_params": b.active_params,
        "flops": {"per_sample": b.flops_per_sample, "total": b.total_flops, "six_nd": b.six_nd_flops},
        "seconds": est.seconds,
        "hours": est.seconds / 3600,
        "days": est.days,
        "gpu_hours": est.gpu_hours,
        "price_per_gpu_hour": est.price_per_gpu_hour,
        "cost": est.cost,
    }


def _flops(n: int | float) -> str:
    return f"{float(n):.3g}"


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    if seconds >= 120:
        return f"{seconds / 60:.1f} minutes"
    return f"{seconds:.1f} s"


def _layout_line(layout) -> str:
    parts = [f"dp {layout.dp}", f"tp {layout.tp}" + (" +SP" if layout.sequence_parallel else ""), f"pp {layout.pp}"]
    if layout.pp > 1:
        parts.append(layout.schedule + (f" x{layout.interleave}" if layout.interleave > 1 else ""))
    if layout.ep > 1:
        parts.append(f"ep {layout.ep}")
    parts += [f"ZeRO {layout.zero}", f"micro-batch {layout.micro_batch} x {layout.grad_accum}",
              f"checkpointing {layout.checkpointing}"]
    return ", ".join(parts)


def render_time(est) -> None:
    from rich.table import Table

    from layerwise.report.console import out

    b, st = est.budget, est.step
    table = Table(title=f"{b.model}: training time on {st.layout.n_gpus} x {b.gpu}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    budget = (f"{count(b.tokens)} tokens" + (" (20 tokens/param, Chinchilla default)" if b.tokens_default else "")
              if b.tokens is not None else f"{count(b.samples)} samples")
    table.add_row("budget", budget)
    table.add_row("parameters", count(b.n_params) + (f" ({count(b.active_params)} active)"
                                                    if b.active_params != b.n_params else ""))
    table.add_row("layout", _layout_line(st.layout) + f", {est.precision}")
    table.add_row("FLOPs (spec, fwd+bwd)", _flops(b.total_flops))
    if b.six_nd_flops is not None:
        ratio = b.total_flops / b.six_nd_flops
        table.add_row("FLOPs (6ND)", f"{_flops(b.six_nd_flops)} (spec / 6ND = {ratio:.2f}: attention "
                                     f"scores and norms are what 6ND leaves out)")
    if est.mfu_override is None:
        shares = ", ".join(f"{k} {v:.3g}" for k, v in st.parts.items() if v > 0)
        table.add_row("step", f"{st.step_seconds:.4g} s ({shares})")
    else:
        table.add_row("step", f"{st.step_seconds:.4g} s at MFU {est.mfu_override:.0%} (given)")
    unit = "tokens" if b.tokens is not None else "samples"
    table.add_row("throughput", f"{count(st.tokens_per_second)} {unit}/s; {st.tflops_per_gpu:.1f} TFLOP/s per GPU; "
                                f"MFU {st.mfu:.1%}, HFU {st.hfu:.1%} of {count(st.peak_flops)}FLOP/s")
    table.add_row("time", _duration(est.seconds) + f" ({count(est.gpu_hours)} GPU-hours)")
    if est.cost is not None:
        table.add_row("cost", f"${est.cost:,.0f} at ${est.price_per_gpu_hour:g} per GPU-hour")
    table.add_row("source", b.gpu_source)
    out.print(table)
