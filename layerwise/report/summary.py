"""Rendering of the summary reading: a per-layer table, totals, depth and the by-type split."""
from __future__ import annotations

from rich.table import Table

from layerwise.cost.summary import DEPTH_DEFINITION, Summary
from layerwise.report.console import out
from layerwise.report.fmt import count, shape


def summary_json(s: Summary) -> dict:
    return {
        "model": s.model,
        "input_shape": list(s.input_shape),
        "output_shape": list(s.output_shape),
        "params": {"total": s.params.total, "trainable": s.params.trainable, "frozen": s.params.frozen,
                   "active_per_token": s.active_params.total},
        "active_params": s.active_params.total,
        "buffers": s.params.buffers,
        "depth": s.depth,
        "depth_definition": DEPTH_DEFINITION,
        "layers": [{"path": r.path, "type": r.type, "output_shape": list(r.output_shape), "params": r.params,
                    "trainable": r.trainable, "count": r.count} for r in s.layers],
        "by_type": dict(s.by_type),
        "moe": [dict(m) for m in s.moe],
    }


def render_summary(s: Summary, max_level: int = 3) -> None:
    table = Table(title=f"{s.model}: input {shape(s.input_shape)} -> output {shape(s.output_shape)}",
                  title_justify="left")
    table.add_column("layer (path)")
    table.add_column("type")
    table.add_column("output shape", justify="right")
    table.add_column("params", justify="right")
    table.add_column("trainable", justify="right")
    hidden = 0
    for r in s.layers:
        if r.level > max_level:
            hidden += 1
            continue
        kind = f"{r.type} x{r.count}" if r.count > 1 else r.type
        table.add_row("  " * (r.level - 1) + r.path.rsplit(".", 1)[-1] if r.level > 1 else r.path, kind,
                      shape(r.output_shape), count(r.params), count(r.trainable))
    out.print(table)
    if hidden:
        out.print(f"({hidden} deeper rows hidden; --max-level N shows more, --json shows all)")
    p = s.params
    out.print(f"params: {count(p.total)} total ({p.total:,}), {count(p.trainable)} trainable, {count(p.frozen)} frozen; "
              f"buffers {p.buffers:,}")
    if s.active_params.total != p.total:
        out.print(f"active params per token: {count(s.active_params.total)} ({s.active_params.total:,}) "
                  f"of {count(p.total)} total")
    for m in s.moe:
        cap = f"capacity factor {m['capacity_factor']:g}" if m["capacity_factor"] else "dropless"
        combos = f"{m['combinations']:,}" if m["combinations"] is not None else f"C({m['n_experts']}, {m['top_k']})"
        out.print(f"experts ({m['path']}): top {m['top_k']} of {m['n_experts']} = {combos} expert "
                  f"combinations per token; {cap}")
    out.print(f"depth: {s.depth}  ({DEPTH_DEFINITION})")
    by_type = Table(title="parameters by layer type", title_justify="left")
    by_type.add_column("type")
    by_type.add_column("params", justify="right")
    by_type.add_column("share", justify="right")
    for name, n in s.by_type.items():
        by_type.add_row(name, f"{n:,}", f"{100 * n / p.total:.1f}%" if p.total else "-")
    out.print(by_type)
