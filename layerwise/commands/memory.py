"""`layerwise memory MODEL [workload] [--fit GB] [--json]` (the cost reading: pure Python, no torch)
and `layerwise verify MODEL [workload] [--json]` (the cost reading next to the measure reading)."""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import typer

from layerwise.commands import _rlhf
from layerwise.commands._moe import capacity_option, with_capacity

from layerwise.commands._options import quiet_option, threads_option
from layerwise.commands._workload import with_workload
from layerwise.spec.base import leaf_count
from layerwise.spec.errors import LayerwiseError, WorkloadError
from layerwise.workload import Workload

GB = 10**9
MAX_BATCH = 1 << 20  # the --fit search stops here


def analytic(spec, workload: Workload, timeline: bool = False, hf_config: dict | None = None):
    """The memory report of `spec` under `workload` (training or inference by --mode); with
    --impl hf, of transformers' model of `hf_config` (spec: our import of it)."""
    from layerwise.cost.parallel import check_split

    check_split(spec, workload.tp, workload.pp)
    _check_batchnorm(spec, workload)
    if workload.reference == "hf":
        if hf_config is None:
            raise WorkloadError("--impl hf needs a Hugging Face config.json as MODEL (transformers builds from it)")
        from layerwise.cost.hf import hf_training_memory

        return hf_training_memory(spec, hf_config, workload, timeline=timeline)
    return _reading(spec, workload, timeline)


@functools.lru_cache(maxsize=4096)
def _reading(spec, workload: Workload, timeline: bool):
    """Memoised: specs and workloads are frozen values and the reading is a pure function of them;
    a long-running `layerwise serve` answers the verdict searches of similar requests from here."""
    from layerwise.cost.memory import inference_memory, training_memory

    reading = training_memory if workload.mode == "train" else inference_memory
    return reading(spec, workload, timeline=timeline)


def _check_batchnorm(spec, workload: Workload) -> None:
    from layerwise.blocks.norm import check_train_batch

    if workload.mode == "train" and hasattr(spec, "input_shape"):
        check_train_batch(spec, spec.input_shape(workload.batch, workload.seq, workload.image))


def fit_batch(spec, workload: Workload, budget_bytes: int) -> dict:
    """Does the peak fit `budget_bytes`; the largest micro-batch that does at the workload's sequence
    length; and for token/sequence models the longest sequence (up to the model's max_seq) that does
    at the workload's batch (the peak grows with both: cost/verdict.largest's doubling and bisection)."""
    from layerwise.cost.verdict import largest

    def need(**kw) -> int:
        return analytic(spec, replace(workload, **kw)).peak_bytes

    out = {"budget_bytes": budget_bytes, "fits": need() <= budget_bytes,
           "max_batch": largest(lambda b: need(batch=b), budget_bytes, MAX_BATCH)}
    limit = spec.input.max_seq if spec.input.kind in ("tokens", "sequence") else 0
    if limit:
        out["max_seq"] = largest(lambda s: need(seq=s), budget_bytes, limit)
        out["model_max_seq"] = limit
    return out


@dataclass(frozen=True)
class MemoryAnswer:
    """What `layerwise memory` computes; the CLI and the web API render the same value."""

    report: object  # cost.memory.MemoryReport
    fit: dict | None = None
    verdicts: tuple | None = None  # cost.verdict.Verdict per GPU of the catalogue
    timeline: object = None  # cost.timeline.Timeline
    explanation: object = None  # cost.explain.Explanation (--explain)


# A per-op reading (the timeline, --explain) traces every leaf of every layer (~0.4 ms each);
# the memory's phases and peak trace equal copies once (cost/activations.run_copies), any size.
SPARKLINE_LEAVES = 4096  # leaf layers: the console's timeline sparkline is drawn up to this size
PER_OP_LEAVES = 50_000  # leaf layers: --timeline, --html and --explain are refused beyond this


def refuse_per_op(spec, flag: str) -> None:
    """WorkloadError if `spec` has too many leaf layers for a reading of every op's moment."""
    n = leaf_count(spec.body)
    if n > PER_OP_LEAVES:
        raise WorkloadError(f"{flag}: {spec.name} has {n:,} leaf layers; a reading of every op's moment is "
                            f"limited to {PER_OP_LEAVES:,} (the phases and the peak have no limit)")


def memory_answer(spec, workload: Workload, *, fit: float | None = None, verdict: bool = False,
                  timeline: bool = False, explain: bool = False, hf_config: dict | None = None,
                  capacity_factor: float | None = None) -> MemoryAnswer:
    from layerwise.cost.timeline import from_report

    spec = with_capacity(spec, capacity_factor)
    if hf_config is not None:  # --impl hf: one reading of one config.json
        for flag, on in (("--fit", fit is not None), ("--verdict", verdict), ("--explain", explain)):
            if on:
                raise WorkloadError(f"{flag} does not apply to --impl hf")
    report = analytic(spec, workload, timeline, hf_config)
    fitted = None
    if fit is not None:
        if fit <= 0:
            raise WorkloadError(f"--fit must be a positive number of GB, got {fit}")
        fitted = fit_batch(spec, workload, int(fit * GB))
    verdicts = None
    if verdict:
        from layerwise.cost.verdict import gpu_verdicts

        verdicts = tuple(gpu_verdicts(spec, workload, analytic))
    explanation = None
    if explain:
        from layerwise.cost.explain import explain as explain_memory

        explanation = explain_memory(spec, workload)
    return MemoryAnswer(report, fitted, verdicts, from_report(report) if timeline else None, explanation)


def _resolve(model: str, input: str | None, workload: Workload):
    """(spec, HF config dict or None): --impl hf needs the config.json transformers builds from."""
    from layerwise.commands._model import resolve
    from layerwise.commands.summary import parse_shape

    if workload.reference == "hf":
        from layerwise.presets.hf import hf_reference

        if input:
            raise WorkloadError("--input does not apply to --impl hf (the config.json says what the model eats)")
        data, spec = hf_reference(model)
        return spec, data
    return resolve(model, parse_shape(input) if input else None, workload.seq), None


def register(app: typer.Typer) -> None:
    @app.command()
    @with_workload
    def memory(
        model: str = typer.Argument(..., help="preset name, spec file (.yaml/.yml/.json) or HF config.json"),
        input: Optional[str] = typer.Option(None, "--input", help="one sample's input shape (bare-block spec files)"),
        fit: Optional[float] = typer.Option(None, "--fit", help="a memory budget in GB (10^9 B): does it fit, the "
                                                                "largest batch and the longest context that do"),
        verdict: bool = typer.Option(False, "--verdict", help="for every GPU of the catalogue: does it fit, "
                                                              "what is spare, largest batch, longest context"),
        timeline: Optional[Path] = typer.Option(None, "--timeline", help="write the step's memory timeline (JSON)"),
        explain: bool = typer.Option(False, "--explain", help="the textbook formulas (16/18/20 B/param, "
                                     "DeepSpeed's estimators, Korthikanti's 34sbh + 5as²b) beside layerwise's "
                                     "components, each difference named"),
        html: Optional[Path] = typer.Option(None, "--html", help="write a self-contained HTML report (charts, "
                                                                 "verdict per GPU, timeline)"),
        capacity_factor: Optional[float] = capacity_option(),
        rlhf: Optional[str] = _rlhf.rlhf_option(),
        placement: Optional[str] = _rlhf.placement_option(),
        ref_quant: Optional[str] = _rlhf.ref_quant_option(),
        json: bool = typer.Option(False, "--json", help="JSON output"),
        *,
        workload: Workload,
    ):
        """Analytic peak memory of one training step (or inference) by phase, with its breakdown."""
        from layerwise.report.console import print_json
        from layerwise.report.memory import memory_json, render_memory
        from layerwise.report.timeline import write_json

        spec, hf_config = _resolve(model, input, workload)
        if capacity_factor is not None and hf_config is not None:
            raise WorkloadError("--capacity-factor does not apply to --impl hf")
        _rlhf.check(rlhf, placement, ref_quant, **{"--fit": fit, "--verdict": verdict, "--timeline": timeline,
                                                  "--explain": explain, "--html": html, "--impl hf": hf_config})
        if rlhf is not None:
            return _rlhf.memory_rlhf(with_capacity(spec, capacity_factor), workload, rlhf, placement, ref_quant, json)
        if hf_config is not None and html is not None:
            raise WorkloadError("--html does not apply to --impl hf")
        per_op = timeline is not None or html is not None or explain  # asked for every op's moment
        if per_op:
            refuse_per_op(spec, "--timeline" if timeline is not None else "--html" if html is not None else "--explain")
        sparkline = not json and leaf_count(spec.body) <= SPARKLINE_LEAVES  # drawn for a model of a readable size
        answer = memory_answer(spec, workload, fit=fit, verdict=verdict or html is not None,
                               timeline=per_op or sparkline, explain=explain, hf_config=hf_config,
                               capacity_factor=capacity_factor)
        if timeline is not None:
            write_json(answer.timeline.to_json(), timeline)
        if html is not None:
            from layerwise.report.html_memory import write_memory_html

            write_memory_html(answer, workload, html)
        shown = replace(answer, verdicts=answer.verdicts if verdict else None)
        data = memory_json(replace(shown, timeline=None))  # the timeline goes to --timeline FILE
        if json:
            print_json(data)
            return
        render_memory(shown, workload)
        if answer.explanation is not None:
            from layerwise.report.explain import render_explain

            render_explain(answer.explanation, workload)

    @app.command()
    @with_workload
    def verify(
        model: str = typer.Argument(..., help="preset name, spec file (.yaml/.yml/.json) or HF config.json"),
        input: Optional[str] = typer.Option(None, "--input", help="one sample's input shape (bare-block spec files)"),
        timeline: Optional[Path] = typer.Option(None, "--timeline", help="write both readings' memory timelines "
                                                                        "(JSON)"),
        html: Optional[Path] = typer.Option(None, "--html", help="write a self-contained HTML report (timelines "
                                                                 "overlaid)"),
        threads: Optional[int] = threads_option(),
        quiet: bool = quiet_option(),
        capacity_factor: Optional[float] = capacity_option(),
        rlhf: Optional[str] = _rlhf.rlhf_option(),
        placement: Optional[str] = _rlhf.placement_option(),
        ref_quant: Optional[str] = _rlhf.ref_quant_option(),
        json: bool = typer.Option(False, "--json", help="JSON output"),
        *,
        workload: Workload,
    ):
        """The analytic memory next to the measured one (fake tensors), with the error of each part."""
        from layerwise import threads as th
        from layerwise.cost.timeline import from_report
        from layerwise.report.console import print_json
        from layerwise.report.memory import render_verify, verify_json
        from layerwise.report.progress import phases
        from layerwise.report.timeline import compare_json, write_json

        spec, hf_config = _resolve(model, input, workload)
        if capacity_factor is not None and hf_config is not None:
            raise WorkloadError("--capacity-factor does not apply to --impl hf")
        spec = with_capacity(spec, capacity_factor)
        _rlhf.check(rlhf, placement, ref_quant, **{"--timeline": timeline, "--html": html, "--impl hf": hf_config})
        if rlhf is not None:
            th.use(th.choose(threads, 1))
            with phases(f"verify {spec.name} --rlhf {rlhf} (fake tensors)", quiet=quiet or json):
                return _rlhf.verify_rlhf(spec, workload, rlhf, placement, ref_quant, json)
        refuse_per_op(spec, "verify")  # both readings list every op's moment
        report = analytic(spec, workload, True, hf_config)
        th.use(th.choose(threads, 1))  # fake tensors: no arithmetic, one thread
        with phases(f"verify {spec.name} (fake tensors)", quiet=quiet or json):
            measured = measure(spec, workload) if hf_config is None else measure_hf(model, workload)
        lines = (from_report(report), measured.timeline)
        if timeline is not None:
            write_json(compare_json(*lines), timeline)
        if html is not None:
            from layerwise.report.html_memory import write_verify_html

            write_verify_html(spec.name, report, measured, lines, html, workload)
        print_json(verify_json(report, measured)) if json else render_verify(spec.name, report, measured, lines)


def measure_hf(model: str, workload: Workload):
    """--impl hf: transformers' model of the config.json, measured (imports torch and transformers)."""
    from layerwise.measure.hf import measure_hf as run

    return run(model, workload, count_flops=False, timeline=True)[1]


def measure(spec, workload: Workload):
    """H3's measure_step under fake tensors (imports torch)."""
    try:
        from layerwise.measure.step import measure_step
    except ImportError as exc:
        raise LayerwiseError(f"verify needs the measure reading (torch): {exc}") from None
    return measure_step(spec, workload, count_flops=False, timeline=True)
