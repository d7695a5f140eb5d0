"""metrics.jsonl + metrics.csv, appended row by row (rank 0). On resume, rows after the resumed step
are dropped (rewritten atomically), so the log reads as one uninterrupted run."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from layerwise.train.checkpoint import atomic_write_text

COLUMNS = ("step", "epoch", "kind", "loss", "lr", "accuracy", "perplexity", "grad_norm", "samples_per_s", "time_s")


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

    def truncate_after(self, step: int) -> None:
        """Keep only rows with step <= `step` (the resumed checkpoint's)."""
        if not self.enabled or not self.jsonl.exists():
            return
        rows = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r.get("step", 0) <= step]
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in rows))
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([_fmt(r.get(k)) for k in COLUMNS])
        atomic_write_text(self.csv, buf.getvalue())


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
