"""`layerwise diagnose`: the per-layer table with a log-scale bar of the activation std (the chart in
the terminal), the flags, and the same as an HTML report section (a table per variant, and charts
of activation std and gradient norm by layer, one line per variant)."""
from __future__ import annotations

import math
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from layerwise.report import html
from layerwise.report.console import out

BAR = 24  # characters of the widest bar


def _label(d) -> str:
    return f"init {d.init}, norm {d.norm_position}"


def _num(v, fmt: str = ".3g") -> str:
    return "-" if v is None else format(v, fmt)


def _frac(v) -> str:
    return "-" if v is None else f"{v:.0%}"


def _log_range(results) -> tuple[float, float]:
    stds = [s.act_std for d in results for s in d.layers if s.act_std > 0 and math.isfinite(s.act_std)]
    if not stds:
        return 0.0, 1.0
    lo, hi = math.log10(min(stds)), math.log10(max(stds))
    return lo, max(hi, lo + 1e-9)


def _bar(std: float, lo: float, hi: float) -> str:
    if not (std > 0 and math.isfinite(std)):
        return ""
    n = 1 + round((math.log10(std) - lo) / (hi - lo) * (BAR - 1))
    return "█" * n


def diagnose_table(name: str, results) -> None:
    lo, hi = _log_range(results)
    for d in results:
        t = Table(title=f"{escape(name)}: {escape(_label(d))}; input std {d.input_std:.3g}, loss {d.loss:.4g}",
                  title_justify="left")
        for col in ("layer", "type", "act mean", "act std", "grad norm", "dead", "saturated"):
            t.add_column(col, justify="left" if col in ("layer", "type") else "right")
        t.add_column(f"act std (log, 10^{lo:.1f} .. 10^{hi:.1f})", justify="left")
        flagged = {f["path"] for f in d.flags}
        for s in d.layers:
            path = f"[red]{escape(s.path)}[/]" if s.path in flagged else escape(s.path)
            t.add_row(path, s.type, _num(s.act_mean), _num(s.act_std), _num(s.grad_norm), _frac(s.dead_frac),
                      _frac(s.saturated_frac), _bar(s.act_std, lo, hi))
        out.print(t)
        if d.flags:
            for f in d.flags:
                out.print(f"[red]flag[/] {escape(f['path'])}: {f['kind']}: {escape(f['message'])}", highlight=False)
        else:
            out.print("no layer flagged (activation std within 1/100..100x the input's, gradients within 100x of "
                      "the median layer's, dead ReLUs and saturation at most 50%)", highlight=False)
    if len(results) > 1:
        _side_by_side(results)


def _side_by_side(results) -> None:
    """The last layer's activation std and the first/last parameter-gradient norms per variant."""
    t = Table(title="variants side by side", title_justify="left")
    for col in ("variant", "last act std", "first grad norm", "last grad norm", "flags"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for d in results:
        grads = [s.grad_norm for s in d.layers if s.grad_norm is not None]
        t.add_row(escape(_label(d)), _num(d.layers[-1].act_std if d.layers else None),
                  _num(grads[0] if grads else None), _num(grads[-1] if grads else None), str(len(d.flags)))
    out.print(t)


# ---- HTML ------------------------------------------------------------------------------------------
def diagnose_sections(results) -> list[dict]:
    stds = {_label(d): [(i, s.act_std) for i, s in enumerate(d.layers) if s.act_std > 0] for d in results}
    grads = {_label(d): [(i, s.grad_norm) for i, s in enumerate(d.layers) if s.grad_norm] for d in results}
    sections = [_log_chart("act-std", stds, "Activation std by layer"),
                _log_chart("grad-norm", grads, "Parameter-gradient norm by layer")]
    for k, d in enumerate(results):
        rows = [[s.path, s.type, _num(s.act_mean), _num(s.act_std), _num(s.grad_norm), _frac(s.dead_frac),
                 _frac(s.saturated_frac)] for s in d.layers]
        sections.append(html.table(["layer", "type", "act mean", "act std", "grad norm", "dead", "saturated"], rows,
                                   f"Layers: {_label(d)}", id=f"layers-{k}"))
        flags = "; ".join(f"{f['path']}: {f['message']}" for f in d.flags) or "no layer flagged"
        sections.append(html.text(flags, f"Flags: {_label(d)}"))
    return sections


def _log_chart(id: str, series: dict, heading: str) -> dict:  # noqa: A002
    section = html.line_chart(id, series, "layer (forward order)", heading,
                              caption="log scale; one line per variant")
    section["config"]["options"]["scales"]["y"] = {"type": "logarithmic"}
    return section


def write_diagnose_html(name: str, results, path: Path) -> None:
    html.write(path, f"diagnose {name}", diagnose_sections(results), "one forward and backward at initialisation")
    out.print(f"wrote {path}", highlight=False)
