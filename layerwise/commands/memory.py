"""`layerwise memory MODEL [workload] [--fit GB] [--json]` (the cost reading: pure Python, no torch)
and `layerwise verify MODEL [workload] [--json]` (the cost reading next to the measure reading)."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import typer

from layerwise.commands._workload import with_workload
from layerwise.spec.errors import LayerwiseError, WorkloadError
from layerwise.workload import Workload

GB = 10**9
MAX_BATCH = 1 << 20  # the --fit search stops here


def analytic(spec, workload: Workload):
    """The memory report of `spec` under `workload` (training or inference by --mode)."""
    from layerwise.cost.memory import inference_memory, training_memory

    if workload.reference != "layerwise":
        raise WorkloadError(f"--impl {workload.reference}: the cost reading of transformers' code is not "
                            f"available yet; `layerwise measure CONFIG.json --impl hf` measures it")
    return training_memory(spec, workload) if workload.mode == "train" else inference_memory(spec, workload)


def fit_batch(spec, workload: Workload, budget_bytes: int) -> dict:
    """Does the peak fit `budget_bytes`, and the largest micro-batch that does (doubling, then
    bisection: the peak grows with the batch)."""
    def peak(batch: int) -> int:
        return analytic(spec, replace(workload, batch=batch)).peak_bytes

    fits = peak(workload.batch) <= budget_bytes
    if peak(1) > budget_bytes:
        return {"budget_bytes": budget_bytes, "fits": fits, "max_batch": 0}
    lo, hi = 1, 2
    while hi <= MAX_BATCH and peak(hi) <= budget_bytes:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if peak(mid) <= budget_bytes else (lo, mid)
    return {"budget_bytes": budget_bytes, "fits": fits, "max_batch": lo}


def _resolve(model: str, input: str | None):
    from layerwise.commands._model import resolve
    from layerwise.commands.summary import parse_shape

    return resolve(model, parse_shape(input) if input else None)


def register(app: typer.Typer) -> None:
    @app.command()
    @with_workload
    def memory(
        model: str = typer.Argument(..., help="preset name, spec file (.yaml/.yml/.json) or HF config.json"),
        input: Optional[str] = typer.Option(None, "--input", help="one sample's input shape (bare-block spec files)"),
        fit: Optional[float] = typer.Option(None, "--fit", help="a memory budget in GB (10^9 B): does it fit, and "
                                                                "the largest batch that does"),
        json: bool = typer.Option(False, "--json", help="JSON output"),
        *,
        workload: Workload,
    ):
        """Analytic peak memory of one training step (or inference) by phase, with its breakdown."""
        from layerwise.report.console import print_json
        from layerwise.report.memory import memory_json, render_memory

        spec = _resolve(model, input)
        report = analytic(spec, workload)
        fitted = None
        if fit is not None:
            if fit <= 0:
                raise WorkloadError(f"--fit must be a positive number of GB, got {fit}")
            fitted = fit_batch(spec, workload, int(fit * GB))
        print_json(memory_json(report, fitted)) if json else render_memory(report, workload, fitted)

    @app.command()
    @with_workload
    def verify(
        model: str = typer.Argument(..., help="preset name, spec file (.yaml/.yml/.json) or HF config.json"),
        input: Optional[str] = typer.Option(None, "--input", help="one sample's input shape (bare-block spec files)"),
        json: bool = typer.Option(False, "--json", help="JSON output"),
        *,
        workload: Workload,
    ):
        """The analytic memory next to the measured one (fake tensors), with the error of each part."""
        from layerwise.report.console import err, print_json
        from layerwise.report.memory import render_verify, verify_json

        spec = _resolve(model, input)
        report = analytic(spec, workload)
        with err.status(f"measuring {spec.name} (fake tensors)..."):
            measured = measure(spec, workload)
        print_json(verify_json(report, measured)) if json else render_verify(spec.name, report, measured)


def measure(spec, workload: Workload):
    """H3's measure_step under fake tensors (imports torch)."""
    try:
        from layerwise.measure.step import measure_step
    except ImportError as exc:
        raise LayerwiseError(f"verify needs the measure reading (torch): {exc}") from None
    return measure_step(spec, workload, count_flops=False)
