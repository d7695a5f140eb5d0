"""`layerwise plan MODEL --gpu NAME [--gpus N] [--seq S] [--global-batch B] [--top K] [--json]`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def plan_answer(spec, *, gpu: str, gpus: int, seq: int | None, global_batch: int | None, optimizer: str, top: int):
    """What `layerwise plan` computes (the CLI and the web API)."""
    from layerwise.cost.hardware import get_gpu
    from layerwise.plan import plan as search

    return search(spec, get_gpu(gpu), n_gpus=gpus, seq=seq, global_batch=global_batch, optimizer=optimizer, top=top)


def register(app: typer.Typer) -> None:
    @app.command()
    def plan(
        model: str = typer.Argument(..., help="preset name, spec file (.yaml/.yml/.json) or HF config.json"),
        gpu: str = typer.Option(..., "--gpu", help="GPU type, e.g. a100-80gb, h100-sxm, rtx-4090"),
        gpus: int = typer.Option(1, "--gpus", help="number of GPUs"),
        seq: Optional[int] = typer.Option(None, "--seq", help="tokens per sequence (default: the model's)"),
        global_batch: Optional[int] = typer.Option(None, "--global-batch", help="samples per step (default: ~4M tokens of sequences; 256 for a model without tokens)"),
        optimizer: str = typer.Option("adamw", "--optimizer", help="optimizer whose state must fit"),
        top: int = typer.Option(10, "--top", help="how many layouts to show"),
        html: Optional[Path] = typer.Option(None, "--html", help="write a self-contained HTML report"),
        json: bool = typer.Option(False, "--json", help="JSON output"),
    ):
        """Training layouts (DP, TP, PP, EP, ZeRO, SP, checkpointing, micro-batch) that fit, fastest first."""
        from layerwise.commands._model import resolve
        from layerwise.report.console import print_json
        from layerwise.report.plan import plan_json, render_plan

        result = plan_answer(resolve(model), gpu=gpu, gpus=gpus, seq=seq, global_batch=global_batch,
                             optimizer=optimizer, top=top)
        if html is not None:
            from layerwise.report.html_plan import write_plan_html

            write_plan_html(result, html)
        print_json(plan_json(result)) if json else render_plan(result)
