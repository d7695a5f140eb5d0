"""`layerwise train MODEL --data ...` and `layerwise evaluate RUN_DIR`.

Settings come from defaults, then `--config FILE` (YAML), then the flags given on the command line
(a flag left out does not override the file). torch is imported inside the commands only.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from layerwise.commands._options import quiet_option, threads_option
from layerwise.spec.errors import LayerwiseError

# CLI flag -> TrainConfig field (data_* fields go to the DataConfig).
_FIELDS = {
    "epochs": "epochs", "max_steps": "max_steps", "batch": "batch_size", "grad_accum": "grad_accum",
    "lr": "lr", "optimizer": "optimizer", "weight_decay": "weight_decay", "momentum": "momentum",
    "schedule": "schedule", "warmup": "warmup_steps", "min_lr_ratio": "min_lr_ratio", "grad_clip": "grad_clip",
    "precision": "precision", "checkpointing": "checkpointing", "loss": "loss",
    "label_smoothing": "label_smoothing", "class_weights": "class_weights", "balance": "balance", "focal_alpha": "focal_alpha",
    "focal_gamma": "focal_gamma", "mixup": "mixup_alpha", "l1": "l1", "l2": "l2",
    "augment": "augment", "input_noise": "input_noise", "max_norm": "max_norm", "resize_mode": "data_resize_mode", "eval_every": "eval_every", "eval_batches": "eval_batches",
    "monitor": "monitor", "patience": "patience", "checkpoint_every": "checkpoint_every", "keep_last": "keep_last",
    "log_every": "log_every", "freeze": "freeze", "lora_rank": "lora_rank", "lora_alpha": "lora_alpha",
    "lora_targets": "lora_targets", "init_from": "init_from", "seed": "seed", "device": "device",
    "strategy": "strategy", "tensorboard": "tensorboard",
    "data": "data_source", "resize": "data_resize", "normalise": "data_normalise",
    "label_column": "data_label_column", "text_column": "data_text_column", "tokenizer": "data_tokenizer",
    "val_fraction": "data_val_fraction", "test_fraction": "data_test_fraction", "data_seed": "data_seed",
    "max_bytes": "data_max_bytes",
}


def build_config(config_file: str | None, flags: dict):
    from layerwise.train.config import TrainConfig

    cfg = TrainConfig.from_yaml(config_file) if config_file else TrainConfig()
    given = {_FIELDS[k]: (tuple(v) if isinstance(v, list) else v) for k, v in flags.items()
             if v is not None and not (isinstance(v, list) and not v)}
    return cfg.with_overrides(**given) if given else cfg


def _file_keys(config_file: str | None) -> set:
    """The top-level keys a --config file sets (to tell a setting given from a default)."""
    if not config_file:
        return set()
    import yaml

    data = yaml.safe_load(Path(config_file).read_text()) if Path(config_file).exists() else None
    return set(data) if isinstance(data, dict) else set()


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        model: str = typer.Argument(..., help="preset name, spec file (.yaml/.yml/.json) or HF config.json"),
        data: Optional[str] = typer.Option(None, "--data", help="digits, digits-imbalanced, wine, breast-cancer, pystdlib, pystdlib-lines, reverse-digits, sort-digits, or a path (image folder, .npz, .csv, .jsonl, .txt)"),
        config: Optional[str] = typer.Option(None, "--config", help="YAML file of training settings (TrainConfig fields)"),
        out: Optional[str] = typer.Option(None, "--out", help="run directory (default runs/MODEL)"),
        resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its newest good checkpoint"),
        overwrite: bool = typer.Option(False, "--overwrite", help="remove the run already in --out and start afresh"),
        epochs: Optional[int] = typer.Option(None, "--epochs"),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="optimizer steps (overrides --epochs)"),
        batch: Optional[int] = typer.Option(None, "--batch", help="micro-batch per process"),
        grad_accum: Optional[int] = typer.Option(None, "--grad-accum"),
        lr: Optional[float] = typer.Option(None, "--lr"),
        optimizer: Optional[str] = typer.Option(None, "--optimizer", help="sgd, sgd-momentum, adagrad, rmsprop, adam, adamw, adafactor, lion"),
        weight_decay: Optional[float] = typer.Option(None, "--weight-decay"),
        momentum: Optional[float] = typer.Option(None, "--momentum"),
        schedule: Optional[str] = typer.Option(None, "--schedule", help="cosine, linear, constant"),
        warmup: Optional[int] = typer.Option(None, "--warmup", help="warmup steps"),
        min_lr_ratio: Optional[float] = typer.Option(None, "--min-lr-ratio"),
        grad_clip: Optional[float] = typer.Option(None, "--grad-clip", help="max global grad norm (0: off)"),
        precision: Optional[str] = typer.Option(None, "--precision", help="fp32, bf16-mixed, fp16-mixed (CUDA)"),
        checkpointing: Optional[bool] = typer.Option(None, "--checkpointing/--no-checkpointing", help="activation checkpointing per block"),
        loss: Optional[str] = typer.Option(None, "--loss", help="ce or focal (classification, lm); mse or mae "
                                           "(regression, default mse)"),
        label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing"),
        class_weights: Optional[str] = typer.Option(None, "--class-weights", help="none or balanced"),
        balance: Optional[str] = typer.Option(None, "--balance", help="imbalanced classes: class-weights, oversample, "
                                              "undersample or smote (train split; imbalanced-learn)"),
        focal_alpha: Optional[float] = typer.Option(None, "--focal-alpha"),
        focal_gamma: Optional[float] = typer.Option(None, "--focal-gamma"),
        mixup: Optional[float] = typer.Option(None, "--mixup", help="mixup Beta(a, a) parameter (0: off)"),
        l1: Optional[float] = typer.Option(None, "--l1"),
        l2: Optional[float] = typer.Option(None, "--l2", help="L2 penalty (with --l1: elastic net)"),
        augment: List[str] = typer.Option([], "--augment", help="image augmentation: crop, flip, jitter "
                                          "(repeatable or comma-separated)"),
        input_noise: Optional[float] = typer.Option(None, "--input-noise", help="std of Gaussian noise on float inputs"),
        max_norm: Optional[float] = typer.Option(None, "--max-norm", help="max L2 norm of each unit's incoming weights"),
        resize_mode: Optional[str] = typer.Option(None, "--resize-mode", help="stretch, or shorter-side (keeps the "
                                                  "aspect ratio: shorter side, then centre crop)"),
        eval_every: Optional[int] = typer.Option(None, "--eval-every", help="steps between validations (0: per epoch)"),
        eval_batches: Optional[int] = typer.Option(None, "--eval-batches", help="validation batches per evaluation (0: all)"),
        monitor: Optional[str] = typer.Option(None, "--monitor", help="val_loss or val_accuracy"),
        patience: Optional[int] = typer.Option(None, "--patience", help="early stopping patience in evaluations"),
        checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every"),
        keep_last: Optional[int] = typer.Option(None, "--keep-last"),
        log_every: Optional[int] = typer.Option(None, "--log-every"),
        freeze: List[str] = typer.Option([], "--freeze", help="block path glob to freeze (repeatable)"),
        lora_rank: Optional[int] = typer.Option(None, "--lora-rank"),
        lora_alpha: Optional[float] = typer.Option(None, "--lora-alpha"),
        lora_targets: List[str] = typer.Option([], "--lora-target", help="linear path glob that gets LoRA (repeatable)"),
        init_from: Optional[str] = typer.Option(None, "--init-from", help="run dir or .safetensors to start from"),
        seed: Optional[int] = typer.Option(None, "--seed"),
        resize: Optional[bool] = typer.Option(None, "--resize/--no-resize", help="resize images to the model's size (bilinear)"),
        normalise: Optional[str] = typer.Option(None, "--normalise", help="unit, symmetric, meanstd"),
        label_column: Optional[str] = typer.Option(None, "--label-column"),
        text_column: Optional[str] = typer.Option(None, "--text-column"),
        tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="byte or bpe"),
        val_fraction: Optional[float] = typer.Option(None, "--val-fraction"),
        test_fraction: Optional[float] = typer.Option(None, "--test-fraction"),
        data_seed: Optional[int] = typer.Option(None, "--data-seed"),
        max_bytes: Optional[int] = typer.Option(None, "--max-bytes", help="pystdlib(-lines): bytes of source read"),
        device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda"),
        strategy: Optional[str] = typer.Option(None, "--strategy", help="none, ddp, fsdp (under torchrun)"),
        tensorboard: Optional[bool] = typer.Option(None, "--tensorboard/--no-tensorboard", help="also log to RUN_DIR/tensorboard (needs tensorboard)"),
        threads: Optional[int] = threads_option(),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
        json: bool = typer.Option(False, "--json", help="print the RunResult as JSON"),
    ):
        """Train MODEL on --data; writes the run directory (docs/RUNS.md)."""
        flags = {k: v for k, v in locals().items() if k in _FIELDS}
        flags["lora_targets"] = lora_targets
        flags["augment"] = [k for a in augment for k in a.split(",") if k]
        from layerwise.commands._model import resolve

        m = resolve(model)
        if m.task not in ("lm", "mlm", "classify", "regress", "seq2seq"):
            raise LayerwiseError(f"{model}: task is {m.task!r}; training needs a model whose task is 'lm', 'mlm', "
                                 f"'classify', 'regress' or 'seq2seq'")
        run_dir = Path(out) if out else Path("runs") / m.name
        if resume:  # the run's own settings; only a longer --epochs / --max-steps may be given
            if not (run_dir / "config.yaml").exists():
                raise LayerwiseError(f"{run_dir}: nothing to resume (no config.yaml); pass the run's --out")
            extra = {k: v for k, v in flags.items() if k in ("epochs", "max_steps") and v is not None}
            cfg = build_config(str(run_dir / "config.yaml"), extra)
        else:
            if data is None and config is None:
                raise LayerwiseError("pass --data (e.g. --data digits) or --config FILE naming the data")
            cfg = build_config(config, flags)
            if m.task == "regress" and loss is None and "loss" not in _file_keys(config):
                cfg = cfg.with_overrides(loss="mse")  # the regression default; ce is the default of the others

        from layerwise import threads as th
        from layerwise.report.console import print_json
        from layerwise.report.train import TrainReporter
        from layerwise.train.trainer import train as run_train

        n_threads = th.use(threads, th.model_step_flops(m, cfg.batch_size))

        reporter = TrainReporter(quiet=quiet, json=json, threads=n_threads)
        try:
            result = run_train(m, cfg, run_dir, resume=resume, overwrite=overwrite, on_event=reporter)
        finally:
            reporter.close()
        if json:
            print_json(result.to_dict())
        if result.status == "interrupted":  # Ctrl-C: recorded in status.json, and not a success
            raise typer.Exit(130)

    @app.command()
    def evaluate(
        run_dirs: List[str] = typer.Argument(..., help="a run directory written by `layerwise train`; several: "
                                             "an ensemble averaging their predicted probabilities", metavar="RUN_DIR..."),
        which: str = typer.Option("best", "--which", "--checkpoint",
                                  help="best, last, step-N or merged (--checkpoint: the old name)"),
        split: str = typer.Option("test", "--split", help="train, val or test"),
        data: Optional[str] = typer.Option(None, "--data", help="other data of the same form (default: the run's)"),
        threads: Optional[int] = threads_option(),
        quiet: bool = quiet_option(),
        json: bool = typer.Option(False, "--json"),
    ):
        """Evaluate a run's checkpoint (or an ensemble of runs): loss, accuracy, per-class precision/recall/F1,
        macro-F1, confusion matrix (perplexity for language models)."""
        from layerwise.report.console import print_json, warn
        from layerwise.report.progress import counted
        from layerwise.report.train import eval_table
        from layerwise.train.data import make_data
        from layerwise.train.evaluate import evaluate as run_eval

        if split not in ("train", "val", "test"):
            raise LayerwiseError(f"--split must be train, val or test, got {split!r}")
        from layerwise import threads as th

        th.choose(threads)  # a bad --threads before loading anything
        run, module, runs = _load_for_eval(run_dirs, which)
        th.use(threads, th.model_step_flops(run.model, run.config.batch_size))
        for w in (w for r in runs for w in r.warnings):
            warn(w)
        cfg = run.config.with_overrides(data_source=data) if data else run.config
        d = make_data(cfg, run.model)
        loader = getattr(d, split)
        if not len(loader.sampler):
            raise LayerwiseError(f"{run_dirs[0]}: the {split} split is empty")
        with counted(f"evaluate {split}", total=len(loader), unit="batches", quiet=quiet or json) as bar:
            e = run_eval(module, loader, run.model.task, n_classes=d.info.n_classes, on_batch=bar.advance,
                         target_scale=d.info.target_scale, mask_id=d.info.mask_id)
        name = run_dirs[0] if len(runs) == 1 else f"ensemble of {len(runs)} runs"
        checkpoints = ", ".join(f"{r.folder.name}" for r in runs)
        if json:
            where = {"run_dir": run_dirs[0], "checkpoint": str(run.folder)} if len(runs) == 1 else \
                {"run_dirs": list(run_dirs), "checkpoints": [str(r.folder) for r in runs]}
            print_json({**where, "split": split, **e.to_dict()})
        else:
            eval_table(f"{name} ({checkpoints} checkpoint, {split} split)", e.to_dict(), d.info.class_names)


def _load_for_eval(run_dirs: list[str], which: str):
    """(the run whose data is read, the module to evaluate, every run loaded)."""
    if len(run_dirs) == 1:
        from layerwise.train.run import load_run

        run = load_run(run_dirs[0], which)
        return run, run.module, [run]
    from layerwise.train.ensemble import load_ensemble

    return load_ensemble(run_dirs, which)
