"""Rendering of `layerwise time --mode infer`: one row per GPU, or stable JSON."""
from __future__ import annotations

from rich.table import Table

from layerwise.cost.efficiency import DEFAULT as EFF
from layerwise.report.console import out
from layerwise.report.fmt import nbytes


def _roof(r) -> dict:
    return {"seconds": r.seconds, "bound": r.bound, "flops": r.flops, "bytes": r.bytes_moved,
            "compute_seconds": r.compute_seconds, "memory_seconds": r.memory_seconds}


def infer_time_json(answer) -> dict:
    model, workload, times = answer.model, answer.workload, answer.times
    return {
        "model": model,
        "mode": "infer",
        "batch": workload.batch,
        "prompt_tokens": times[0].prompt,
        "new_tokens": workload.new_tokens,
        "precision": workload.precision,
        "quant": workload.quant,
        "kv_dtype": times[0].kv_dtype,
        "gpus": [{
            "gpu": t.gpu.name,
            "gpu_source": t.gpu.source,
            "peak_dtype": t.peak_dtype,
            "peak_flops": t.gpu.peak_flops(t.peak_dtype),
            "bandwidth_bytes_per_s": t.gpu.bandwidth,
            "prefill_seconds": t.prefill.seconds,
            "prefill_bound": t.prefill.bound,
            "ttft_seconds": t.ttft_seconds,
            "decode_seconds": t.decode_seconds,
            "decode_bound": t.decode_bound,
            "decode_tokens_per_s": t.decode_tokens_per_s,
            "decode_tokens_per_s_per_sequence": t.decode_tokens_per_s / t.batch,
            "total_seconds": t.total_seconds,
            "prefill": _roof(t.prefill),
            "decode_first_step": _roof(t.first_step),
            "decode_last_step": _roof(t.last_step),
            "memory_peak_bytes": t.memory_peak_bytes,
            "fits": t.fits,
        } for t in times],
    }


def render_infer_time(answer) -> None:
    model, workload, times = answer.model, answer.workload, answer.times
    t0 = times[0]
    kv = t0.kv_dtype + ("" if workload.kv_dtype else " (the activations')")
    table = Table(title=f"{model}: inference, batch {workload.batch}, prompt {t0.prompt} + {workload.new_tokens} new "
                        f"tokens, {workload.precision}, weights {workload.quant}, KV cache {kv}")
    for col in ("GPU", "prefill = TTFT", "bound", "decode tok/s", "per sequence", "ms/token", "bound", "total",
                "memory"):
        table.add_column(col, justify="left" if col == "GPU" else "right")
    for t in times:
        table.add_row(t.gpu.name, _secs(t.prefill.seconds), t.prefill.bound, f"{t.decode_tokens_per_s:,.0f}",
                      f"{t.decode_tokens_per_s / t.batch:,.1f}", f"{1e3 * t.decode_seconds / t.new_tokens:,.2f}",
                      t.decode_bound, _secs(t.total_seconds),
                      nbytes(t.memory_peak_bytes) + ("" if t.fits else " (does not fit)"))
    out.print(table)
    out.print(f"roofline per phase: max(matmul FLOPs / (peak x {EFF.matmul}), bytes / (bandwidth x {EFF.bandwidth})); "
              f"decode reads the weights and the KV cache for every token (docs/INFERENCE.md)", highlight=False)


def _secs(s: float) -> str:
    return f"{s * 1e3:,.1f} ms" if s < 1 else f"{s:,.2f} s"
