"""`layerwise train-parallel MODEL --tp/--pp/--dp ... --out DIR`, under torchrun: tensor, sequence,
2-D (FSDP2 x TP) and pipeline parallel training on PyTorch's own engines (layerwise/train/parallel.py)."""
from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("train-parallel")
    def train_parallel(
        model: str = typer.Argument(..., help="preset name, spec file or HF config.json (a decoder LM)"),
        out: str = typer.Option(..., "--out", help="run directory (DCP checkpoints, last.json)"),
        tp: int = typer.Option(1, "--tp", help="tensor-parallel ranks"),
        pp: int = typer.Option(1, "--pp", help="pipeline stages (alone: --tp 1 --dp 1)"),
        dp: int = typer.Option(1, "--dp", help="data-parallel ranks, sharded with FSDP2 (2-D with --tp)"),
        ep: int = typer.Option(1, "--ep", help="expert-parallel ranks (refused: no PyTorch engine for it)"),
        sp: bool = typer.Option(False, "--sp", help="sequence parallelism (needs --tp > 1)"),
        schedule: str = typer.Option("1f1b", "--schedule", help="pipeline schedule: 1f1b|gpipe"),
        micro_batches: int = typer.Option(2, "--micro-batches", help="micro-batches per step (pipeline)"),
        checkpointing: str = typer.Option("none", "--checkpointing", help="none|full"),
        batch: int = typer.Option(4, "--batch", help="sequences per step (global)"),
        seq: int = typer.Option(16, "--seq", help="tokens per sequence"),
        steps: int = typer.Option(4, "--steps", help="optimizer steps"),
        lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate"),
        save_every: int = typer.Option(2, "--save-every", help="steps between checkpoints"),
        seed: int = typer.Option(0, "--seed", help="weights and synthetic data seed"),
        resume: bool = typer.Option(False, "--resume", help="continue from the run directory's last checkpoint"),
        overrides: Optional[str] = typer.Option(None, "--set", help="preset overrides, e.g. d_model=64,n_layers=4"),
    ):
        """Train a decoder LM with TP/SP, FSDP2 x TP or a pipeline, launched by torchrun (gloo on CPU)."""
        import os

        from layerwise.commands._model import resolve
        from layerwise.report.console import out as console
        from layerwise.train.parallel import ParallelConfig, train_parallel as run

        spec = _with_overrides(model, overrides) if overrides else resolve(model)
        cfg = ParallelConfig(tp=tp, pp=pp, dp=dp, ep=ep, sequence_parallel=sp, schedule=schedule,
                             micro_batches=micro_batches, checkpointing=checkpointing, batch=batch, seq=seq,
                             steps=steps, lr=lr, seed=seed, save_every=save_every)
        losses = run(spec, cfg, out, resume=resume)
        if int(os.environ.get("RANK", "0")) == 0:
            console.print("\n".join(f"step {i + 1}: loss {v:.4f}" for i, v in enumerate(losses)))


def _with_overrides(name: str, text: str):
    """A preset with integer overrides ('d_model=64,n_layers=4')."""
    from layerwise.presets import get_preset
    from layerwise.spec.errors import LayerwiseError

    values = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if not value.strip().lstrip("-").isdigit():
            raise LayerwiseError(f"--set {item!r}: expected name=integer")
        values[key.strip()] = int(value)
    return get_preset(name, **values)
