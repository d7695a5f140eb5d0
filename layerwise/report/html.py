"""Self-contained HTML reports: one file with the data as JSON and every script inlined (Chart.js,
the shared charts of the page, the report renderer), so it opens with no network and can be sent to
a colleague. The section builders here are data; layerwise/serve/static/report.js draws them.

Sections: {"kind": "text", "text"}, {"kind": "table", "columns", "rows"}, {"kind": "chart",
"config": a Chart.js config, "bytes_axis": axis id or None}, {"kind": "phases" | "timeline",
"timeline": timeline JSON}, {"kind": "overlay", "lines": [analytic, measured]}; each may carry a
"heading" and a "caption".
"""
from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path

from layerwise.spec.errors import LayerwiseError

STYLE = """
body { margin: 0 auto; max-width: 1100px; padding: 12px 24px 40px; color: #1d2330;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
h1 { font-size: 22px; margin: 8px 0 2px; } h2 { font-size: 16px; margin: 22px 0 6px; }
.sub { color: #5b6577; margin: 0 0 10px; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0; }
th, td { border-bottom: 1px solid #d9dee7; padding: 3px 10px; text-align: right; white-space: nowrap; }
th.text, td.text { text-align: left; }
figure { margin: 8px 0; border: 1px solid #d9dee7; border-radius: 6px; padding: 8px; }
figcaption { font-size: 12px; color: #5b6577; margin-bottom: 4px; }
.box { position: relative; height: 320px; }
"""


def _asset(name: str) -> str:
    return resources.files("layerwise.serve").joinpath("static", name).read_text(encoding="utf-8")


def _script(code: str) -> str:
    return "<script>" + code.replace("</script", "<\\/script") + "</script>"


def render(title: str, sections: list[dict], subtitle: str = "") -> str:
    data = json.dumps({"title": title, "subtitle": subtitle, "sections": sections})
    data = data.replace("</", "<\\/")  # no "</script>" inside the JSON block
    return "\n".join([
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>", '<link rel="icon" href="data:,">', f"<style>{STYLE}</style>",
        "<!-- Chart.js 4.6.1, MIT licence (c) Chart.js Contributors: https://www.chartjs.org -->",
        _script(_asset("chart.umd.min.js")), _script(_asset("charts.js")), "</head><body>",
        '<div id="report"></div>', f'<script type="application/json" id="report-data">{data}</script>',
        _script(_asset("report.js")), "</body></html>", ""])


def write(path: Path, title: str, sections: list[dict], subtitle: str = "") -> None:
    try:
        Path(path).write_text(render(title, sections, subtitle), encoding="utf-8")
    except OSError as exc:
        raise LayerwiseError(f"--html {path}: cannot write ({exc.strerror or exc})") from None


# ---- section builders -------------------------------------------------------------------------
def text(body: str, heading: str | None = None) -> dict:
    return {"kind": "text", "text": body, **({"heading": heading} if heading else {})}


def table(columns: list[str], rows: list[list], heading: str | None = None, id: str = "") -> dict:  # noqa: A002
    return {"kind": "table", "columns": columns, "rows": [[str(v) for v in r] for r in rows], "id": id,
            **({"heading": heading} if heading else {})}


def chart(id: str, config: dict, heading: str | None = None, caption: str = "",  # noqa: A002
          bytes_axis: str | None = None) -> dict:
    return {"kind": "chart", "id": id, "config": config, "bytes_axis": bytes_axis, "caption": caption,
            **({"heading": heading} if heading else {})}


def line_chart(id: str, series: dict[str, list[tuple[float, float]]], x_title: str, heading: str | None = None,  # noqa: A002
               caption: str = "", bytes_axis: bool = False) -> dict:
    """One line per name, each a list of (x, y) points."""
    palette = ("#4e79a7", "#e15759", "#59a14f", "#edc948", "#b07aa1", "#76b7b2", "#9c755f")
    datasets = [{"label": name, "data": [{"x": x, "y": y} for x, y in points], "borderColor": palette[i % 7],
                 "backgroundColor": palette[i % 7], "pointRadius": 2, "borderWidth": 1.5}
                for i, (name, points) in enumerate(series.items())]
    config = {"type": "line", "data": {"datasets": datasets},
              "options": {"scales": {"x": {"type": "linear", "title": {"display": True, "text": x_title}}}}}
    return chart(id, config, heading, caption, "y" if bytes_axis else None)
