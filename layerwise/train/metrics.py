"""metrics.jsonl + metrics.csv, appended row by row (rank 0). On resume, rows after the resumed step
are dropped (rewritten atomically), so the log reads as one uninterrupted run."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from layerwise.train.checkpoint import atomic_write_text

COLUMNS = ("step", "epoch", "kind", "loss", "lr", "accuracy", "perplexity", "grad_norm", "samples_per_s", "time_s",
           "expert_counts", "overflow_rate")  # MoE: the last micro-batch's pairs per expert (all layers), dropped share


class MetricsLog:
    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = False):
        self.jsonl, self.csv = run_dir / "metrics.jsonl", run_dir / "metrics.csv"
        self.enabled = enabled
        self.tb = _tensorboard(run_dir) if (enabled and tensorboard) else None
        if enabled and not self.csv.exists():
            atomic_write_text(self.csv, ",".join(COLUMNS) + "\n")
            atomic_write_text(self.jsonl, "")

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        row = {k: row[k] for k in COLUMNS if row.get(k) is not None}
        with open(self.jsonl, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        with open(self.csv, "a", newline="") as fh:
            csv.writer(fh).writerow([_fmt(row.get(k)) for k in COLUMNS])
        if self.tb is not None:
            for k in ("loss", "lr", "accuracy", "perplexity", "grad_norm", "samples_per_s"):
                if row.get(k) is not None:
                    self.tb.add_scalar(f"{row['kind']}/{k}", row[k], row["step"])
            self.tb.flush()

    def truncate_after(self, step: int) -> list[str]:
        """Keep only rows with step <= `step` (the resumed checkpoint's) -> warnings (a torn last row)."""
        if not self.enabled or not self.jsonl.exists():
            return []
        rows, warned = read_rows(self.jsonl)
        rows = [r for r in rows if r["step"] <= step]
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in rows))
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([_fmt(r.get(k)) for k in COLUMNS])
        atomic_write_text(self.csv, buf.getvalue())
        return warned


def read_rows(path: Path) -> tuple[list[dict], list[str]]:
    """The rows of a metrics.jsonl, each checked: a JSON object with an integer step, a kind and
    numbers. A last line without its newline is what a killed run leaves mid-append: dropped, with a
    warning; any other bad line is an error naming the file and line."""
    from layerwise.train.integrity import DamagedFileError

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DamagedFileError(f"{path}: cannot be read as text: {err}") from None
    lines, warned = text.split("\n"), []
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:  # the torn last append of a killed run
        warned.append(f"{path}: dropped an incomplete last line ({len(lines[-1])} bytes) left by a killed run")
        lines.pop()
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DamagedFileError(f"{path}:{n}: not a JSON row ({err.msg})") from None
        if not _valid_row(row):
            raise DamagedFileError(f"{path}:{n}: expected {{\"step\": int, \"kind\": train|val|test, numbers...}}, "
                                   f"got {line[:80]}")
        rows.append(row)
    return rows, warned


def _valid_row(row) -> bool:
    if not isinstance(row, dict) or set(row) - set(COLUMNS):
        return False
    if type(row.get("step")) is not int or type(row.get("epoch", 0)) is not int or row.get("kind") not in ("train", "val", "test"):
        return False
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in row.items() if k not in ("kind",))


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from layerwise.spec.errors import LayerwiseError

        raise LayerwiseError("tensorboard: true needs the tensorboard package (pip install tensorboard)") from None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
