"""Checksums and validated reads of the files in a run directory (docs/RUNS.md).

Every folder of a run that holds artefacts (the run's top level, each checkpoint, merged/,
compressed/..., export/...) has a `manifest.json`: {"files": {NAME: {"sha256": HEX, "bytes": N}}}.
A checkpoint's manifest is written inside its temp folder before the folder is renamed into place,
so it is published atomically with the files it describes. Reading a file from a run verifies it
first; a truncated, bit-flipped or hand-edited file is one LayerwiseError naming it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from layerwise.spec.errors import LayerwiseError

MANIFEST = "manifest.json"


class DamagedFileError(LayerwiseError):
    """A file of a run directory that is missing, truncated, corrupted or edited by hand."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: Path, what: str = "JSON file") -> object:
    """json.loads of a file, any failure as one error naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DamagedFileError(f"{path}: missing ({what})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DamagedFileError(f"{path}: cannot be read as text ({what}): {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DamagedFileError(f"{path}: not valid JSON ({what}), line {err.lineno}: {err.msg}") from None


def manifest(folder: Path) -> dict[str, dict]:
    """{name: {"sha256", "bytes"}} of folder/manifest.json ({} if the folder has none)."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return {}
    data = read_json(path, "checksums")
    files = data.get("files") if isinstance(data, dict) else None
    ok = isinstance(files, dict) and all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("bytes"), int)
        for v in files.values())
    if not ok:
        raise DamagedFileError(f"{path}: expected {{\"files\": {{NAME: {{\"sha256\": HEX, \"bytes\": N}}}}}}")
    return files


def record(folder: Path, *names: str) -> None:
    """Add (or refresh) the checksums of folder/NAME for each name in folder/manifest.json."""
    from layerwise.train.checkpoint import atomic_write_text

    folder = Path(folder)
    files = manifest(folder)
    for name in names:
        p = folder / name
        files[name] = {"sha256": sha256(p), "bytes": p.stat().st_size}
    atomic_write_text(folder / MANIFEST, json.dumps({"files": dict(sorted(files.items()))}, indent=2) + "\n")


def forget(folder: Path, *names: str) -> None:
    from layerwise.train.checkpoint import atomic_write_text

    files = manifest(folder)
    if any(n in files for n in names):
        files = {k: v for k, v in files.items() if k not in names}
        atomic_write_text(Path(folder) / MANIFEST, json.dumps({"files": files}, indent=2) + "\n")


def verify(path: Path) -> None:
    """Raise DamagedFileError naming `path` unless it matches its entry in its folder's manifest."""
    path = Path(path)
    entry = manifest(path.parent).get(path.name)
    if entry is None:
        raise DamagedFileError(f"{path}: no checksum in {path.parent / MANIFEST} (written by hand, by an older "
                               f"layerwise, or the manifest is damaged)")
    if not path.exists():
        raise DamagedFileError(f"{path}: missing (the manifest lists it)")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise DamagedFileError(f"{path}: {size:,} bytes, {MANIFEST} says {entry['bytes']:,} (truncated, replaced, "
                               f"or the manifest is damaged)")
    if sha256(path) != entry["sha256"]:
        raise DamagedFileError(f"{path}: sha256 differs from {MANIFEST} (corrupted or edited, or the manifest is)")
