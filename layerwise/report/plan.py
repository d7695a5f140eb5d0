"""Rendering of the planner's result."""
from __future__ import annotations

from rich.table import Table

from layerwise.plan.search import Plan
from layerwise.report.console import out
from layerwise.report.fmt import nbytes

RANKING = ("ranked by recompute FLOPs, then less communication (ZeRO stage, TP), then larger micro-batch; "
           "fits = analytic peak + estimated CUDA context and allocator cache <= GPU memory")


def plan_json(p: Plan) -> dict:
    return {"model": p.model, "gpu": p.gpu.name, "gpus": p.n_gpus, "mfu": p.mfu, "tried": p.tried, "ranking": RANKING,
            "candidates": [{"zero": c.workload.zero, "tp": c.workload.tp, "dp": c.workload.dp,
                            "checkpointing": c.workload.checkpointing, "micro_batch": c.workload.batch,
                            "precision": c.workload.precision, "peak_bytes": c.peak_bytes,
                            "device_overhead_bytes": c.overhead_bytes, "flops_per_token": c.flops_per_token,
                            "seconds_per_billion_tokens": c.seconds_per_token * 1e9} for c in p.candidates]}


def render_plan(p: Plan) -> None:
    if not p.candidates:
        out.print(f"{p.model}: nothing fits on {p.n_gpus} x {p.gpu.name} ({nbytes(p.gpu.memory_bytes)}) among "
                  f"{p.tried} set-ups tried; more GPUs, pipeline parallelism or a shorter --seq may")
        return
    table = Table(title=f"{p.model} on {p.n_gpus} x {p.gpu.name} ({nbytes(p.gpu.memory_bytes)} each)",
                  title_justify="left")
    for col in ("#", "ZeRO", "TP", "DP", "checkpointing", "micro-batch", "per device", "hours / 1B tokens"):
        table.add_column(col, justify="right" if col not in ("checkpointing",) else "left")
    for i, c in enumerate(p.candidates, 1):
        w = c.workload
        table.add_row(str(i), str(w.zero), str(w.tp), str(w.dp), w.checkpointing, str(w.batch),
                      nbytes(c.device_bytes), f"{c.seconds_per_token * 1e9 / 3600:.1f}")
    out.print(table)
    out.print(f"precision {p.candidates[0].workload.precision}, MFU {p.mfu:.0%}; {RANKING}")
