"""HTML reports of the memory readings: `memory --html` (the breakdown, the verdict per GPU, the
components per phase and the step's timeline) and `verify --html` (both readings side by side,
their timelines overlaid)."""
from __future__ import annotations

from pathlib import Path

from layerwise.report import html
from layerwise.report.fmt import nbytes
from layerwise.report.memory import COMPONENTS, verdict_line, verify_json
from layerwise.report.timeline import compare_json, thinned


def _workload_line(workload) -> str:
    shown = [f"{k.replace('_', '-')} {v}" for k, v in workload.__dict__.items() if v not in (None, 0, 1, "none")]
    return "workload: " + ", ".join(shown)


def _components_table(comps: dict, total: int) -> dict:
    rows = [[k, f"{comps[k]:,}", nbytes(comps[k]), f"{100 * comps[k] / total:.1f}%" if total else "-"]
            for k in COMPONENTS if comps[k]]
    rows.append(["peak", f"{total:,}", nbytes(total), ""])
    return html.table(["component", "bytes", "", "share"], rows, "Peak memory by component", id="components")


def memory_sections(answer, workload) -> list[dict]:
    report = answer.report
    sections = [_components_table(report.components.as_dict(), report.peak_bytes),
                html.text(f"The peak is in {report.peak_phase} ({report.peak_where or '-'})"
                          + (", per device" if report.per_device else "") + ". Device overhead (CUDA context and "
                          f"allocator cache, an estimate, not in the peak): {nbytes(report.device_overhead_bytes)}.")]
    sections += [html.text(f"note: {n}") for n in report.notes]
    if answer.verdicts:
        sections.append(html.table(["GPU", "verdict"], [[v.gpu, verdict_line(v)] for v in answer.verdicts],
                                   "Will it fit (CUDA defaults; device overhead included)", id="verdicts"))
    if answer.timeline is not None:
        line = thinned(answer.timeline.to_json())
        sections.append({"kind": "phases", "id": "phases", "timeline": line, "heading": "Components per phase",
                         "caption": "each phase at its own peak"})
        sections.append({"kind": "timeline", "id": "timeline", "timeline": line, "heading": "Memory timeline of one step",
                         "caption": "live bytes by component after every op (▲ the peak)"})
    return sections


def write_memory_html(answer, workload, path: Path) -> None:
    html.write(path, f"{answer.report.model}: memory of one {'training step' if workload.mode == 'train' else 'inference'}",
               memory_sections(answer, workload), _workload_line(workload))


def write_verify_html(name: str, analytic, measured, lines, path: Path, workload=None) -> None:
    data = verify_json(analytic, measured)
    a, m = data["analytic"]["components"], data["measured"]["components"]
    rows = [[k, f"{a[k]:,}", f"{m[k]:,}", f"{a[k] - m[k]:+,}", _pct(data["error"][k]["relative"])]
            for k in COMPONENTS if a[k] or m[k]]
    rows.append(["peak", f"{analytic.peak_bytes:,}", f"{measured.peak_bytes:,}",
                 f"{analytic.peak_bytes - measured.peak_bytes:+,}", _pct(data["error"]["peak_bytes"]["relative"])])
    both = compare_json(*lines)
    bounds = [[k, f"{v['analytic']:,}", f"{v['measured']:,}", _pct(v["of_peak"])] for k, v in both["boundaries"].items()]
    sections = [
        html.table(["component", "analytic", "measured", "error (B)", "error"], rows,
                   f"At the peak (analytic: {analytic.peak_phase}; measured: {measured.peak_phase})", id="verify"),
        html.table(["phase boundary", "analytic", "measured", "difference / peak"], bounds,
                   "The two timelines at the phase boundaries", id="boundaries"),
        {"kind": "overlay", "id": "overlay", "lines": [thinned(both["analytic"]), thinned(both["measured"])],
         "heading": "Timelines overlaid", "caption": "analytic (solid, one moment per block step) and measured "
                                                     "(dashed, one per aten op), aligned at the phase boundaries"},
    ]
    html.write(path, f"{name}: analytic vs measured memory", sections,
               _workload_line(workload) if workload is not None else "")


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:+.2f}%"
