"""`layerwise summary`."""
from __future__ import annotations

from typing import Optional

import typer

from layerwise.commands._module import MODULE_HELP
from layerwise.commands._moe import capacity_option, with_capacity
from layerwise.spec.errors import LayerwiseError


def parse_shape(text: str) -> tuple[int, ...]:
    """'3x224x224', '3,224,224' or '128' -> (3, 224, 224); one sample, no batch dimension."""
    parts = text.replace(",", "x").lower().split("x")
    try:
        dims = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise LayerwiseError(f"--input {text!r}: expected sizes like 3x224x224 or 128") from None
    if not dims or any(d <= 0 for d in dims):
        raise LayerwiseError(f"--input {text!r}: sizes must be positive integers")
    return dims


def summary_answer(spec, *, batch: int = 1, capacity_factor: float | None = None):
    """What `layerwise summary` computes for a spec (the CLI and the web API)."""
    spec = with_capacity(spec, capacity_factor)
    from layerwise.cost.summary import summarize

    if batch <= 0:
        raise LayerwiseError(f"--batch must be a positive integer, got {batch}")
    return summarize(spec.name, spec.body, (batch, *spec.input.shape))


def register(app: typer.Typer) -> None:
    @app.command()
    def summary(
        model: str = typer.Argument(..., help=f"preset name, spec file (.yaml/.yml/.json), HF config.json, {MODULE_HELP}"),
        input: str = typer.Option(None, "--input", help="one sample's input shape, e.g. 3x224x224 or 128 (tokens)"),
        input_dtype: str = typer.Option("float", "--input-dtype", help="your own module: float|long (token ids)"),
        vocab: int = typer.Option(None, "--vocab", help="your own module with --input-dtype long: token ids drawn below V"),
        batch: int = typer.Option(1, "--batch", help="batch size"),
        max_level: int = typer.Option(3, "--max-level", help="deepest tree level shown in the table"),
        capacity_factor: Optional[float] = capacity_option(),
        json: bool = typer.Option(False, "--json", help="JSON output (all layers)"),
    ):
        """Per-layer table: output shapes, exact parameters, depth, and the split by layer type.

        MODEL may be your own nn.Module: FILE.py:factory or package.module:factory (importing it runs
        that code; it is built and run under fake tensors, so no memory is allocated)."""
        from layerwise.commands import _module
        from layerwise.commands._model import resolve
        from layerwise.report.console import print_json
        from layerwise.report.summary import render_summary, summary_json

        _module.check_flags(model)
        if _module.is_module_ref(model):
            from layerwise.measure.module_summary import summarize_module

            result = _module.read_fake(model, input, input_dtype, vocab, batch,
                                       lambda name, m, x: summarize_module(name, m, x, lambda mod, inp: mod(inp)))
            print_json(summary_json(result)) if json else render_summary(result, max_level)
            return
        result = summary_answer(resolve(model, parse_shape(input) if input else None), batch=batch,
                                capacity_factor=capacity_factor)
        print_json(summary_json(result)) if json else render_summary(result, max_level)
