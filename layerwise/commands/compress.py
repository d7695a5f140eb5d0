"""`layerwise compress distill|prune|quantize RUN_DIR ...` on run directories from `layerwise train`.
torch is imported inside the commands (the CLI stays pure Python until one runs)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from layerwise.commands._options import quiet_option, threads_option
from layerwise.spec.errors import LayerwiseError
from layerwise.train.integrity import record
from layerwise.train.rundir import fresh_file, new_folder

_RUN_HELP = "a run directory written by `layerwise train`"
_WHICH = typer.Option("best", "--which", help="checkpoint: best, last, step-N or merged")
_THREADS = threads_option()
_QUIET = quiet_option()

compress_app = typer.Typer(help="Distil, prune and quantize a trained run.", no_args_is_help=True)


def _load(run_dir: Path, which: str, threads: int | None):
    from layerwise import threads as th
    from layerwise.report.console import warn
    from layerwise.train.data import make_data
    from layerwise.train.run import load_run

    th.choose(threads)  # a bad --threads before loading anything
    run = load_run(run_dir, which)
    if run.model.task not in ("classify", "lm"):  # the tables report accuracy or perplexity
        raise LayerwiseError(f"{run_dir}: compress handles classification and language-model runs; this run's task "
                             f"is {run.model.task!r}")
    th.use(threads, th.model_step_flops(run.model, run.config.batch_size))
    for w in run.warnings:
        warn(w)
    return run, make_data(run.config, run.model)


def _row(name, module, body, in_shape, test, task, path):
    """One table row: the saved file's size, the spec's params and FLOPs, the test metric, and the
    eager p50 latency of one test batch."""
    from layerwise.compress.finetune import accuracy
    from layerwise.compress.qfile import save_model
    from layerwise.export.latency import measure_latency
    from layerwise.report.compress import Row

    x = next(iter(test))[0]
    latency = measure_latency(module, x, iters=20, warmup=3, compiled=False)[0].p50_ms
    return Row(name, save_model(module, path), body.params().total, body.flops(in_shape).fwd_matmul,
               accuracy(module, test, task), latency)


def _metric(task: str) -> str:
    return "perplexity" if task == "lm" else "accuracy"


@compress_app.command("quantize")
def quantize_cmd(run_dir: Path = typer.Argument(..., help=_RUN_HELP),
                 mode: str = typer.Option("dynamic", help="dynamic | static | weight-int8 | weight-int4"),
                 group_size: int = typer.Option(None, help="weight-only: scales per group of inputs (0: per channel)"),
                 out: Path = typer.Option(None, help="output file, must not exist (default "
                                                     "RUN_DIR/compressed/quantize-N/MODE.safetensors)"),
                 which: str = _WHICH, threads: int = _THREADS, quiet: bool = _QUIET):
    """Quantize a run's checkpoint (int8 dynamic/static, int8/int4 weight-only); writes the packed
    file and prints size, params, FLOPs, test metric and latency before and after."""
    from layerwise.compress.quantize import MODES, quantize
    from layerwise.report.progress import phases
    from layerwise.cost.quant_size import quant_size
    from layerwise.report.compress import render_lines, render_table

    if mode not in MODES:  # before loading anything
        raise LayerwiseError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if out is not None:
        fresh_file(out)
    with phases(f"quantize {mode}", quiet=quiet) as ph:
        ph.phase("loading the run")
        run, data = _load(run_dir, which, threads)
        task, body = run.model.task, run.model.body
        shape = run.model.input_shape(1)
        calib = [b[0] for _, b in zip(range(8), data.train)] if mode == "static" else None
        ph.phase("quantizing")
        q = quantize(run.module, mode, calibration=calib, group_size=group_size)
        folder = None if out else new_folder(run_dir / "compressed", "quantize")
        out = out or folder / f"{mode}.safetensors"
        ph.phase("testing and timing both")
        rows = [_row("original fp32", run.module, body, shape, data.test, task, out.with_suffix(".fp32.tmp")),
                _row(f"quantized {mode}", q, body, shape, data.test, task, out)]
        out.with_suffix(".fp32.tmp").unlink()
    if folder:
        record(folder, out.name)
    render_table(f"quantize {mode}: {run_dir}", rows, _metric(task))
    render_lines([f"predicted file size {quant_size(body, mode, group_size).total_bytes:,} bytes; wrote {out}"])


@compress_app.command("qat")
def qat_cmd(run_dir: Path = typer.Argument(..., help=_RUN_HELP),
            epochs: int = typer.Option(2, help="fake-quantized fine-tuning epochs (the second half with observers "
                                               "and BatchNorm statistics frozen)"),
            lr: float = typer.Option(1e-4, help="fine-tuning learning rate"),
            out: Path = typer.Option(None, help="output file, must not exist (default "
                                                "RUN_DIR/compressed/qat-N/qat.safetensors)"),
            which: str = _WHICH, threads: int = _THREADS, quiet: bool = _QUIET):
    """Quantization-aware training: fine-tune a run's checkpoint with fake int8 quantization (torch.ao
    FX), convert to int8 (what --mode static gives), and compare it with post-training static int8."""
    from layerwise.compress.qat import qat
    from layerwise.compress.quantize import check_static, quantize
    from layerwise.report.compress import render_lines, render_table
    from layerwise.report.progress import counted

    if epochs < 1:
        raise LayerwiseError(f"--epochs must be at least 1, got {epochs}")
    if out is not None:
        fresh_file(out)
    run, data = _load(run_dir, which, threads)
    task, body = run.model.task, run.model.body
    check_static(run.module, "qat")  # before any training: CNNs of Conv/Linear/BatchNorm only
    shape = run.model.input_shape(1)
    with counted("qat: fine-tuning", total=epochs * len(data.train), unit="batches", quiet=quiet) as bar:
        q = qat(run.module, data.train, epochs=epochs, lr=lr, seed=run.config.seed, task=task, on_batch=bar.advance)
    ptq = quantize(run.module, "static", calibration=[b[0] for _, b in zip(range(8), data.train)])
    folder = None if out else new_folder(run_dir / "compressed", "qat")
    out = out or folder / "qat.safetensors"
    tmp = out.with_suffix(".tmp")
    rows = [_row("original fp32", run.module, body, shape, data.test, task, tmp),
            _row("PTQ static int8", ptq, body, shape, data.test, task, tmp),
            _row("QAT int8", q, body, shape, data.test, task, out)]
    tmp.unlink()
    if folder:
        record(folder, out.name)
    render_table(f"qat: {run_dir}", rows, _metric(task))
    render_lines([f"wrote {out}"])


@compress_app.command("prune")
def prune_cmd(run_dir: Path = typer.Argument(..., help=_RUN_HELP), sparsity: float = typer.Option(0.5, help="fraction removed, in [0, 1)"),
              kind: str = typer.Option("structured", help="structured | global | layer"),
              steps: int = typer.Option(1, help="iterative schedule: prune-then-fine-tune stages"),
              epochs: int = typer.Option(1, help="fine-tuning epochs after each stage"),
              lr: float = typer.Option(1e-3, help="fine-tuning learning rate"), which: str = _WHICH,
              threads: int = _THREADS, quiet: bool = _QUIET):
    """Prune a run's checkpoint (structured: smaller layers; global/layer: magnitude zeros), with
    fine-tuning after each stage; writes RUN_DIR/compressed/prune-N/ (spec and weights per stage)."""
    from layerwise.compress.finetune import FinetuneConfig, train_loop
    from layerwise.compress.schedule import iterative_prune
    from layerwise.compress.structured import check_amount
    from layerwise.compress.unstructured import sparsity_table
    from layerwise.report.progress import counted
    from layerwise.report.compress import render_lines, render_table
    from layerwise.spec.io import dump

    check_amount(sparsity)  # before loading anything
    run, data = _load(run_dir, which, threads)
    task, body, module = run.model.task, run.model.body, run.module
    shape = run.model.input_shape(1)
    outdir = new_folder(run_dir / "compressed", "prune")
    rows = [_row("original", module, body, shape, data.test, task, outdir / "original.safetensors")]

    with counted("prune: fine-tuning", total=steps * epochs * len(data.train), unit="batches", quiet=quiet) as bar:
        def finetune(m):
            train_loop(m, data.train, FinetuneConfig(epochs=epochs, lr=lr, seed=run.config.seed), task=task,
                       on_batch=bar.advance)

        stages = iterative_prune(body, module, shape, sparsity, steps=steps, kind=kind, finetune=finetune)
    for st in stages:
        rows.append(_row(f"stage {st.index}: {st.sparsity:.0%} + ft", st.module, st.body, shape, data.test, task,
                         outdir / f"pruned-{st.index}.safetensors"))
    render_table(f"prune {kind} {sparsity:.0%} in {steps} stage(s): {run_dir}", rows, _metric(task))
    if kind != "structured":  # zeros stay in dense tensors: file, params and FLOPs do not shrink
        table = sparsity_table(stages[-1].module)
        zeros, total = sum(r.zeros for r in table), sum(r.numel for r in table)
        render_lines([f"  {r.path}: {r.sparsity:.1%} of {r.numel:,} zero" for r in table]
                     + [f"  all Linear/Conv weights: {zeros / total:.1%} of {total:,} zero"])
    dump(replace(run.model, body=stages[-1].body), outdir / "pruned-spec.yaml")
    record(outdir, "pruned-spec.yaml", "original.safetensors", *(f"pruned-{st.index}.safetensors" for st in stages))
    render_lines([f"wrote {outdir / 'pruned-spec.yaml'} and {outdir / f'pruned-{len(stages)}.safetensors'}"])


@compress_app.command("distill")
def distill_cmd(run_dir: Path = typer.Argument(..., help=_RUN_HELP),
                student: str = typer.Option(..., help="student MODEL: preset name or spec file"),
                temperature: float = typer.Option(4.0, help="softmax temperature of the soft targets"),
                alpha: float = typer.Option(0.7, help="weight of the distillation loss (1 - alpha: the labels)"),
                epochs: int = typer.Option(3, help="training epochs of each student"),
                seed: int = typer.Option(0, help="seed of the students' initialisation and data order"),
                which: str = _WHICH, threads: int = _THREADS, quiet: bool = _QUIET):
    """Distil a run's model into a student: trains the student alone and with the teacher's soft
    targets, and compares both with the teacher; writes RUN_DIR/compressed/distill-N/."""
    import torch

    from layerwise.compress.finetune import FinetuneConfig, train_loop
    from layerwise.report.compress import render_table
    from layerwise.report.progress import counted

    run, data = _load(run_dir, which, threads)
    task = run.model.task
    spec = _model(student)
    key = lambda m: (m.task, m.input.kind, tuple(m.input.shape), m.input.vocab_size)  # noqa: E731
    if key(spec) != key(run.model):
        raise LayerwiseError(f"{student}: the student must take the teacher's input and task "
                             f"(task, input kind, shape, vocab) = {key(run.model)}, got {key(spec)}")
    shape = run.model.input_shape(1)
    outdir = new_folder(run_dir / "compressed", "distill")
    rows = [_row("teacher", run.module, run.model.body, shape, data.test, task, outdir / "teacher.tmp")]
    (outdir / "teacher.tmp").unlink()
    with counted("distill: training two students", total=2 * epochs * len(data.train), unit="batches",
                 quiet=quiet) as bar:
        for label, a in (("student alone", 0.0), ("student distilled", alpha)):
            torch.manual_seed(seed)
            s = spec.build()
            train_loop(s, data.train, FinetuneConfig(epochs=epochs, seed=seed, temperature=temperature, alpha=a),
                       task=task, teacher=run.module if a else None, on_batch=bar.advance)
            rows.append(_row(label, s, spec.body, shape, data.test, task, outdir / f"{label.replace(' ', '-')}.safetensors"))
    record(outdir, "student-alone.safetensors", "student-distilled.safetensors")
    render_table(f"distill T={temperature} alpha={alpha}: {run_dir}", rows, _metric(task))


def _model(name: str):
    from layerwise.spec.model import Model

    if Path(name).suffix in (".yaml", ".yml", ".json"):
        from layerwise.spec.io import load

        m = load(name)
    else:
        from layerwise.presets import get_preset

        m = get_preset(name)
    if not isinstance(m, Model):
        raise LayerwiseError(f"{name}: the student must be a model (with input and task), not a bare block")
    return m


def register(app: typer.Typer) -> None:
    app.add_typer(compress_app, name="compress")
