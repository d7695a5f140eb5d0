"""Rendering of the preset list."""
from __future__ import annotations

from rich.table import Table

from layerwise.report.console import out
from layerwise.report.fmt import count


def presets_json(rows) -> list[dict]:
    return [{"name": r.name, "family": r.family, "params": r.params, "source": r.source} for r in rows]


def render_presets(rows) -> None:
    table = Table(title="presets (layerwise summary NAME)", title_justify="left")
    table.add_column("name")
    table.add_column("family")
    table.add_column("params", justify="right")
    table.add_column("source", overflow="fold")
    for r in rows:
        table.add_row(r.name, r.family, count(r.params), r.source)
    out.print(table)
