"""`layerwise report RUN_DIR --html FILE`: a training run's self-contained HTML report."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from layerwise.spec.errors import LayerwiseError


def read_run(run_dir: Path) -> tuple[dict, list[dict], list[tuple[str, int]], int | None]:
    """(result.json, metrics.jsonl rows, compressed files with their sizes, the best (else last)
    checkpoint's model.safetensors size) of a run directory (docs/RUNS.md)."""
    if not (run_dir / "metrics.jsonl").is_file():
        raise LayerwiseError(f"{run_dir}: not a training run (no metrics.jsonl; `layerwise train --out DIR` writes one)")
    rows = []
    for i, line in enumerate((run_dir / "metrics.jsonl").read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise LayerwiseError(f"{run_dir / 'metrics.jsonl'}:{i}: invalid JSON: {err.msg}") from None
    result_path = run_dir / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {"status": "unfinished"}
    compressed = sorted((p.name, p.stat().st_size) for p in (run_dir / "compressed").glob("*")
                        if p.is_file()) if (run_dir / "compressed").is_dir() else []
    original = next((p.stat().st_size for p in (run_dir / "checkpoints" / "best" / "model.safetensors",
                                                 run_dir / "checkpoints" / "last" / "model.safetensors")
                     if p.is_file()), None)
    return result, rows, compressed, original


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        run_dir: Path = typer.Argument(..., help="a run directory written by `layerwise train --out`"),
        html: Path = typer.Option(..., "--html", help="the HTML file to write (self-contained)"),
    ):
        """A training run's report: loss and metric curves, throughput, predicted vs measured memory,
        compression results."""
        from layerwise.report.console import out
        from layerwise.report.html_run import write_run_html

        result, rows, compressed, original = read_run(run_dir)
        write_run_html(run_dir, result, rows, compressed, original, html)
        out.print(f"wrote {html}", highlight=False)
