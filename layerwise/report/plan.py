"""Rendering of the planner's result."""
from __future__ import annotations

from rich.table import Table

from layerwise.plan.search import Plan
from layerwise.report.console import out
from layerwise.report.fmt import count, nbytes

RANKING = ("ranked by the step-time model's tokens/s (cost/step_time.py); fits = per-device peak of the fullest "
           "pipeline stage + estimated CUDA context and allocator cache <= GPU memory")


def _setup(c) -> dict:
    lay = c.layout
    return {"dp": lay.dp, "tp": lay.tp, "pp": lay.pp, "ep": lay.ep, "zero": lay.zero,
            "sequence_parallel": lay.sequence_parallel, "schedule": lay.schedule, "interleave": lay.interleave,
            "micro_batch": lay.micro_batch, "grad_accum": lay.grad_accum, "checkpointing": lay.checkpointing,
            "tokens_per_second": c.tokens_per_second, "step_seconds": c.step.step_seconds, "mfu": c.step.mfu,
            "per_device_bytes": c.per_device_bytes, "device_overhead_bytes": c.overhead_bytes}


def plan_json(p: Plan) -> dict:
    return {"model": p.model, "gpu": p.gpu.name, "gpus": p.n_gpus, "precision": p.precision,
            "global_batch": p.global_batch, "searched": p.searched, "fitting": p.fitting, "ranking": RANKING,
            "setups": [_setup(c) for c in p.candidates]}


def render_plan(p: Plan) -> None:
    if not p.candidates:
        out.print(f"{p.model}: nothing fits on {p.n_gpus} x {p.gpu.name} ({nbytes(p.gpu.memory_bytes)}) among "
                  f"{p.searched} layouts searched; more GPUs or a shorter --seq may")
        return
    table = Table(title=f"{p.model} on {p.n_gpus} x {p.gpu.name} ({nbytes(p.gpu.memory_bytes)} each), global batch "
                        f"{p.global_batch}", title_justify="left")
    for col in ("#", "DP", "TP", "SP", "PP", "schedule", "EP", "ZeRO", "ckpt", "micro x accum", "per device",
                "tokens/s", "MFU"):
        table.add_column(col, justify="left" if col in ("schedule", "ckpt") else "right")
    for i, c in enumerate(p.candidates, 1):
        lay = c.layout
        sched = "-" if lay.pp == 1 else lay.schedule + (f" x{lay.interleave}" if lay.interleave > 1 else "")
        table.add_row(str(i), str(lay.dp), str(lay.tp), "yes" if lay.sequence_parallel else "", str(lay.pp), sched,
                      str(lay.ep), str(lay.zero), lay.checkpointing, f"{lay.micro_batch} x {lay.grad_accum}",
                      nbytes(c.device_bytes), count(c.tokens_per_second), f"{c.step.mfu:.1%}")
    out.print(table)
    out.print(f"{p.precision}; {p.fitting} of {p.searched} layouts searched fit; {RANKING}")
