"""`layerwise time`: training time of a model on a GPU type, from the spec's FLOPs."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def time(
        model: str = typer.Argument(..., help="preset name, spec file (.yaml/.yml/.json) or HF config.json"),
        gpu: str = typer.Option(..., "--gpu", help="GPU type, e.g. a100-80gb, h100-sxm, rtx-4090"),
        gpus: int = typer.Option(1, "--gpus", help="number of GPUs"),
        tokens: float = typer.Option(None, "--tokens", help="token budget D, e.g. 300e9 (default: 20 x params)"),
        samples: float = typer.Option(None, "--samples", help="sample budget for non-token models"),
        mfu: float = typer.Option(0.4, "--mfu", help="model FLOPs utilisation, 0-1"),
        dtype: str = typer.Option(None, "--dtype", help="peak to use: bf16, fp16, tf32, fp32, fp8 (default bf16)"),
        seq: int = typer.Option(None, "--seq", help="tokens per sequence (default: the model's)"),
        json: bool = typer.Option(False, "--json", help="JSON output"),
    ):
        """Training time = FLOPs / (GPUs x peak x MFU); also shows the 6ND convention."""
        from layerwise.commands._model import resolve
        from layerwise.cost.hardware import get_gpu
        from layerwise.cost.time import estimate_model_time
        from layerwise.report.console import print_json
        from layerwise.report.time import render_time, time_json

        est = estimate_model_time(resolve(model), get_gpu(gpu), n_gpus=gpus, mfu=mfu, dtype=dtype, seq=seq,
                                  tokens=_count("--tokens", tokens), samples=_count("--samples", samples))
        print_json(time_json(est)) if json else render_time(est)


def _count(flag: str, value: float | None) -> int | None:
    """'3e11' arrives as a float: keep it an exact integer, refuse fractions."""
    from layerwise.spec.errors import LayerwiseError

    if value is None:
        return None
    if value != int(value) or value < 1:
        raise LayerwiseError(f"{flag} must be a positive whole number, got {value}")
    return int(value)
