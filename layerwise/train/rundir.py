"""Who owns a run directory, and what state its run is in (docs/RUNS.md).

One process writes a run directory at a time: `Owner` takes an exclusive `flock` on RUN_DIR/.lock
and writes its pid there. The kernel drops the lock when the process ends, however it ends (kill -9
included), so a lock left by a dead process is never mistaken for a live one; a second writer is
refused in one line naming the pid that holds it. status.json records the run's state: running,
then finished / early_stopped / interrupted / failed.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path

from layerwise.spec.errors import LayerwiseError
from layerwise.train.integrity import DamagedFileError, read_json

LOCK, STATUS = ".lock", "status.json"
STATES = ("running", "finished", "early_stopped", "interrupted", "failed")
_RUN_FILES = ("spec.yaml", "config.yaml", "checkpoints", STATUS, "metrics.jsonl", "result.json")


class Owner:
    """Context manager: the exclusive lock on a run directory (a no-op when `enabled` is False, i.e.
    on ranks other than 0)."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir, self.enabled, self.fd = Path(run_dir), enabled, None
        self.created = False  # this process made the directory (removed again if nothing was written)

    def __enter__(self) -> "Owner":
        if not self.enabled:
            return self
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise LayerwiseError(f"--out {self.run_dir}: is a file, not a run directory")
        self.created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LayerwiseError(f"{self.run_dir} is in use by process {holder} (a run is writing it); wait for it "
                                 f"to end or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
            if self.created and [p.name for p in self.run_dir.iterdir()] == [LOCK]:  # refused before writing
                (self.run_dir / LOCK).unlink()
                self.run_dir.rmdir()

    def set_status(self, status: str, **extra) -> None:
        from layerwise.train.checkpoint import atomic_write_text

        if not self.enabled:
            return
        assert status in STATES, status
        row = {"status": status, "pid": os.getpid(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
        atomic_write_text(self.run_dir / STATUS, json.dumps(row, indent=2) + "\n")

    def prepare(self, resume: bool, overwrite: bool) -> list[str]:
        """Refuse, clear or keep what RUN_DIR holds; remove temp files a killed run left -> notes."""
        if not self.enabled:
            return []
        if resume and overwrite:
            raise LayerwiseError("--resume and --overwrite contradict each other: pass one")
        notes = []
        if resume and not holds_run(self.run_dir):
            raise LayerwiseError(f"{self.run_dir}: nothing to resume (no run there); pass the run's --out")
        if not resume and holds_run(self.run_dir):
            if not overwrite:
                state = status(self.run_dir) or "unknown"
                if state == "running":  # we hold the lock, so its writer is gone
                    state = "its process died while running (killed?)"
                raise LayerwiseError(f"{self.run_dir} holds a run (status: {state}); pass --resume to continue it, "
                                     f"--overwrite to replace it, or choose another --out")
            removed = clear(self.run_dir)
            notes.append(f"--overwrite: removed the previous run in {self.run_dir} ({removed} entries)")
        stale = clean_temps(self.run_dir)
        if stale:
            notes.append(f"removed {len(stale)} temporary file(s) an interrupted run left: {', '.join(stale[:3])}")
        return notes


def holds_run(run_dir: Path) -> bool:
    return any((Path(run_dir) / name).exists() for name in _RUN_FILES)


def status(run_dir: Path) -> str | None:
    """The recorded state of a run (None if it has no status.json)."""
    path = Path(run_dir) / STATUS
    if not path.exists():
        return None
    data = read_json(path, "run status")
    if not isinstance(data, dict) or data.get("status") not in STATES:
        raise DamagedFileError(f"{path}: expected {{\"status\": one of {', '.join(STATES)}}}")
    return data["status"]


def clear(run_dir: Path) -> int:
    """Remove everything in RUN_DIR but the lock (only ever asked for by --overwrite)."""
    n = 0
    for p in Path(run_dir).iterdir():
        if p.name == LOCK:
            continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        n += 1
    return n


def clean_temps(run_dir: Path) -> list[str]:
    """Temp files and folders (atomic writes, checkpoints being published) a killed run left."""
    run_dir = Path(run_dir)
    found = [p for p in (run_dir / "checkpoints").glob(".tmp-*")] + list((run_dir / "checkpoints").glob(".old-*"))
    for folder in (run_dir, run_dir / "merged"):
        found += [p for p in folder.glob(".*.tmp")]
    for p in found:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return [str(p.relative_to(run_dir)) for p in found]


def new_folder(root: Path, stem: str) -> Path:
    """root/stem-N for the first free N (created here, atomically), so a command run twice never
    overwrites what the first run wrote."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = 1 + max((int(p.name[len(stem) + 1:]) for p in root.glob(f"{stem}-*") if p.name[len(stem) + 1:].isdigit()),
                default=0)
    while True:
        folder = root / f"{stem}-{n}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            n += 1


def fresh_file(path: Path, flag: str = "--out") -> Path:
    """A file a command is asked to write: refused if something is there already."""
    path = Path(path)
    if path.exists():
        raise LayerwiseError(f"{flag} {path}: already exists; choose another path (earlier artefacts are never "
                             f"overwritten)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
