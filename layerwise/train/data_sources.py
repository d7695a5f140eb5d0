"""Readers: each turns one kind of source into in-memory tensors, before any split.

Nothing here downloads: built-in datasets come from scikit-learn's bundled files (digits, wine,
breast-cancer) or the Python standard library's own .py sources (pystdlib, pystdlib-lines).
Images come out as float (N, C, H, W) in [0, 1]; tabular as float (N, F); text as str lists or one
long str. Labels are int64 class ids into `class_names` (sorted, so the mapping is stable).
"""
from __future__ import annotations

import csv
import io
import json
import sysconfig
import tokenize
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from layerwise.spec.errors import LayerwiseError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
BUILTIN_IMAGES = ("digits", "digits-imbalanced")
BUILTIN_TABULAR = ("wine", "breast-cancer")
BUILTIN_LM = ("pystdlib",)
BUILTIN_TEXT_CLS = ("pystdlib-lines",)
BUILTIN_REGRESSION = ("diabetes",)
BUILTINS = BUILTIN_IMAGES + BUILTIN_TABULAR + BUILTIN_LM + BUILTIN_TEXT_CLS + BUILTIN_REGRESSION


@dataclass
class Labeled:
    """Samples before splitting: x is a tensor (images, features) or a list of str (texts)."""

    x: object
    y: torch.Tensor  # (N,) int64
    class_names: list[str]
    builtin: bool = False


# ---- images -------------------------------------------------------------------------------------
def _sklearn_file(name: str) -> Path:
    """A data file scikit-learn ships (read directly: importing sklearn costs seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise LayerwiseError("built-in datasets digits/wine/breast-cancer need scikit-learn installed")
    return Path(spec.origin).parent / "datasets" / "data" / name


def read_digits() -> Labeled:
    """sklearn's digits: 1797 8x8 images, intensities 0..16 (the file load_digits reads)."""
    import gzip

    with gzip.open(_sklearn_file("digits.csv.gz"), "rt") as fh:
        arr = np.loadtxt(fh, delimiter=",", dtype=np.float32)  # (1797, 65): 64 pixels + class
    x = torch.from_numpy(arr[:, :-1].copy()).view(-1, 1, 8, 8) / 16.0
    y = torch.from_numpy(arr[:, -1].astype(np.int64))
    return Labeled(x, y, [str(c) for c in range(10)], True)


IMBALANCE_FACTOR = 20  # digits-imbalanced: the largest class has 20x the samples of the smallest
IMBALANCE_MAX = 160  # samples kept of class 0 (every digits class has at least 174)


def read_digits_imbalanced() -> Labeled:
    """digits with a long tail: class c keeps its first round(160 * 20**(-c/9)) samples (160 of 0s ...
    8 of 9s, 597 in all), the exponential profile with imbalance factor 20 of Cui et al. 2019
    ("Class-Balanced Loss Based on Effective Number of Samples", CIFAR-10-LT)."""
    full = read_digits()
    keep = []
    for c in range(10):
        n_c = round(IMBALANCE_MAX * IMBALANCE_FACTOR ** (-c / 9))
        keep.append(torch.nonzero(full.y == c).flatten()[:n_c])
    idx = torch.sort(torch.cat(keep)).values  # the file's order
    return Labeled(full.x[idx], full.y[idx], full.class_names, True)


def read_npz(path: Path, channels: int) -> Labeled:
    """An .npz with images under 'x' or 'images' ((N,H,W), (N,C,H,W) or (N,H,W,C)) and labels under
    'y' or 'labels'. uint8 images are scaled by 1/255; float images are taken as already in [0, 1]."""
    with np.load(path, allow_pickle=False) as z:
        xk = next((k for k in ("x", "images") if k in z), None)
        yk = next((k for k in ("y", "labels") if k in z), None)
        if xk is None or yk is None:
            raise LayerwiseError(f"{path}: expected arrays 'x' (or 'images') and 'y' (or 'labels'), found {sorted(z.files)}")
        x, y = z[xk], z[yk]
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] != channels and x.shape[-1] == channels:
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4:
        raise LayerwiseError(f"{path}: images must be (N,H,W), (N,C,H,W) or (N,H,W,C), got shape {x.shape}")
    if len(x) != len(y):
        raise LayerwiseError(f"{path}: {len(x)} images but {len(y)} labels")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    xt = torch.tensor(np.ascontiguousarray(x), dtype=torch.float32) / scale
    ids, names = _encode_labels([str(v) for v in y.tolist()])
    return Labeled(xt, ids, names)


def read_image_folder(root: Path, channels: int, size: tuple[int, int], resize: bool,
                      resize_mode: str = "stretch") -> Labeled:
    """root/<class name>/<image files>. Every image is converted to `channels` (L or RGB) and must
    already be `size` (H, W) unless `resize` (bilinear)."""
    from PIL import Image

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise LayerwiseError(f"{root}: expected one sub-folder per class holding images, found none")
    xs, ys = [], []
    for ci, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            with Image.open(f) as im:
                im = im.convert("L" if channels == 1 else "RGB")
                arr = np.asarray(im, dtype=np.float32) / 255.0
            t = torch.from_numpy(arr.copy())
            t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)  # (C, H, W)
            if tuple(t.shape[1:]) != tuple(size):
                if not resize:
                    raise LayerwiseError(f"{f}: image is {t.shape[2]}x{t.shape[1]} (WxH) but the model takes "
                                         f"{size[1]}x{size[0]}; pass --resize to resize bilinearly")
                t = resize_images(t[None], size, resize_mode)[0]
            xs.append(t)
            ys.append(ci)
    if not xs:
        raise LayerwiseError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
    return Labeled(torch.stack(xs), torch.tensor(ys, dtype=torch.int64), classes)


def resize_images(x: torch.Tensor, size: tuple[int, int], mode: str = "stretch") -> torch.Tensor:
    """(N, C, H, W) -> (N, C, *size), bilinear (align_corners=False, as PIL and torchvision do).
    stretch: straight to size; shorter-side: the shorter side to its target and the other by the same
    factor (the aspect ratio kept), then the centre crop of size - the ViT/ResNet evaluation pipeline
    (torchvision Resize(int) + CenterCrop), with one scale for both sides so that the crop covers size."""
    if mode == "stretch":
        return torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    h, w = x.shape[2:]
    th, tw = size
    scale = max(th / h, tw / w)
    rh, rw = max(th, round(h * scale)), max(tw, round(w * scale))
    x = torch.nn.functional.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False)
    top, left = (rh - th) // 2, (rw - tw) // 2
    return x[:, :, top:top + th, left:left + tw].contiguous()


# ---- tabular ------------------------------------------------------------------------------------
def read_sklearn_tabular(name: str) -> Labeled:
    """wine (178 x 13, 3 classes) or breast-cancer (569 x 30, 2 classes): the CSV files sklearn's
    load_wine / load_breast_cancer read; their first row is n_samples, n_features, class names."""
    fname = {"wine": "wine_data.csv", "breast-cancer": "breast_cancer.csv"}[name]
    with open(_sklearn_file(fname)) as fh:
        head = next(csv.reader(fh))
        arr = np.loadtxt(fh, delimiter=",", dtype=np.float64)
    n, f = int(head[0]), int(head[1])
    if arr.shape != (n, f + 1):
        raise LayerwiseError(f"{fname}: expected {n} rows of {f} features + label, got {arr.shape}")
    x = torch.tensor(arr[:, :f], dtype=torch.float32)
    return Labeled(x, torch.tensor(arr[:, f], dtype=torch.int64), head[2:], True)


def read_sklearn_regression(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """diabetes (Efron et al. 2004): 442 x 10 raw features (age, sex, bmi, bp, s1..s6) and a disease
    progression score one year later (25..346), the files sklearn's load_diabetes(scaled=False) reads."""
    import gzip

    with gzip.open(_sklearn_file("diabetes_data_raw.csv.gz"), "rt") as fh:
        x = np.loadtxt(fh, dtype=np.float32)
    with gzip.open(_sklearn_file("diabetes_target.csv.gz"), "rt") as fh:
        y = np.loadtxt(fh, dtype=np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)


def read_csv_regression(path: Path, label_column: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A CSV with a header: `label_column` holds the real target, every other column a number."""
    rows = _csv_rows(path, label_column)
    cols = [c for c in rows[0] if c != label_column] + [label_column]
    arr = np.empty((len(rows), len(cols)), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, c in enumerate(cols):
            try:
                arr[i, j] = float(row[c])
            except (TypeError, ValueError):
                raise LayerwiseError(f"{path}:{i + 2}: column {c!r} must be a number, got {row[c]!r}") from None
    return torch.from_numpy(arr[:, :-1].copy()), torch.from_numpy(arr[:, -1].copy())


def read_csv_table(path: Path, label_column: str) -> Labeled:
    """A CSV with a header; `label_column` holds the class, every other column a number."""
    rows = _csv_rows(path, label_column)
    feats = [c for c in rows[0] if c != label_column]
    x = np.empty((len(rows), len(feats)), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, c in enumerate(feats):
            try:
                x[i, j] = float(row[c])
            except (TypeError, ValueError):
                raise LayerwiseError(f"{path}:{i + 2}: column {c!r} must be a number, got {row[c]!r}") from None
    ids, names = _encode_labels([row[label_column] for row in rows])
    return Labeled(torch.from_numpy(x), ids, names)


def _csv_rows(path: Path, *required: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for col in required:
            if col not in header:
                raise LayerwiseError(f"{path}: no column {col!r} (columns: {', '.join(header) or 'none'}); "
                                     f"name it with --label-column/--text-column")
        rows = list(reader)
    if not rows:
        raise LayerwiseError(f"{path}: no data rows")
    return rows


# ---- text ---------------------------------------------------------------------------------------
def read_text_labeled(path: Path, text_column: str, label_column: str) -> Labeled:
    """JSONL ({"text": ..., "label": ...} per line) or CSV with text and label columns."""
    if path.suffix == ".jsonl":
        texts, labels = [], []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise LayerwiseError(f"{path}:{i + 1}: invalid JSON: {err.msg}") from None
            if text_column not in obj or label_column not in obj:
                raise LayerwiseError(f"{path}:{i + 1}: expected keys {text_column!r} and {label_column!r}, got {sorted(obj)}")
            texts.append(str(obj[text_column]))
            labels.append(str(obj[label_column]))
    else:
        rows = _csv_rows(path, text_column, label_column)
        texts = [r[text_column] for r in rows]
        labels = [r[label_column] for r in rows]
    if not texts:
        raise LayerwiseError(f"{path}: no samples")
    ids, names = _encode_labels(labels)
    return Labeled(texts, ids, names)


def read_corpus(path: Path) -> str:
    """A plain-text file, or every .txt/.py/.md file under a folder (sorted, joined)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".py", ".md") and p.is_file())
        if not files:
            raise LayerwiseError(f"{path}: no .txt, .py or .md files in this folder")
        return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    return path.read_text(encoding="utf-8", errors="replace")


def stdlib_files() -> list[Path]:
    """The standard library's own .py files, sorted, tests and site-packages left out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__")
    return sorted(p for p in root.rglob("*.py") if not any(part in skip for part in p.relative_to(root).parts))


def read_pystdlib(max_bytes: int) -> str:
    out, size = [], 0
    for p in stdlib_files():
        text = p.read_text(encoding="utf-8", errors="replace")
        out.append(text)
        size += len(text)
        if size >= max_bytes:
            break
    return "\n".join(out)[:max_bytes]


def read_pystdlib_lines(max_bytes: int, per_class: int = 3000) -> Labeled:
    """A 2-class text task from stdlib sources: a line of code, or the text of a comment (>= 16
    chars each); the '#' is removed and code lines holding a '#' are left out, so the class is not
    given away by one character."""
    names = ["code", "comment"]
    buckets: list[list[str]] = [[], []]
    size = 0
    for p in stdlib_files():
        src = p.read_text(encoding="utf-8", errors="replace")
        size += len(src)
        try:
            toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
        except (tokenize.TokenError, SyntaxError, IndentationError):
            continue
        for t in toks:
            if t.type == tokenize.COMMENT:
                text = t.string.lstrip("#!:").strip()
                if len(text) >= 16:
                    buckets[1].append(text)
        for line in src.splitlines():
            s = line.strip()
            if len(s) >= 16 and "#" not in s and not s.startswith(("'", '"')):
                buckets[0].append(s)
        if size >= max_bytes and all(len(b) >= per_class for b in buckets):
            break
    texts, labels = [], []
    for ci, b in enumerate(buckets):
        for text in b[:per_class]:
            texts.append(text)
            labels.append(ci)
    return Labeled(texts, torch.tensor(labels, dtype=torch.int64), names, True)


def _encode_labels(values: list[str]) -> tuple[torch.Tensor, list[str]]:
    """Class names sorted (numerically if all are integers), ids by that order."""
    uniq = sorted(set(values), key=lambda v: (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v))
    index = {v: i for i, v in enumerate(uniq)}
    return torch.tensor([index[v] for v in values], dtype=torch.int64), uniq
