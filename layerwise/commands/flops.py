"""`layerwise flops MODEL [workload] [--tokens D] [--json]`: the analytic FLOPs reading."""
from __future__ import annotations

from typing import Optional

import typer

from layerwise.commands._workload import with_workload
from layerwise.workload import Workload


def register(app: typer.Typer) -> None:
    @app.command()
    @with_workload
    def flops(
        model: str = typer.Argument(..., help="preset name, spec file (.yaml/.yml/.json) or HF config.json"),
        input: Optional[str] = typer.Option(None, "--input", help="one sample's input shape (bare-block spec files)"),
        tokens: Optional[float] = typer.Option(None, "--tokens", help="training token budget D: total compute vs 6·N·D"),
        max_level: int = typer.Option(2, "--max-level", help="deepest tree level shown in the table"),
        json: bool = typer.Option(False, "--json", help="JSON output"),
        *,
        workload: Workload,
    ):
        """FLOPs of one step (train) or one forward (infer), per layer; 1 multiply-add = 2 FLOPs."""
        from layerwise.commands._model import resolve
        from layerwise.commands.summary import parse_shape
        from layerwise.cost.flops import model_flops, training_compute
        from layerwise.report.console import print_json
        from layerwise.report.flops import flops_json, render_flops
        from layerwise.spec.errors import WorkloadError

        if workload.reference != "layerwise":
            raise WorkloadError(f"--impl {workload.reference} does not apply to `layerwise flops` (it counts our "
                                f"build's FLOPs; `layerwise measure CONFIG.json --impl hf` counts transformers')")
        spec = resolve(model, parse_shape(input) if input else None)
        report = model_flops(spec, workload)
        compute = None
        if tokens is not None:
            if tokens <= 0:
                raise WorkloadError(f"--tokens must be positive, got {tokens:g}")
            compute = training_compute(spec, workload, int(tokens))
        print_json(flops_json(report, compute)) if json else render_flops(report, compute, max_level)
