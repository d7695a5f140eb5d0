"""`plan --html`: the layouts that fit, best first, with their throughput and memory per device."""
from __future__ import annotations

from pathlib import Path

from layerwise.report import html
from layerwise.report.fmt import count, nbytes
from layerwise.report.plan import plan_json

COLUMNS = ("#", "DP", "TP", "SP", "PP", "schedule", "EP", "ZeRO", "checkpointing", "micro x accum",
           "per device + overhead", "tokens/s", "MFU")


def plan_sections(p) -> list[dict]:
    data = plan_json(p)
    rows = [[i, s["dp"], s["tp"], "yes" if s["sequence_parallel"] else "no", s["pp"],
             "-" if s["pp"] == 1 else s["schedule"], s["ep"], s["zero"], s["checkpointing"],
             f"{s['micro_batch']} x {s['grad_accum']}", nbytes(s["per_device_bytes"] + s["device_overhead_bytes"]),
             count(s["tokens_per_second"]), f"{100 * s['mfu']:.1f}%"] for i, s in enumerate(data["setups"], 1)]
    sections = [html.text(f"{data['precision']}, global batch {data['global_batch']:,}; {data['fitting']} of "
                          f"{data['searched']} layouts searched fit; {data['ranking']}.")]
    if not rows:
        return sections + [html.text(f"Nothing fits on {data['gpus']} x {data['gpu']}.")]
    labels = [f"#{r[0]} dp{r[1]} tp{r[2]} pp{r[4]} z{r[7]} {r[8]}" for r in rows]
    bars = {"type": "bar", "data": {"labels": labels, "datasets": [
        {"label": "tokens/s", "data": [s["tokens_per_second"] for s in data["setups"]], "backgroundColor": "#4e79a7",
         "xAxisID": "x"},
        {"label": "per device + overhead (bytes)", "data": [s["per_device_bytes"] + s["device_overhead_bytes"]
                                                            for s in data["setups"]],
         "backgroundColor": "#e15759", "xAxisID": "x2"}]},
        "options": {"indexAxis": "y", "scales": {"x": {"position": "bottom", "title": {"display": True,
                                                                                      "text": "tokens/s"}},
                                                 "x2": {"position": "top", "grid": {"drawOnChartArea": False},
                                                        "title": {"display": True, "text": "bytes per device"}}}}}
    return sections + [html.table(list(COLUMNS), rows, "Layouts that fit, best first", id="plan"),
                       html.chart("throughput", bars, "Throughput and memory per layout", bytes_axis="x2")]


def write_plan_html(p, path: Path) -> None:
    html.write(path, f"{p.model}: training layouts on {p.n_gpus} x {p.gpu.name}", plan_sections(p),
               f"{nbytes(p.gpu.memory_bytes)} per GPU")
