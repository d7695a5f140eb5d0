"""`layerwise export onnx RUN_DIR` (ONNX + onnxruntime parity + latency of eager/compiled/ort)."""
from __future__ import annotations

from pathlib import Path

import typer

from layerwise.commands._options import quiet_option, threads_option

export_app = typer.Typer(help="Export a trained run.", no_args_is_help=True)


@export_app.command("onnx")
def onnx_cmd(run_dir: Path = typer.Argument(..., help="a run directory written by `layerwise train`"),
             out: Path = typer.Option(None, help="output file, must not exist (default RUN_DIR/export/onnx-N/model.onnx)"),
             batch: int = typer.Option(4, help="batch of the parity check (and of batch + 3)"),
             latency: bool = typer.Option(False, help="also time eager, compiled and onnxruntime"),
             exporter: str = typer.Option("auto", help="auto (legacy, then dynamo) | legacy | dynamo"),
             which: str = typer.Option("best", "--which", help="checkpoint: best, last, step-N or merged"),
             threads: int = threads_option(), quiet: bool = quiet_option()):
    """Export a run's checkpoint to ONNX (dynamic batch, and sequence for token models), check it
    with onnx.checker and against onnxruntime on two batches."""
    import torch

    from layerwise import threads as th
    from layerwise.export.onnx import check_parity, export_onnx
    from layerwise.report.compress import render_lines
    from layerwise.report.console import warn
    from layerwise.report.progress import phases
    from layerwise.train.integrity import record
    from layerwise.train.rundir import fresh_file, new_folder
    from layerwise.train.run import load_run

    if out is not None:
        fresh_file(out)
    th.choose(threads)  # a bad --threads before loading anything
    with phases("export onnx", quiet=quiet) as ph:
        ph.phase("loading the run")
        run = load_run(run_dir, which)
        th.use(threads, th.model_step_flops(run.model, batch))
        for w in run.warnings:
            warn(w)
        model = run.model

        def sample(b, s=None):
            shape = model.input_shape(b, seq=s) if s else model.input_shape(b)
            if model.input.kind == "tokens":
                return torch.randint(0, model.input.vocab_size, shape)
            return torch.randn(shape)

        seq = model.input.kind in ("tokens", "sequence")
        folder = None if out else new_folder(run_dir / "export", "onnx")
        out = out or folder / "model.onnx"
        ph.phase("exporting")
        done = export_onnx(run.module, sample(2), out, seq_axis=seq, max_seq=model.input.max_seq, exporter=exporter)
        if folder:
            record(folder, *(p.name for p in folder.iterdir() if p.is_file() and p.name != "manifest.json"))
        lines = [f"wrote {out} ({done.exporter} exporter, dynamic batch{' and sequence' if seq else ''}; "
                 f"onnx.checker ok)"]
        ph.phase("checking parity with onnxruntime")
        for p in check_parity(run.module, out, [sample(batch), sample(batch + 3)]):
            lines.append(f"  batch {p.batch}: max abs {p.max_abs:.2e}, max rel {p.max_rel:.2e}")
        if latency:
            from layerwise.export.latency import measure_latency

            ph.phase("timing eager, compiled and onnxruntime")
            for r in measure_latency(run.module, sample(batch), out):
                lines.append(f"  {r.runtime}: p50 {r.p50_ms:.3f} ms, p90 {r.p90_ms:.3f} ms")
    render_lines(lines)


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
