"""make_data: a DataConfig + the Model it feeds -> train/val/test DataLoaders and what was found.

The model's InputSpec decides the form: images (C, H, W) are checked against (or resized to) the
model's size and normalised; features (F,) are standardised with train-split statistics; token
sequences are byte-level or BPE ids of the model's length. Splits come from one seeded permutation
(classification) or contiguous slices of the token stream (language modelling), so the same seed
gives the same split on every machine. Batches come from `EpochBatchSampler`: the order of epoch e
is a permutation seeded by (seed + e), so a resumed run sees exactly the batches it would have seen.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import Model
from layerwise.train import data_sources as src
from layerwise.train.config import DataConfig, TrainConfig
from layerwise.train.tokens import encode_fixed, make_tokenizer

SPLITS = ("train", "val", "test")
IMBALANCE_RATIO = 3.0  # warn when the largest train class is this many times the smallest


@dataclass
class DataInfo:
    source: str
    task: str
    input_kind: str
    sizes: dict[str, int]  # samples (classification) or sequences (lm) per split
    n_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    class_counts: dict[str, list[int]] = field(default_factory=dict)  # split -> count per class
    vocab_size: int = 0
    tokenizer: str = ""  # "byte", "bpe" or "" (no text)
    seq_len: int = 0
    normalise: str = ""
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    target_mean: list[float] = field(default_factory=list)  # regress: per target, from the train split
    target_std: list[float] = field(default_factory=list)  # (the model learns standardised targets)
    mask_id: int | None = None  # mlm: the [MASK] token id (the tokenizer's vocab_size)
    warnings: list[str] = field(default_factory=list)
    tokenizer_json: str | None = None  # BPE model, written to RUN_DIR/tokenizer.json

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("tokenizer_json")
        return out

    @property
    def target_scale(self) -> tuple[list[float], list[float]] | None:
        """regress: (mean, std) per target of the train split, to report metrics in the data's units."""
        return (self.target_mean, self.target_std) if self.target_mean else None


@dataclass
class Data:
    train: DataLoader
    val: DataLoader
    test: DataLoader
    info: DataInfo


class TensorPairs(Dataset):
    """(x, y) tensors indexed by a list of sample ids: one fancy-index per batch, no collation."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx):
        return self.x[idx], self.y[idx]


class EpochBatchSampler:
    """Batches of indices. shuffle: epoch e uses randperm(n, seed + e). With `world` processes, rank r
    takes positions r, r+world, ... of the (padded) order, as DistributedSampler does, so the union of
    the ranks' i-th batches is the single-process i-th batch of size batch * world."""

    def __init__(self, n: int, batch: int, *, shuffle: bool, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world: int = 1):
        self.n, self.batch, self.shuffle, self.seed = n, batch, shuffle, seed
        self.drop_last, self.rank, self.world = drop_last, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.world > 1:
            per = -(-self.n // self.world) if not self.drop_last else self.n // self.world
            total = per * self.world
            order = (order + order[: max(0, total - len(order))])[:total]
            order = order[self.rank::self.world]
        return order

    def __len__(self) -> int:
        m = len(self._order())
        return m // self.batch if self.drop_last else -(-m // self.batch)

    def __iter__(self):
        order = self._order()
        n_batches = len(order) // self.batch if self.drop_last else -(-len(order) // self.batch)
        for b in range(self.start, n_batches):
            yield order[b * self.batch:(b + 1) * self.batch]


def make_data(config: TrainConfig | DataConfig | str, model: Model, *, batch_size: int | None = None,
              rank: int = 0, world: int = 1) -> Data:
    """Read, check against the model, split, prepare, and wrap in DataLoaders."""
    if isinstance(config, TrainConfig):
        dc, batch, seed = config.data, batch_size or config.batch_size, config.seed
    elif isinstance(config, DataConfig):
        dc, batch, seed = config, batch_size or 64, 0
    else:
        dc, batch, seed = DataConfig(source=str(config)), batch_size or 64, 0
    if dc.resize_mode != "stretch" and model.input.kind != "image":
        raise LayerwiseError(f"--resize-mode {dc.resize_mode} applies to image inputs; this model takes {model.input.kind}")
    if model.task in ("lm", "mlm"):
        (x, y), info = _lm(dc, model)
    elif model.task == "regress":
        (x, y), info = _regress(dc, model)
    elif model.task == "seq2seq":
        (x, y), info = _seq2seq(dc, model)
    else:
        (x, y), info = _classify(dc, model)
    loaders = {}
    for split in SPLITS:
        xs, ys = x[split], y[split]
        train = split == "train"
        if train and len(ys) // world < batch:
            raise LayerwiseError(f"data {dc.source!r}: the train split has {len(ys)} samples, fewer than one batch of "
                                 f"{batch} per process; lower --batch or add data")
        loaders[split] = loader(xs, ys, batch, seed, train, rank, world)
    return Data(loaders["train"], loaders["val"], loaders["test"], info)


def loader(x: torch.Tensor, y: torch.Tensor, batch: int, seed: int, train: bool, rank: int = 0,
           world: int = 1) -> DataLoader:
    """Batches of (x, y): the train split shuffled per epoch and split over the ranks, the others in order."""
    sampler = EpochBatchSampler(len(y), batch, shuffle=train, seed=seed, drop_last=train,
                                rank=rank if train else 0, world=world if train else 1)
    # own generator: iter(DataLoader) draws a base seed, which must not move the global RNG
    # (a resumed run creates one more iterator than an uninterrupted one)
    return DataLoader(TensorPairs(x, y), batch_size=None, sampler=sampler, generator=torch.Generator().manual_seed(seed))


# ---- classification -----------------------------------------------------------------------------
def _classify(dc: DataConfig, model: Model):
    kind, shape = model.input.kind, tuple(model.input.shape)
    lab = _read_labeled(dc, model)
    n = len(lab.y)
    idx = _split_indices(n, dc)
    info = DataInfo(source=dc.source, task=model.task, input_kind=kind, sizes={s: len(i) for s, i in idx.items()})
    if kind == "image":
        x = _prepare_images(lab, dc, shape, idx["train"], info)
    elif kind == "features":
        x = _prepare_features(lab, dc, shape, idx["train"], info)
    elif kind == "tokens":
        if not isinstance(lab.x, list):
            raise LayerwiseError(f"data {dc.source!r} is not text, but the model takes token ids {shape}")
        tok = make_tokenizer(dc.tokenizer, model.input.vocab_size, [lab.x[i] for i in idx["train"]], f"data {dc.source!r}")
        x = encode_fixed(tok, lab.x, shape[0])
        info.vocab_size, info.tokenizer, info.seq_len, info.tokenizer_json = tok.vocab_size, tok.kind, shape[0], tok.to_json()
    else:
        raise LayerwiseError(f"data {dc.source!r}: classification of {kind} inputs is not supported")
    k = len(lab.class_names)
    _check_classes(model, k, dc.source)
    info.n_classes, info.class_names = k, list(lab.class_names)
    info.class_counts = {s: torch.bincount(lab.y[i], minlength=k).tolist() for s, i in idx.items()}
    counts = info.class_counts["train"]
    if min(counts) == 0 or max(counts) / min(counts) > IMBALANCE_RATIO:
        info.warnings.append(f"classes are imbalanced in the train split (counts {counts}); "
                             f"consider --balance (class-weights, oversample, undersample, smote) or --loss focal")
    return ({s: x[i] for s, i in idx.items()}, {s: lab.y[i] for s, i in idx.items()}), info


def _read_labeled(dc: DataConfig, model: Model) -> src.Labeled:
    kind, shape = model.input.kind, tuple(model.input.shape)
    name = dc.source
    if name == "digits":
        return src.read_digits()
    if name == "digits-imbalanced":
        return src.read_digits_imbalanced()
    if name in src.BUILTIN_TABULAR:
        return src.read_sklearn_tabular(name)
    if name == "pystdlib-lines":
        return src.read_pystdlib_lines(dc.max_bytes)
    if name in src.BUILTIN_REGRESSION:
        raise LayerwiseError(f"data {name!r} is a regression dataset (real targets); this model's task is {model.task!r}")
    if name in src.BUILTIN_LM:
        raise LayerwiseError(f"data {name!r} is a language-modelling corpus; this model's task is {model.task!r}")
    path = Path(name)
    if not path.exists():
        raise LayerwiseError(f"data {name!r}: no such file or folder, and not a built-in dataset "
                             f"({', '.join(src.BUILTINS)})")
    if path.is_dir():
        if kind != "image":
            raise LayerwiseError(f"{path}: a folder is read as images in class sub-folders, but the model takes {kind} {shape}")
        return src.read_image_folder(path, shape[0], shape[1:], bool(dc.resize), dc.resize_mode)
    if path.suffix == ".npz":
        return src.read_npz(path, shape[0] if kind == "image" else 1)
    if path.suffix in (".jsonl",) or (path.suffix == ".csv" and kind == "tokens"):
        return src.read_text_labeled(path, dc.text_column, dc.label_column)
    if path.suffix == ".csv":
        return src.read_csv_table(path, dc.label_column)
    raise LayerwiseError(f"{path}: unsupported data file {path.suffix!r}; expected a folder, .npz, .csv, .jsonl or .txt")


def _split_indices(n: int, dc: DataConfig) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(dc.seed)
    perm = torch.randperm(n, generator=g)
    n_test, n_val = round(n * dc.test_fraction), round(n * dc.val_fraction)
    if n - n_test - n_val <= 0 or (dc.val_fraction > 0 and n_val == 0):
        raise LayerwiseError(f"data {dc.source!r}: {n} samples are too few to split into train/val/test "
                             f"with fractions {dc.val_fraction}/{dc.test_fraction}")
    return {"train": perm[n_test + n_val:], "val": perm[n_test:n_test + n_val], "test": perm[:n_test]}


def _prepare_images(lab: src.Labeled, dc: DataConfig, shape, train_idx, info: DataInfo) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> the model's (C, H, W), normalised as configured."""
    x = lab.x
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise LayerwiseError(f"data {dc.source!r} is not images, but the model takes images {shape}")
    c, h, w = shape
    if x.shape[1] != c:
        raise LayerwiseError(f"data {dc.source!r}: images have {x.shape[1]} channel(s), the model takes {c}")
    if tuple(x.shape[2:]) != (h, w):
        resize = lab.builtin if dc.resize is None else dc.resize
        if not resize:
            raise LayerwiseError(f"data {dc.source!r}: images are {x.shape[2]}x{x.shape[3]} (HxW), the model takes "
                                 f"{h}x{w}; pass --resize to resize bilinearly")
        x = src.resize_images(x, (h, w), dc.resize_mode)
    info.normalise = dc.normalise
    if dc.normalise == "symmetric":
        x = x * 2.0 - 1.0
    elif dc.normalise == "meanstd":
        mean = torch.tensor(dc.mean) if dc.mean else x[train_idx].mean(dim=(0, 2, 3))
        std = torch.tensor(dc.std) if dc.std else x[train_idx].std(dim=(0, 2, 3)).clamp_min(1e-6)
        if len(mean) != c or len(std) != c:
            raise LayerwiseError(f"data.mean/std need {c} value(s), one per channel, got {len(mean)}/{len(std)}")
        x = (x - mean.view(1, c, 1, 1)) / std.view(1, c, 1, 1)
        info.mean, info.std = mean.tolist(), std.tolist()
    return x.contiguous()


def _prepare_features(lab: src.Labeled, dc: DataConfig, shape, train_idx, info: DataInfo) -> torch.Tensor:
    x = lab.x
    if not isinstance(x, torch.Tensor):
        raise LayerwiseError(f"data {dc.source!r} is text, but the model takes feature vectors {shape}")
    x = x.reshape(len(x), -1)  # images read as features: flattened (digits -> 64 values)
    if x.shape[1] != shape[0]:
        raise LayerwiseError(f"data {dc.source!r}: samples have {x.shape[1]} features, the model takes {shape[0]}")
    if dc.standardise:
        mean, std = x[train_idx].mean(0), x[train_idx].std(0).clamp_min(1e-6)
        x = (x - mean) / std
        info.normalise, info.mean, info.std = "standardise", mean.tolist(), std.tolist()
    return x.contiguous()


def _check_classes(model: Model, k: int, source: str) -> None:
    out = model.out_shape(model.input_shape(1))
    if out[-1] < k:
        raise LayerwiseError(f"data {source!r} has {k} classes but model {model.name!r} outputs {out[-1]} logits")


# ---- regression ---------------------------------------------------------------------------------
def _regress(dc: DataConfig, model: Model):
    """Feature vectors -> real targets (N, n_targets): features and targets standardised with the
    train split's mean and std (metrics are reported back in the targets' own units)."""
    kind, shape = model.input.kind, tuple(model.input.shape)
    if kind != "features":
        raise LayerwiseError(f"model {model.name!r} has task 'regress' but takes {kind} inputs; regression reads "
                             f"feature vectors")
    if dc.source in src.BUILTIN_REGRESSION:
        x, y = src.read_sklearn_regression(dc.source)
    elif dc.source in src.BUILTINS:
        raise LayerwiseError(f"data {dc.source!r} is a classification or text dataset; a regression model needs "
                             f"real targets ({', '.join(src.BUILTIN_REGRESSION)} or a .csv)")
    elif Path(dc.source).suffix == ".csv" and Path(dc.source).exists():
        x, y = src.read_csv_regression(Path(dc.source), dc.label_column)
    else:
        raise LayerwiseError(f"data {dc.source!r}: a regression model reads {', '.join(src.BUILTIN_REGRESSION)} or a "
                             f".csv with a numeric --label-column")
    y = y.reshape(len(y), -1)
    n_out = model.out_shape(model.input_shape(1))[-1]
    if y.shape[1] != n_out:
        raise LayerwiseError(f"data {dc.source!r} has {y.shape[1]} target(s) per sample but model {model.name!r} "
                             f"outputs {n_out}")
    idx = _split_indices(len(y), dc)
    info = DataInfo(source=dc.source, task="regress", input_kind=kind, sizes={s: len(i) for s, i in idx.items()})
    x = _prepare_features(src.Labeled(x, y, []), dc, shape, idx["train"], info)
    mean, std = y[idx["train"]].mean(0), y[idx["train"]].std(0).clamp_min(1e-6)
    info.target_mean, info.target_std = mean.tolist(), std.tolist()
    y = (y - mean) / std
    return ({s: x[i] for s, i in idx.items()}, {s: y[i].contiguous() for s, i in idx.items()}), info


# ---- language modelling -------------------------------------------------------------------------
def _lm(dc: DataConfig, model: Model):
    """lm: windows of the corpus and the same shifted by one token; mlm: windows and themselves
    (the loop masks them, train/mlm.py)."""
    if model.input.kind != "tokens":
        raise LayerwiseError(f"model {model.name!r} has task {model.task!r} but takes {model.input.kind} inputs, "
                             f"not tokens")
    seq, mlm = model.input.shape[0], model.task == "mlm"
    vocab = model.input.vocab_size - 1 if mlm else model.input.vocab_size  # mlm: the last id is [MASK]
    if mlm and dc.tokenizer == "byte" and vocab < 256:
        raise LayerwiseError(f"masked-LM on byte-level text needs vocab_size >= 257 (256 bytes + [MASK]); model "
                             f"{model.name!r} has {model.input.vocab_size}")
    if dc.source == "pystdlib":
        text = src.read_pystdlib(dc.max_bytes)
    else:
        path = Path(dc.source)
        if dc.source in src.BUILTINS:
            raise LayerwiseError(f"data {dc.source!r} is a classification dataset; a language model needs a text corpus")
        if not path.exists():
            raise LayerwiseError(f"data {dc.source!r}: no such file or folder, and not a built-in corpus (pystdlib)")
        text = src.read_corpus(path)
    n_chars = len(text)
    cut_test, cut_val = int(n_chars * (1 - dc.test_fraction)), int(n_chars * (1 - dc.test_fraction - dc.val_fraction))
    parts = {"train": text[:cut_val], "val": text[cut_val:cut_test], "test": text[cut_test:]}
    tok = make_tokenizer(dc.tokenizer, vocab, [parts["train"]], f"data {dc.source!r}")
    xs, ys, sizes = {}, {}, {}
    for split, part in parts.items():
        ids = torch.tensor(tok.encode(part), dtype=torch.int64)
        n_win = (len(ids) - 1) // seq  # windows of seq + 1 tokens, consecutive ones share one token
        if n_win == 0 and (split == "train" or (split == "val" and dc.val_fraction > 0) or (split == "test" and dc.test_fraction > 0)):
            raise LayerwiseError(f"data {dc.source!r}: the {split} split has {len(ids)} tokens, fewer than one sequence "
                                 f"of {seq + 1} (the model's {seq} inputs + 1 target); use a larger corpus")
        win = ids[: n_win * seq + 1]
        xs[split] = win[:-1].view(n_win, seq) if n_win else torch.zeros(0, seq, dtype=torch.int64)
        ys[split] = (win[:-1] if mlm else win[1:]).view(n_win, seq) if n_win else torch.zeros(0, seq, dtype=torch.int64)
        sizes[split] = n_win
    info = DataInfo(source=dc.source, task=model.task, input_kind="tokens", sizes=sizes, vocab_size=tok.vocab_size,
                    tokenizer=tok.kind, seq_len=seq, tokenizer_json=tok.to_json(), mask_id=tok.vocab_size if mlm else None)
    return (xs, ys), info


# ---- sequence to sequence -----------------------------------------------------------------------
def _seq2seq(dc: DataConfig, model: Model):
    """A built-in generated task (layerwise.train.seq2seq_data) at the model's sequence length."""
    from layerwise.train import seq2seq_data

    if dc.source not in seq2seq_data.TASKS:
        raise LayerwiseError(f"data {dc.source!r}: model {model.name!r} is an encoder-decoder; it trains on a built-in "
                             f"sequence-to-sequence task ({', '.join(seq2seq_data.TASKS)})")
    seq = model.input.shape[0]
    x, y = seq2seq_data.make_pairs(dc.source, seq, model.input.vocab_size, dc.seed)
    idx = _split_indices(len(y), dc)
    info = DataInfo(source=dc.source, task="seq2seq", input_kind="tokens", sizes={s: len(i) for s, i in idx.items()},
                    vocab_size=model.input.vocab_size, seq_len=seq)
    return ({s: x[i] for s, i in idx.items()}, {s: y[i] for s, i in idx.items()}), info
