"""Rendering of `layerwise time`: a short table, or stable JSON."""
from __future__ import annotations

from layerwise.report.fmt import count


def time_json(est) -> dict:
    return {
        "model": est.model,
        "gpu": est.gpu,
        "gpu_source": est.gpu_source,
        "gpus": est.n_gpus,
        "dtype": est.dtype,
        "peak_flops_per_gpu": round(est.time.flops_per_gpu / est.mfu),
        "mfu": est.mfu,
        "tokens": est.tokens,
        "tokens_default": est.tokens_default,
        "samples": est.samples,
        "seq": est.seq,
        "params": est.n_params,
        "active_params": est.active_params,
        "flops": {"per_sample": est.flops_per_sample, "total": est.total_flops, "six_nd": est.six_nd_flops},
        "seconds": est.time.seconds,
        "hours": est.time.hours,
        "days": est.time.days,
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


def render_time(est) -> None:
    from rich.table import Table

    from layerwise.report.console import out

    table = Table(title=f"{est.model}: training time on {est.n_gpus} x {est.gpu}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    budget = (f"{count(est.tokens)} tokens" + (" (20 tokens/param, Chinchilla default)" if est.tokens_default else "")
              if est.tokens is not None else f"{count(est.samples)} samples")
    table.add_row("budget", budget)
    table.add_row("parameters", count(est.n_params) + (f" ({count(est.active_params)} active)"
                                                      if est.active_params != est.n_params else ""))
    table.add_row("FLOPs (spec, fwd+bwd)", _flops(est.total_flops))
    if est.six_nd_flops is not None:
        ratio = est.total_flops / est.six_nd_flops
        table.add_row("FLOPs (6ND)", f"{_flops(est.six_nd_flops)} (spec / 6ND = {ratio:.2f}: attention "
                                     f"scores and norms are what 6ND leaves out)")
    peak = est.time.flops_per_gpu / est.mfu
    table.add_row("per GPU", f"{count(peak)}FLOP/s {est.dtype} peak x MFU {est.mfu:.0%} = "
                             f"{count(est.time.flops_per_gpu)}FLOP/s")
    table.add_row("time", _duration(est.time.seconds))
    table.add_row("source", est.gpu_source)
    out.print(table)
