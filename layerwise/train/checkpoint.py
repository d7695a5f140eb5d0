"""Atomic files and checkpoints (format: docs/RUNS.md).

A file is written to a temp name in the same folder, fsynced, then renamed over the target, so a
reader sees the old file or the new one, never a torn one. A checkpoint folder is filled under a
temp name and renamed into place the same way.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import uuid
from pathlib import Path

import torch

from layerwise.spec.errors import LayerwiseError
from layerwise.train import integrity

STEP_DIR = re.compile(r"^step-(\d+)$")


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = state.get("python")
    if py is not None:
        random.setstate((py[0], tuple(py[1]), py[2]))


def save_checkpoint(ckpt_root: Path, name: str, module_state: dict, state: dict) -> Path:
    """Write ckpt_root/name/{model.safetensors, state.pt} atomically; returns the folder."""
    from safetensors.torch import save_file

    ckpt_root.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    save_file(_unshare(module_state), str(tmp / "model.safetensors"))
    torch.save(state, tmp / "state.pt")
    integrity.record(tmp, "model.safetensors", "state.pt")  # published with the files, atomically
    return _publish(tmp, ckpt_root, name)


def copy_checkpoint(ckpt_root: Path, src: str, dst: str) -> None:
    """best/ and last/ are full copies (no symlinks: they survive pruning and copying the run)."""
    tmp = ckpt_root / f".tmp-{dst}-{uuid.uuid4().hex[:8]}"
    shutil.copytree(ckpt_root / src, tmp)
    _publish(tmp, ckpt_root, dst)


def _publish(tmp: Path, ckpt_root: Path, name: str) -> Path:
    """Make the finished temp directory `tmp` the checkpoint `name`: its files and the directory
    synced first, then renamed into place (an old one is moved aside, then removed), so a crash
    leaves the old or the new checkpoint, never half of one."""
    for f in tmp.iterdir():
        _fsync_file(f)
    fsync_dir(tmp)
    final = ckpt_root / name
    if final.exists():
        trash = ckpt_root / f".old-{name}-{uuid.uuid4().hex[:8]}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(ckpt_root)
    return final


def _unshare(state: dict) -> dict:
    """safetensors refuses tensors sharing storage (tied embeddings): keep the first name of each
    storage; load_module_state restores the tie by loading with strict=False and checking."""
    seen, out = {}, {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)) if v.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = k
        out[k] = v.detach().contiguous().cpu()
    return out


def step_dirs(ckpt_root: Path) -> list[tuple[int, Path]]:
    if not ckpt_root.exists():
        return []
    out = [(int(m.group(1)), p) for p in ckpt_root.iterdir() if (m := STEP_DIR.match(p.name))]
    return sorted(out)


def prune(ckpt_root: Path, keep_last: int) -> None:
    for _, p in step_dirs(ckpt_root)[:-keep_last]:
        shutil.rmtree(p, ignore_errors=True)
    for p in ckpt_root.glob(".old-*"):
        shutil.rmtree(p, ignore_errors=True)


def read_checkpoint(folder: Path) -> tuple[dict, dict]:
    """(tensors by name, state) from a checkpoint folder, each file checked against the folder's
    manifest first; state is loaded with weights_only=True. A damaged file is one DamagedFileError."""
    model_file, state_file = folder / "model.safetensors", folder / "state.pt"
    if not model_file.exists():
        raise LayerwiseError(f"{folder}: no model.safetensors (not a checkpoint folder)")
    integrity.verify(model_file)
    tensors = read_tensors(model_file)
    if not state_file.exists():
        return tensors, {}
    integrity.verify(state_file)
    return tensors, read_state(state_file)


def check_checkpoint(folder: Path) -> dict:
    """Verify a checkpoint's files and read its state (cheap next to loading the weights) -> state."""
    integrity.verify(folder / "model.safetensors")
    integrity.verify(folder / "state.pt")
    return read_state(folder / "state.pt")


def read_tensors(path: Path) -> dict:
    """safetensors.load_file, a damaged file as one error naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise integrity.DamagedFileError(f"{path}: not a readable safetensors file: {err}") from None


_STATE_KEYS = {"step": int, "epoch": int, "batch_in_epoch": int, "rng": dict}


def read_state(path: Path) -> dict:
    """torch.load(weights_only=True) of a state.pt: plain data only, never arbitrary pickles."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the error says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise integrity.DamagedFileError(f"{path}: not a loadable checkpoint state (torch.load with "
                                         f"weights_only=True): {first}") from None
    bad = [k for k, t in _STATE_KEYS.items() if not isinstance(state, dict) or not isinstance(state.get(k), t)]
    if bad:
        raise integrity.DamagedFileError(f"{path}: expected a mapping with {', '.join(bad)} "
                                         f"({', '.join(t.__name__ for t in _STATE_KEYS.values())})")
    return state


def load_module_state(module: torch.nn.Module, tensors: dict, where: str) -> None:
    """Load tensors by name; a name missing from the file is allowed only if it shares storage with
    one that is present (a tied weight)."""
    try:
        result = module.load_state_dict(tensors, strict=False)
    except RuntimeError as err:  # shapes that differ from the spec's
        lines = [ln.strip() for ln in str(err).splitlines() if "size mismatch" in ln]
        raise LayerwiseError(f"{where}: the checkpoint does not fit the model: {(lines or [str(err)])[0]}") from None
    if result.unexpected_keys:
        raise LayerwiseError(f"{where}: the checkpoint has tensors the model does not: {result.unexpected_keys[:5]}")
    params = dict(module.named_parameters(remove_duplicate=False))
    tied = {id(p) for n, p in params.items() if n in tensors}
    missing = [k for k in result.missing_keys if not (k in params and id(params[k]) in tied)]
    if missing:
        raise LayerwiseError(f"{where}: the checkpoint lacks tensors the model needs: {missing[:5]}")
