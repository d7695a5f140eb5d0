"""Rendering of `layerwise memory MODEL --explain` (cost/explain.py): the textbook terms, layerwise's
components, and each difference named and sized."""
from __future__ import annotations

from layerwise.report.fmt import nbytes as human


def _table(title: str, rows, *, signed: bool = False, total: int | None = None):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("term")
    table.add_column("bytes", justify="right")
    table.add_column("", justify="right")
    table.add_column("what it counts / why it differs")
    for r in rows:
        text = f"{r.bytes:+,}" if signed and r.name not in ("textbook set-up", "this workload") else f"{r.bytes:,}"
        size = human(abs(r.bytes))
        table.add_row(r.name, text, ("-" if r.bytes < 0 else "") + size, r.note)
    return table


def render_explain(ex, workload) -> None:
    from layerwise.report.console import out

    n = ex.trainable_params
    out.print(f"[bold]{ex.model}[/]: the formulas people quote, next to layerwise "
              f"(batch {workload.batch}, {workload.precision}, {workload.optimizer}, {workload.attention}, "
              f"device {workload.device})")
    out.print(_table(f"Model states: textbook, for {n:,} trainable parameters", ex.textbook_states))
    out.print(_table("Model states: layerwise (per device) and what differs", (*ex.states[:5], *ex.state_notes[1:])))
    out.print(f"{ex.state_notes[0].name}: {ex.state_notes[0].note}")
    if ex.korthikanti:
        out.print(_table("Activations: Korthikanti et al. 2022 Table 2 (fp16, 1-byte masks, eager attention with "
                         "dropout, no parallelism)", ex.korthikanti))
        for note in ex.korthikanti_notes:
            out.print(f"note: {note}")
        formula = ex.korthikanti[-1].bytes
        textbook = ex.textbook_activations[0].bytes
        out.print(f"layerwise under the same assumptions: {human(textbook)} ({_pct(textbook, formula)} of the formula)")
    else:
        out.print(f"Activations: {'; '.join(ex.korthikanti_notes)}")
    out.print(_table("Activations: layerwise under the textbook assumptions", ex.textbook_activations))
    out.print(_table("From the textbook set-up to this workload (saved activations at the start of backward; "
                     "each step changes one setting)", ex.steps, signed=True))
    first, last = ex.steps[0].bytes, ex.steps[-1].bytes
    out.print(f"this workload: {human(last)} of activations, {_pct(last, first)} against the textbook set-up "
              f"({human(first)}); its peak is in the {ex.peak_phase} phase")


def _pct(a: int, b: int) -> str:
    return f"{100 * (a - b) / b:+.1f}%" if b else "-"
