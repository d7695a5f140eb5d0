"""Rendering of the RLHF memory reading (cost/rlhf.py) and of its verification (measure/rlhf.py)."""
from __future__ import annotations

from rich.table import Table

from layerwise.report.console import out
from layerwise.report.fmt import nbytes as human
from layerwise.report.memory import COMPONENTS, _err, _pct


def render_rlhf(report) -> None:
    where = "one device" if report.placement == "colocated" else "one device per model"
    stages = Table(title=f"{report.algorithm.upper()} step, {report.placement} ({where}): bytes by stage",
                   title_justify="left")
    stages.add_column("stage")
    for key in (*COMPONENTS, "total"):
        stages.add_column(key, justify="right")
    for st in report.stages:
        label = st.name if report.placement == "colocated" else f"{st.name} ({', '.join(st.models)})"
        stages.add_row(label, *(human(v) for v in st.components.as_dict().values()), human(st.total))
    out.print(stages)
    models = Table(title="each model's device, were it alone (its resident states + its own stages' work)",
                   title_justify="left")
    models.add_column("model")
    models.add_column("peak", justify="right")
    models.add_column("weights", justify="right")
    models.add_column("optimizer_states", justify="right")
    models.add_column("activations", justify="right")
    models.add_column("kv_cache", justify="right")
    for name, (peak, c) in report.models.items():
        models.add_row(name, human(peak), human(c.weights + c.master_weights), human(c.optimizer_states),
                       human(c.activations + c.temporaries + c.gradients), human(c.kv_cache))
    out.print(models)
    out.print(f"peak {report.peak_bytes:,} B ({human(report.peak_bytes)}) in {report.peak_stage}"
              + (" (per device)" if report.per_device else ""))
    for note in report.notes:
        out.print(f"note: {note}")


def verify_rlhf_json(analytic, measured) -> dict:
    """Both readings and the error of each row: the stages when colocated (one device), each
    model's device when separate."""
    a, m = analytic.to_json(), measured.to_json()
    key = "models" if analytic.placement == "separate" else "stages"
    rows = {}
    for name, mb in m[key].items():
        ab = a[key][name]["peak_bytes"]
        rows[name] = {"analytic": ab, "measured": mb["peak_bytes"], "error": _err(ab, mb["peak_bytes"])}
    return {"analytic": a, "measured": m, key: rows,
            "error": {"peak_bytes": _err(a["peak_bytes"], m["peak_bytes"])}}


def render_verify_rlhf(name: str, analytic, measured) -> None:
    data = verify_rlhf_json(analytic, measured)
    key = "models" if analytic.placement == "separate" else "stages"
    table = Table(title=f"{name}: {analytic.algorithm.upper()} step, {analytic.placement}, analytic vs measured "
                        f"(fake tensors)", title_justify="left")
    for col in (key[:-1], "analytic", "measured", "error", "error %"):
        table.add_column(col, justify="right" if col in ("analytic", "measured", "error", "error %") else "left")
    for stage, row in data[key].items():
        table.add_row(stage, f"{row['analytic']:,}", f"{row['measured']:,}", f"{row['error']['bytes']:+,}",
                      _pct(row["error"]))
    e = data["error"]["peak_bytes"]
    table.add_row("peak", f"{analytic.peak_bytes:,}", f"{measured.peak_bytes:,}", f"{e['bytes']:+,}", _pct(e))
    out.print(table)
