"""`layerwise flops MODEL [workload] [--tokens D] [--json]`: the analytic FLOPs reading."""
from __future__ import annotations

from typing import Optional

import typer

from layerwise.commands._module import MODULE_HELP
from layerwise.commands._moe import capacity_option, with_capacity
from layerwise.commands._workload import with_workload
from layerwise.workload import Workload


def flops_answer(spec, workload: Workload, *, tokens: float | None = None, capacity_factor: float | None = None):
    """(FlopReport, TrainingCompute or None): what `layerwise flops` computes (CLI and web API)."""
    spec = with_capacity(spec, capacity_factor)
    from layerwise.cost.flops import model_flops, training_compute
    from layerwise.spec.errors import WorkloadError

    if workload.reference != "layerwise":
        raise WorkloadError(f"--impl {workload.reference} does not apply to `layerwise flops` (it counts our "
                            f"build's FLOPs; `layerwise measure CONFIG.json --impl hf` counts transformers')")
    from layerwise.cost.parallel import check_split

    check_split(spec, workload.tp, workload.pp)
    report = model_flops(spec, workload)
    compute = None
    if tokens is not None:
        if tokens <= 0:
            raise WorkloadError(f"--tokens must be positive, got {tokens:g}")
        compute = training_compute(spec, workload, int(tokens))
    return report, compute


def register(app: typer.Typer) -> None:
    @app.command()
    @with_workload
    def flops(
        model: str = typer.Argument(..., help=f"preset name, spec file (.yaml/.yml/.json), HF config.json, {MODULE_HELP}"),
        input: Optional[str] = typer.Option(None, "--input", help="one sample's input shape (bare-block spec files, your own module)"),
        input_dtype: str = typer.Option("float", "--input-dtype", help="your own module: float|long (token ids)"),
        vocab: Optional[int] = typer.Option(None, "--vocab", help="your own module with --input-dtype long: token ids drawn below V"),
        tokens: Optional[float] = typer.Option(None, "--tokens", help="training token budget D: total compute vs 6·N·D"),
        max_level: int = typer.Option(2, "--max-level", help="deepest tree level shown in the table"),
        capacity_factor: Optional[float] = capacity_option(),
        json: bool = typer.Option(False, "--json", help="JSON output"),
        *,
        workload: Workload,
    ):
        """FLOPs of one step (train) or one forward (infer), per layer; 1 multiply-add = 2 FLOPs.

        MODEL may be your own nn.Module: FILE.py:factory or package.module:factory (importing it runs
        that code); its FLOPs are FlopCounterMode's, per submodule, under fake tensors."""
        from layerwise.commands import _module
        from layerwise.commands._model import resolve
        from layerwise.commands.summary import parse_shape
        from layerwise.report.console import print_json
        from layerwise.report.flops import flops_json, render_flops

        _module.check_flags(model)
        if _module.is_module_ref(model):
            _module_flops(model, input, input_dtype, vocab, tokens, max_level, json, workload)
            return
        report, compute = flops_answer(resolve(model, parse_shape(input) if input else None, workload.seq), workload, tokens=tokens,
                                       capacity_factor=capacity_factor)
        print_json(flops_json(report, compute)) if json else render_flops(report, compute, max_level)


# What a module's FLOP count depends on: the batch and whether a backward runs.
_MODULE_FLOPS_FLAGS = ("batch", "mode")


def _module_flops(model, input, input_dtype, vocab, tokens, max_level, json, workload: Workload) -> None:
    from layerwise.commands import _module
    from layerwise.commands._workload import WORKLOAD_OPTIONS
    from layerwise.measure.module_summary import module_flops
    from layerwise.report.console import print_json
    from layerwise.report.module_flops import module_flops_json, render_module_flops

    _module.refuse([n for n in WORKLOAD_OPTIONS if n not in _MODULE_FLOPS_FLAGS] + ["tokens"],
                   "does not change the FLOPs of your own module (only --batch and --mode do)")
    train = workload.mode == "train"

    def count(name, module, x):
        types = {path: type(m).__name__ for path, m in module.named_modules()}
        flops = module_flops(module, x, lambda m, i: m(i), _sum_loss, train)
        return name, tuple(x.shape), types, flops

    name, shape, types, flops = _module.read_fake(model, input, input_dtype, vocab, workload.batch, count)
    if json:
        print_json(module_flops_json(name, workload.mode, shape, types, flops))
    else:
        render_module_flops(name, workload.mode, shape, types, flops, max_level)


def _sum_loss(out):
    return (out[0] if isinstance(out, (tuple, list)) else out).float().sum()
