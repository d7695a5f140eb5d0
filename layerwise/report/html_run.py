"""`layerwise report RUN_DIR --html FILE`: a training run on one page: loss and metric curves,
throughput, the predicted against the measured peak memory of a step, and the compressed files
if `layerwise compress` wrote any. The run's files are read by commands/report.py."""
from __future__ import annotations

from pathlib import Path

from layerwise.report import html
from layerwise.report.fmt import nbytes

METRICS = ("accuracy", "perplexity")


def _curve(rows: list[dict], kind: str, key: str) -> list[tuple[float, float]]:
    return [(r["step"], r[key]) for r in rows if r.get("kind") == kind and r.get(key) is not None]


def _summary(result: dict) -> dict:
    rows = [["status", result.get("status", "-")], ["optimizer steps", result.get("steps", "-")],
            ["epochs", result.get("epoch", "-")], ["training time", f"{result.get('train_seconds', 0):.1f} s"],
            ["throughput", f"{result.get('samples_per_s', 0):,.0f} samples/s"],
            ["trainable parameters", f"{result.get('trainable_params', 0):,}"]]
    for split in ("val", "test"):
        ev = result.get(split) or {}
        for key in ("loss", *METRICS):
            if ev.get(key) is not None:
                rows.append([f"{split} {key}", f"{ev[key]:.4f}"])
    return html.table(["", ""], rows, "Result", id="result")


def _memory(result: dict) -> list[dict]:
    pred, meas = result.get("predicted_peak_bytes"), result.get("measured_peak_bytes")
    if pred is None or meas is None:
        return [html.text("The run recorded no memory peaks.", "Peak memory of a step")]
    error = f"{100 * (pred - meas) / meas:+.2f}%" if meas else "-"
    bars = {"type": "bar", "data": {"labels": ["predicted (cost reading)", "measured (tracker, during training)"],
                                    "datasets": [{"label": "peak bytes", "data": [pred, meas],
                                                  "backgroundColor": ["#4e79a7", "#59a14f"]}]},
            "options": {"plugins": {"legend": {"display": False}}}}
    return [html.table(["", "bytes", "", "error"], [["predicted", f"{pred:,}", nbytes(pred), error],
                                                    ["measured", f"{meas:,}", nbytes(meas), ""]],
                       "Peak memory of a step: predicted vs measured", id="memory"),
            html.chart("memory-chart", bars, bytes_axis="y")]


def _compressed(files: list[tuple[str, int]], original: int | None) -> list[dict]:
    if not files:
        return []
    rows = [[name, f"{size:,}", nbytes(size), f"{original / size:.2f}x" if original and size else "-"]
            for name, size in files]
    return [html.table(["file", "bytes", "", "smaller than the checkpoint"], rows,
                       "Compressed files (RUN_DIR/compressed)", id="compressed"),
            html.text(f"checkpoint model.safetensors: {original:,} bytes" if original else
                      "no checkpoint model.safetensors to compare with")]


def run_sections(name: str, result: dict, metrics: list[dict], compressed: list[tuple[str, int]],
                 original: int | None) -> list[dict]:
    sections = [_summary(result)]
    losses = {f"{kind} loss": _curve(metrics, kind, "loss") for kind in ("train", "val", "test")}
    sections.append(html.line_chart("loss", {k: v for k, v in losses.items() if v}, "optimizer step", "Loss"))
    for key in METRICS:
        curves = {f"{kind} {key}": _curve(metrics, kind, key) for kind in ("train", "val", "test")}
        if any(curves.values()):
            sections.append(html.line_chart(key, {k: v for k, v in curves.items() if v}, "optimizer step",
                                            key.capitalize()))
    speed = _curve(metrics, "train", "samples_per_s")
    if speed:
        sections.append(html.line_chart("throughput", {"samples/s": speed}, "optimizer step", "Throughput"))
    return sections + _memory(result) + _compressed(compressed, original)


def write_run_html(run_dir: Path, result: dict, metrics: list[dict], compressed, original, path: Path) -> None:
    name = Path(run_dir).name
    html.write(path, f"training run {name}", run_sections(name, result, metrics, compressed, original),
               f"{run_dir}")
