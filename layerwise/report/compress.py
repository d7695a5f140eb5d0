"""Rendering of compression and export results: one table per step, value and ratio to the
original (file size, params, FLOPs, accuracy or perplexity, latency)."""
from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table

from layerwise.report.console import out


@dataclass(frozen=True)
class Row:
    name: str  # "original", "int8 static", "pruned 50% + ft", ...
    file_bytes: int
    params: int
    flops: int  # forward FLOPs (matmul class) for one sample
    metric: float  # accuracy in [0, 1] or perplexity
    latency_ms: float | None = None


def _ratio(v, base) -> str:
    return f"{v / base:.2f}x" if base else "-"


def render_table(title: str, rows: list[Row], metric: str = "accuracy") -> None:
    base = rows[0]
    t = Table(title=title)
    for col in ("model", "file", "ratio", "params", "ratio", "FLOPs", "ratio", metric, "delta", "latency ms", "ratio"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        m = f"{100 * r.metric:.2f}%" if metric == "accuracy" else f"{r.metric:.3f}"
        d = f"{100 * (r.metric - base.metric):+.2f} pt" if metric == "accuracy" else f"{r.metric - base.metric:+.3f}"
        lat = f"{r.latency_ms:.3f}" if r.latency_ms is not None else "-"
        lat_ratio = _ratio(r.latency_ms, base.latency_ms) if r.latency_ms and base.latency_ms else "-"
        t.add_row(r.name, f"{r.file_bytes:,}", _ratio(r.file_bytes, base.file_bytes), f"{r.params:,}",
                  _ratio(r.params, base.params), f"{r.flops:,}", _ratio(r.flops, base.flops), m, d, lat, lat_ratio)
    out.print(t)


def render_lines(lines: list[str]) -> None:
    for line in lines:
        out.print(line, highlight=False)
