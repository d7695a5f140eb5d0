"""Rendering of the memory timeline (cost/timeline.py): the JSON file, a terminal sparkline, and
the thinned series the charts draw."""
from __future__ import annotations

import json
from pathlib import Path

from layerwise.report.fmt import nbytes as human
from layerwise.spec.errors import LayerwiseError

SPARK = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 60
CHART_POINTS = 1500  # a chart draws at most this many moments (each bucket keeps its highest)


def write_json(data: dict, path: Path) -> None:
    try:
        Path(path).write_text(json.dumps(data) + "\n")
    except OSError as exc:
        raise LayerwiseError(f"--timeline {path}: cannot write ({exc.strerror or exc})") from None


def sparkline(totals: list[int], width: int = SPARK_WIDTH) -> str:
    """One character per bucket of moments, its height the bucket's highest total, scaled from the
    step's lowest moment to its peak (the model states under it would flatten the shape)."""
    if not totals:
        return ""
    lo, span = min(totals), max(totals) - min(totals) + 1
    return "".join(SPARK[(max(totals[a:b]) - lo) * len(SPARK) // span] for a, b in _buckets(len(totals), width))


def _buckets(n: int, width: int) -> list[tuple[int, int]]:
    width = min(width, n)
    return [(i * n // width, (i + 1) * n // width) for i in range(width)]


def render_sparkline(timeline, label: str = "") -> None:
    from layerwise.report.console import out

    totals = timeline.totals
    i = timeline.peak_index
    out.print(f"timeline{label} ({len(totals)} moments, {human(min(totals))} to {human(totals[i])}): "
              f"{sparkline(totals)} peak at {timeline.phase[i]} {timeline.path[i] or timeline.op[i]}", highlight=False)


def thinned(data: dict, limit: int = CHART_POINTS) -> dict:
    """A timeline's JSON with at most `limit` moments: each bucket keeps its highest moment, and
    the peak and the boundaries are always kept (charts of 100k-op measured steps stay light)."""
    n = len(data["total"])
    if n <= limit:
        return data
    keep = {data["peak"]["index"], *(b["index"] for b in data["boundaries"].values())}
    for a, b in _buckets(n, limit):
        keep.add(max(range(a, b), key=data["total"].__getitem__))
    idx = sorted(keep)
    pick = lambda col: [col[i] for i in idx]  # noqa: E731
    out = dict(data, phase=pick(data["phase"]), op=pick(data["op"]), path=pick(data["path"]), total=pick(data["total"]),
               series={c: pick(v) for c, v in data["series"].items()})
    out["peak"] = dict(data["peak"], index=idx.index(data["peak"]["index"]))
    out["boundaries"] = {k: dict(v, index=idx.index(v["index"])) for k, v in data["boundaries"].items()}
    return out


def compare_json(analytic, measured) -> dict:
    """Both timelines and, at each phase boundary, the difference relative to the measured peak."""
    peak = measured.total(measured.peak_index)
    a, m = analytic.boundary_totals(), measured.boundary_totals()
    return {"analytic": analytic.to_json(), "measured": measured.to_json(),
            "boundaries": {k: {"analytic": a[k], "measured": m[k], "of_peak": (a[k] - m[k]) / peak if peak else None}
                           for k in a if k in m}}


def render_boundaries(analytic, measured) -> None:
    from layerwise.report.console import out

    parts = [f"{k} {100 * v['of_peak']:+.2f}%" for k, v in compare_json(analytic, measured)["boundaries"].items()
             if v["of_peak"] is not None]
    out.print("timelines at the phase boundaries (analytic - measured, of the peak): " + ", ".join(parts),
              highlight=False)
