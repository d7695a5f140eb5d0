"""`layerwise measure MODEL [workload] [--real] [--json]`: the measure reading (ground truth).

Runs one steady-state training step (or one inference) of the built model under FakeTensorMode,
tracking live tensor storages; `--real` runs it on real CPU tensors in a fresh subprocess and adds
the peak RSS (or on a GPU with `--device cuda`, adding torch.cuda's peaks).
"""
from __future__ import annotations

from typing import Optional

import typer

from layerwise.commands._moe import capacity_option, with_capacity

from layerwise.commands._module import MODULE_HELP
from layerwise.commands._options import quiet_option, threads_option
from layerwise.commands._workload import with_workload
from layerwise.spec.errors import LayerwiseError
from layerwise.workload import Workload



def human(n: int) -> str:
    """Bytes in binary units for the eye (the table's other column keeps the exact integer)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def register(app: typer.Typer) -> None:
    @app.command()
    @with_workload
    def measure(
        model: str = typer.Argument(..., help=f"preset name, spec file (.yaml/.yml/.json), HF config.json, {MODULE_HELP}"),
        input: Optional[str] = typer.Option(None, "--input", help="one sample's input shape (bare-block spec files, your own module)"),
        input_dtype: str = typer.Option("float", "--input-dtype", help="your own module: float|long (token ids)"),
        vocab: Optional[int] = typer.Option(None, "--vocab", help="your own module with --input-dtype long: token ids drawn below V"),
        checkpoint_modules: Optional[str] = typer.Option(None, "--checkpoint-modules",
                                                         help="your own module: classes --checkpointing full recomputes, NAME[,NAME]"),
        capacity_factor: Optional[float] = capacity_option(),
        real: bool = typer.Option(False, "--real", help="real tensors (a subprocess on CPU; a GPU with --device cuda)"),
        threads: Optional[int] = threads_option(),
        quiet: bool = quiet_option(),
        json: bool = typer.Option(False, "--json", help="JSON output"),
        *,
        workload: Workload,
    ):
        """Ground truth: peak live tensor memory (with its phase and breakdown) and FLOPs of one step.

        MODEL may be your own nn.Module: FILE.py:factory or package.module:factory. Importing it runs
        that file's (or module's) code, as `python FILE.py` would; nothing else is imported."""
        from layerwise import threads as th
        from layerwise.commands import _module
        from layerwise.report.console import print_json
        from layerwise.report.progress import phases

        _module.check_flags(model)
        if _module.is_module_ref(model):
            th.use(th.choose(threads, None if real else 1))
            with phases(f"measure {model} ({'real' if real else 'fake'} tensors)", quiet=quiet or json):
                name, result = _module.measure(model, input, input_dtype, vocab, checkpoint_modules, workload, real=real)
            print_json(result.to_json()) if json else render(name, workload, result)
            return
        if workload.reference == "hf":
            if input:
                raise LayerwiseError("--input does not apply to --impl hf (the config.json says what the model eats)")
            from layerwise.measure.hf import measure_hf

            th.use(th.choose(threads, None if real else 1))
            with phases(f"measure transformers' {model} ({'real' if real else 'fake'} tensors)", quiet=quiet or json):
                spec, result = measure_hf(model, workload, fake=not real)
            print_json(result.to_json()) if json else render(f"{spec.name} (transformers)", workload, result)
            return
        from layerwise.commands.memory import _check_batchnorm
        from layerwise.cost.parallel import check_split

        spec = with_capacity(_resolve(model, input, workload.seq), capacity_factor)
        check_split(spec, workload.tp, workload.pp)
        _check_batchnorm(spec, workload)
        n = th.choose(threads, th.model_step_flops(spec, workload.batch) if real else 1)
        if real:
            check_fits(spec, workload)
        with phases(f"measure {spec.name} ({'real' if real else 'fake'} tensors)", quiet=quiet or json):
            result = run_measure(spec, workload, real=real, threads=n)
        print_json(result.to_json()) if json else render(spec.name, workload, result)


def _resolve(model: str, input: str | None, seq: int | None):
    from layerwise.commands._model import resolve
    from layerwise.commands.summary import parse_shape

    try:
        return resolve(model, parse_shape(input) if input else None, seq)
    except ImportError as exc:  # presets not installed yet in this tree
        raise LayerwiseError(f"{model}: cannot resolve this model here ({exc}); pass a spec file (.yaml/.json)") from None


def check_fits(spec, workload: Workload) -> None:
    """Before a real step: the bytes it needs (cost reading) against the memory available now."""
    from layerwise.commands.memory import analytic
    from layerwise.measure.procmem import available_bytes

    need = analytic(spec, workload).peak_bytes
    have = available_bytes(workload.device)
    if have is not None and need > have:
        raise LayerwiseError(f"measure --real {spec.name}: one step needs about {human(need)} ({need:,} B) and "
                             f"{human(have)} is available; drop --real (fake tensors measure it without "
                             f"allocating) or use a smaller --batch / --seq")


def run_measure(spec, workload: Workload, *, real: bool, threads: int = 1):
    """Fake by default; real on CPU in a clean subprocess (for RSS); real on CUDA in-process."""
    if real and workload.device == "cpu":
        from layerwise.measure.run_real import measure_real_subprocess

        return measure_real_subprocess(spec, workload, threads=threads)
    from layerwise.threads import use

    use(threads)
    from layerwise.measure.step import measure_step

    return measure_step(spec, workload, fake=not real)


def render(name: str, workload: Workload, result) -> None:
    """A terminal table: the peak's components, each phase's peak, FLOPs, RSS/CUDA when measured."""
    from rich.table import Table

    from layerwise.report.console import out

    table = Table(title=f"{name}: {workload.mode} step, batch {workload.batch}, {workload.precision}, "
                        f"{workload.optimizer} ({workload.impl}), peak in {result.peak_phase}")
    table.add_column("component")
    table.add_column("bytes", justify="right")
    table.add_column("", justify="right")
    for key, value in result.components.items():
        table.add_row(key, f"{value:,}", human(value))
    table.add_row("[bold]peak[/]", f"[bold]{result.peak_bytes:,}[/]", f"[bold]{human(result.peak_bytes)}[/]")
    out.print(table)
    phases = ", ".join(f"{k} {human(v)}" for k, v in result.phase_peaks.items())
    out.print(f"phase peaks: {phases}")
    out.print(f"FLOPs (matmul-class): forward {result.flops_forward:,}  backward {result.flops_backward:,}")
    if result.routing is not None:
        r = result.routing
        out.print(f"MoE routing ({r['routing']}): (token, expert) pairs per expert, all layers {r['expert_counts']}; "
                  f"dropped over capacity {r['dropped']:,} (overflow {100 * r['overflow_rate']:.1f}%)")
    if result.rss is not None:
        rss = result.rss
        out.print(f"RSS: peak {human(rss.peak_bytes)}, tensors' share {human(rss.tensor_peak_bytes)} "
                  f"(tracker {human(result.peak_bytes)}); malloc: {rss.malloc}")
    if result.cuda_allocator is not None:
        from layerwise.report.memory import allocator_line

        out.print(allocator_line(result.cuda_allocator))
    if result.cuda is not None:
        out.print(f"CUDA: max allocated {result.cuda.max_allocated:,} B, max reserved {result.cuda.max_reserved:,} B")
    if result.params:
        p = result.params
        out.print(f"params: {p['total']:,} ({p['trainable']:,} trainable, {p['frozen']:,} frozen); "
                  f"buffers {p['buffers']:,} elements")
    if result.saved_by_module:
        _render_saved(result.saved_by_module)
    for note in result.notes:
        out.print(f"note: {note}")


def _render_saved(saved: dict[str, int]) -> None:
    """Which top-level submodule holds the activation memory (bytes saved for backward)."""
    from rich.table import Table

    from layerwise.report.console import out

    total = sum(saved.values())
    table = Table(title="saved for backward, by top-level submodule", title_justify="left")
    for col, just in (("submodule", "left"), ("bytes", "right"), ("", "right"), ("share", "right")):
        table.add_column(col, justify=just)
    for name, n in saved.items():
        if n or name != "(outside)":
            table.add_row(name, f"{n:,}", human(n), f"{100 * n / total:.1f}%" if total else "-")
    out.print(table)
