"""The typed training configuration: one dataclass, readable from YAML (yaml.safe_load) or the CLI.

`TrainConfig.data` is a `DataConfig` (what to read and how to prepare it); everything else drives
the loop. Every field has a default so `layerwise train MODEL --data digits` works as it is.
"""
from __future__ import annotations

import difflib
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

import yaml

from layerwise.spec.errors import LayerwiseError
from layerwise.spec.fieldtypes import mismatch

OPTIMIZERS = ("sgd", "sgd-momentum", "adagrad", "rmsprop", "adam", "adamw", "adafactor", "lion")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed")
LOSSES = ("ce", "focal", "mse", "mae")  # mse / mae: regression
STRATEGIES = ("none", "ddp", "fsdp")
NORMALISE = ("unit", "symmetric", "meanstd")
TOKENIZERS = ("byte", "bpe")
AUGMENTS = ("crop", "flip", "jitter")
RESIZE_MODES = ("stretch", "shorter-side")
BALANCE = ("none", "class-weights", "oversample", "undersample", "smote")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the data comes from and how it becomes tensors the model's InputSpec accepts."""

    source: str = "digits"  # built-in name (digits, wine, breast-cancer, pystdlib, pystdlib-lines,
    # reverse-digits, sort-digits) or a path
    seed: int = 0  # split seed: the same seed gives the same train/val/test split everywhere
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    # images
    resize: bool | None = None  # None: resize built-in datasets only; False: a size mismatch is an error
    resize_mode: str = "stretch"  # stretch: to (H, W) as is; shorter-side: the shorter side to size, then centre crop
    normalise: str = "unit"  # unit [0,1], symmetric [-1,1], meanstd (per-channel mean/std below)
    mean: tuple[float, ...] = ()  # meanstd: per channel; empty = measured on the train split
    std: tuple[float, ...] = ()
    # tabular / text classification
    label_column: str = "label"
    text_column: str = "text"
    standardise: bool = True  # tabular: zero mean, unit variance, fitted on the train split only
    # text
    tokenizer: str = "byte"  # byte: ids 0..255; bpe: trained locally with `tokenizers` on train text
    max_bytes: int = 1_000_000  # pystdlib(-lines): cap on the corpus read, so a CPU run stays minutes

    def __post_init__(self):
        _one_of("data.normalise", self.normalise, NORMALISE)
        _one_of("data.tokenizer", self.tokenizer, TOKENIZERS)
        _one_of("data.resize_mode", self.resize_mode, RESIZE_MODES)
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise LayerwiseError(f"data.{name} must be in [0, 1), got {v}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise LayerwiseError("data.val_fraction + data.test_fraction must leave some training data")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run. Fields with a comment say why they exist or what the unit is."""

    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0  # model init, data order (per epoch: seed + epoch), dropout, mixup
    epochs: int = 10
    max_steps: int = 0  # optimizer steps; > 0 overrides epochs
    batch_size: int = 32  # per optimizer micro-batch, per process
    grad_accum: int = 1  # micro-batches per optimizer step
    # optimizer
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01  # never applied to biases, norm scales/shifts, embeddings
    momentum: float = 0.9  # sgd-momentum, rmsprop
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    # schedule: linear warmup over warmup_steps, then decay to min_lr_ratio * lr at the last step
    schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    precision: str = "fp32"
    checkpointing: bool = False  # activation checkpointing of every block of a layer stack
    # loss and regularisation
    loss: str = "ce"
    label_smoothing: float = 0.0
    class_weights: str = "none"  # "balanced": n / (k * count_c) from the train split
    balance: str = "none"  # class-weights (= class_weights balanced), oversample, undersample, smote (train split)
    focal_alpha: float = 1.0
    focal_gamma: float = 2.0
    mixup_alpha: float = 0.0  # > 0: mix pairs of float inputs with lam ~ Beta(a, a)
    l1: float = 0.0  # + l1 * sum |w| over the weight-decayed parameters
    l2: float = 0.0  # + l2 * sum w^2 over the same (an explicit penalty, unlike decoupled decay); l1 + l2: elastic net
    augment: tuple[str, ...] = ()  # crop, flip, jitter: image augmentation of every training batch (train/augment.py)
    input_noise: float = 0.0  # std of Gaussian noise added to float inputs of every training batch (after normalising)
    max_norm: float = 0.0  # > 0: after every step each Linear/Conv unit's incoming weights renormed to L2 <= max_norm
    # evaluation, early stopping, checkpoints
    eval_every: int = 0  # optimizer steps between validations; 0 = once per epoch
    eval_batches: int = 50  # validation during training reads at most this many batches (0: all); the final test reads all
    monitor: str = "val_loss"  # val_loss (lower is better) or val_accuracy (higher is better)
    patience: int = 0  # evaluations without improvement before stopping; 0 = never stop early
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0 = at every evaluation
    keep_last: int = 2  # step-N checkpoints kept besides best/ and last/
    log_every: int = 10
    tensorboard: bool = False  # also write RUN_DIR/tensorboard/ (needs the tensorboard package; not a dependency)
    # fine-tuning
    freeze: tuple[str, ...] = ()  # spec path globs to freeze ("q_proj", "block.ffn.*", "0", ""=root)
    lora_rank: int = 0  # > 0: wrap matching linears in LoRA adapters, train only those
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("*",)  # block path globs of linears that get adapters
    merge_lora: bool = True  # write RUN_DIR/merged/ with adapters folded into the base weights
    init_from: str = ""  # a run dir or .safetensors file to start from (fine-tuning)
    # where it runs
    device: str = "cpu"
    strategy: str = "none"  # none, ddp, fsdp (under torchrun)
    deterministic: bool = True  # torch.use_deterministic_algorithms: bitwise-equal resumes

    def __post_init__(self):
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        _one_of("schedule", self.schedule, SCHEDULES)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("loss", self.loss, LOSSES)
        _one_of("strategy", self.strategy, STRATEGIES)
        _one_of("class_weights", self.class_weights, ("none", "balanced"))
        _one_of("balance", self.balance, BALANCE)
        for k in self.augment:
            _one_of("augment", k, AUGMENTS)
        if self.balance != "none" and self.class_weights == "balanced":
            raise LayerwiseError(f"balance {self.balance!r} and class_weights 'balanced' both correct the imbalance; "
                                 f"use one")
        _one_of("monitor", self.monitor, ("val_loss", "val_accuracy"))
        for name in ("batch_size", "grad_accum", "keep_last", "log_every"):
            if getattr(self, name) <= 0:
                raise LayerwiseError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("epochs", "max_steps", "warmup_steps", "eval_every", "eval_batches", "checkpoint_every", "patience",
                     "lora_rank"):
            if getattr(self, name) < 0:
                raise LayerwiseError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("input_noise", "max_norm"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
                raise LayerwiseError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.max_norm and self.strategy == "fsdp":
            raise LayerwiseError("max_norm under strategy fsdp is not supported (the weights are sharded); "
                                 "use ddp or none")
        if self.epochs == 0 and self.max_steps == 0:
            raise LayerwiseError("set epochs or max_steps to a positive number")
        if self.lr <= 0:
            raise LayerwiseError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise LayerwiseError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    # ---- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = asdict(self)
        return _lists(out)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config", lines: dict | None = None) -> "TrainConfig":
        """Settings -> TrainConfig; every value is checked against its field's type first.
        `lines`: {key path: line} of a YAML file, so an error names the line."""
        if not isinstance(data, dict):
            raise LayerwiseError(f"{where}: expected a mapping of training settings, got {type(data).__name__}")
        data = dict(data)
        raw_data = data.pop("data", {})
        if isinstance(raw_data, str):
            raw_data = {"source": raw_data}
        if raw_data is not None and not isinstance(raw_data, dict):
            raise LayerwiseError(f"{_at(where, lines, ('data',))}: data must be a mapping of data settings or a "
                                 f"source name, got {type(raw_data).__name__}")
        dc = _construct(DataConfig, raw_data or {}, where, lines, ("data",))
        return _construct(cls, {**data, "data": dc}, where, lines)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        from layerwise.spec.io import yaml_lines

        path = Path(path)
        if not path.exists():
            raise LayerwiseError(f"{path}: no such config file")
        try:
            text = path.read_text()
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:  # one line: the place and the problem, not PyYAML's snippet
            mark = getattr(err, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise LayerwiseError(f"{path}{line}: YAML syntax error: {problem}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise LayerwiseError(f"{path}: cannot be read as text: {err}") from None
        return cls.from_dict({} if data is None else data, str(path), yaml_lines(text))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, **kw) -> "TrainConfig":
        """A copy with some fields changed; `data_*` keys go to the DataConfig."""
        data_kw = {k[5:]: v for k, v in kw.items() if k.startswith("data_")}
        rest = {k: v for k, v in kw.items() if not k.startswith("data_")}
        data = _construct(DataConfig, {**_lists(asdict(self.data)), **data_kw}, "data") if data_kw else self.data
        return _construct(TrainConfig, {**{f.name: getattr(self, f.name) for f in fields(self)}, **rest, "data": data}, "config")


def _lists(obj):
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    return obj


def _at(where: str, lines: dict | None, path: tuple) -> str:
    line = (lines or {}).get(path)
    return f"{where}:{line}" if line else where


def _construct(cls, kwargs: dict, where: str, lines: dict | None = None, prefix: tuple = ()):
    known = {f.name: f for f in fields(cls)}
    for key in kwargs:
        if not isinstance(key, str) or key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise LayerwiseError(f"{_at(where, lines, (*prefix, key))}: unknown setting "
                                 f"{'.'.join(map(str, (*prefix, key)))!r}{hint}")
    clean = {}
    for key, value in kwargs.items():
        default = known[key].default
        if isinstance(value, list):
            value = tuple(value)
        if known[key].default_factory is MISSING and isinstance(default, tuple) and isinstance(value, str):
            value = (value,)
        problem = mismatch(cls, key, value)
        if problem:  # the declared type, before the config is made
            setting = ".".join((*prefix, key))
            raise LayerwiseError(f"{_at(where, lines, (*prefix, key))}: {setting}: {problem.split(' ', 1)[1]}")
        clean[key] = value
    try:
        return cls(**clean)
    except TypeError as err:
        raise LayerwiseError(f"{where}: {err}") from None
    except LayerwiseError as err:  # a value of the right type out of range: say which file
        raise LayerwiseError(f"{where}: {err}") from None


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), list(allowed), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise LayerwiseError(f"{name} must be one of {list(allowed)}, got {value!r}{hint}")


__all__ = ["TrainConfig", "DataConfig", "replace"]
