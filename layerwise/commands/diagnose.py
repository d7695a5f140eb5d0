"""`layerwise diagnose MODEL`: one forward and backward at initialisation (or of a run's checkpoint)
and, per layer, activation mean/std, gradient norm, dead ReLUs and saturated sigmoid/tanh units.

--init and --norm-position repeat to compare variants side by side (every combination, each built
from the same seed and fed the same batch). torch is imported inside the command only.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from layerwise.commands._options import threads_option
from layerwise.spec.errors import LayerwiseError


def _is_run_dir(name: str) -> bool:
    p = Path(name)
    return p.is_dir() and (p / "spec.yaml").exists() and (p / "config.yaml").exists()


def register(app: typer.Typer) -> None:
    @app.command()
    def diagnose(
        model: str = typer.Argument(..., help="preset name, spec file, HF config.json, or a run directory"),
        init: List[str] = typer.Option([], "--init", help="xavier_uniform, xavier_normal, kaiming_uniform, "
                                       "kaiming_normal, normal:STD or default (repeatable: variants side by side)"),
        norm_position: List[str] = typer.Option([], "--norm-position", help="pre or post: every transformer "
                                                "block's norms (repeatable)"),
        data: Optional[str] = typer.Option(None, "--data", help="a batch of this data (as `train --data`); "
                                           "default: synthetic N(0, 1) input / uniform token ids"),
        batch: int = typer.Option(16, "--batch", help="samples in the batch"),
        seed: int = typer.Option(0, "--seed", help="init and synthetic-batch seed"),
        which: str = typer.Option("best", "--which", help="a run directory's checkpoint: best, last or step-N"),
        html: Optional[Path] = typer.Option(None, "--html", help="write a self-contained HTML report"),
        threads: Optional[int] = threads_option(),
        json: bool = typer.Option(False, "--json"),
    ):
        """Per-layer activations and gradients at initialisation: vanishing/exploding layers, dead ReLUs,
        saturated sigmoid/tanh, for init schemes and pre-/post-norm side by side."""
        if batch <= 0:
            raise LayerwiseError(f"--batch must be a positive integer, got {batch}")
        from layerwise import threads as th

        th.use(threads, 0)
        if _is_run_dir(model):
            if init or norm_position:
                raise LayerwiseError(f"--init/--norm-position apply at initialisation, not to the checkpoint of run {model}")
            results = [_from_run(model, which, data, batch)]
        else:
            if which != "best":
                raise LayerwiseError(f"--which applies to a run directory; {model} is not one")
            results = _variants(model, init or ["default"], norm_position or [None], data, batch, seed)
        from layerwise.report.console import print_json
        from layerwise.report.diagnose import diagnose_table, write_diagnose_html

        if html is not None:
            write_diagnose_html(model, results, html)
        if json:
            print_json(results[0].to_dict() if len(results) == 1 else {"variants": [r.to_dict() for r in results]})
        else:
            diagnose_table(model, results)


def _batch(m, data: str | None, batch: int, seed: int, cfg=None):
    from layerwise.train.diagnose import synthetic_batch

    if data is None and cfg is None:
        return synthetic_batch(m, batch, seed)
    from layerwise.train.config import DataConfig
    from layerwise.train.data import make_data

    dc = cfg.data if cfg is not None and data is None else DataConfig(source=data)
    return next(iter(make_data(dc, m, batch_size=batch).train))  # the first batch of epoch 0


def _variants(name: str, inits: list[str], positions: list, data, batch: int, seed: int):
    import torch

    from layerwise.commands._model import resolve
    from layerwise.train.diagnose import diagnose, parse_init, reinit, with_norm_position

    for i in inits:
        parse_init(i)  # a bad --init before building anything
    base = resolve(name)
    out = []
    for pos in positions:
        m = with_norm_position(base, pos) if pos is not None else base
        x, y = _batch(m, data, batch, seed)
        for init in inits:
            torch.manual_seed(seed)
            module = m.build()
            reinit(module, init)
            out.append(diagnose(module, x, y, m.task, init=init, norm_position=pos or "as built"))
    return out


def _from_run(run_dir: str, which: str, data, batch: int):
    from layerwise.train.diagnose import diagnose
    from layerwise.train.run import load_run

    run = load_run(run_dir, which)
    x, y = _batch(run.model, data, batch, 0, cfg=run.config)
    return diagnose(run.module, x, y, run.model.task, init=f"checkpoint {run.folder.name}", norm_position="as built")
