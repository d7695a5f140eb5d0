"""Rendering of the FLOPs reading."""
from __future__ import annotations

from rich.table import Table

from layerwise.cost.flops import FlopReport, TrainingCompute
from layerwise.report.console import out
from layerwise.report.fmt import count, shape

CONVENTION = "1 multiply-add = 2 FLOPs; matmul FLOPs are what torch's FlopCounterMode counts, other FLOPs are estimates"


def flops_json(r: FlopReport, compute: TrainingCompute | None = None) -> dict:
    data = {
        "model": r.model,
        "mode": r.mode,
        "input_shape": list(r.input_shape),
        "forward": r.forward,
        "backward": r.backward,
        "total": r.total,
        "matmul_forward": r.flops.fwd_matmul,
        "matmul_backward": r.flops.bwd_matmul if r.mode == "train" else 0,
        "recompute": r.recompute.total,  # activation checkpointing's recompute, part of the backward
        "causal_skippable": r.flops.causal_skippable,
        "decode": r.decode.forward,
        "decode_per_token": r.decode_per_token,
        "new_tokens": r.new_tokens,
        "tokens": r.tokens,
        "per_token": r.total // r.tokens,
        "convention": CONVENTION,
        "per_layer": [{"path": row.path, "type": row.type, "forward": row.flops.forward,
                       "backward": row.flops.backward if r.mode == "train" else 0,
                       "matmul_forward": row.flops.fwd_matmul, "count": row.count} for row in r.rows],
    }
    if compute is not None:
        data["training_compute"] = {"tokens": compute.tokens, "flops": compute.flops, "six_nd": compute.six_nd,
                                    "ratio_to_6nd": compute.ratio_to_6nd, "params": compute.params}
    return data


def render_flops(r: FlopReport, compute: TrainingCompute | None, max_level: int) -> None:
    train = r.mode == "train"
    table = Table(title=f"{r.model}: {'training step' if train else 'forward'} on {shape(r.input_shape)}",
                  title_justify="left")
    for col in ("layer (path)", "type", "forward", "matmul fwd") + (("backward",) if train else ()):
        table.add_column(col, justify="left" if col in ("layer (path)", "type") else "right")
    for row in r.rows:
        if row.level > max_level:
            continue
        name = "  " * (row.level - 1) + row.path.rsplit(".", 1)[-1] if row.level > 1 else row.path
        kind = f"{row.type} x{row.count}" if row.count > 1 else row.type
        cells = [name, kind, count(row.flops.forward), count(row.flops.fwd_matmul)]
        table.add_row(*cells, *((count(row.flops.backward),) if train else ()))
    out.print(table)
    out.print(f"forward {count(r.forward)} ({r.forward:,}); matmul {count(r.flops.fwd_matmul)}"
              + (f"; backward {count(r.backward)}" + (f" incl. recompute {count(r.recompute.total)}" if r.recompute.total else "")
                 if train else ""))
    out.print(f"total {count(r.total)} FLOPs, {count(r.total / r.tokens)} per {'token' if len(r.input_shape) == 2 else 'sample'}")
    if train and r.recompute.total:
        out.print(f"note: activation checkpointing adds {count(r.recompute.total)} FLOPs of recompute to the backward "
                  f"(the checkpointed blocks' forward again; PyTorch's checkpoint stops at the last saved tensor, so a "
                  f"pre-norm block's final down projection is not recomputed, and this count leaves it out)")
    if r.new_tokens:
        out.print(f"decode: {r.new_tokens} tokens with a KV cache, {count(r.decode.forward)} FLOPs "
                  f"({count(r.decode_per_token)} per token, on average over the growing cache)")
    if r.flops.causal_skippable:
        out.print(f"causal attention: {count(r.flops.causal_skippable)} of the forward matmul FLOPs fall in the masked "
                  f"half (kernels compute them; a causal-aware count would not)")
    if compute is not None:
        out.print(f"training compute for {compute.tokens:.3g} tokens: {compute.flops:.3e} FLOPs; 6·N·D = "
                  f"{compute.six_nd:.3e} ({compute.ratio_to_6nd:.3f}x): the difference is attention's s² terms, "
                  f"the loss, and embedding lookups that cost no matmul")
    out.print(f"({CONVENTION})")
