"""A real (non-fake) step in a fresh subprocess, so its RSS is not mixed with this process's history.

`measure_real_subprocess(model, workload)` writes the spec and workload as JSON to a temp file,
runs `python -m layerwise.measure.run_real IN OUT` with glibc pinned to return freed memory
(`procmem.CLEAN_MALLOC_ENV`), and reads the StepMeasurement back. Only spec models (serialisable
through layerwise.spec.io) can cross the process boundary.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from layerwise.measure.procmem import CLEAN_MALLOC_ENV
from layerwise.measure.result import CudaStats, RssStats, StepMeasurement
from layerwise.spec.errors import LayerwiseError
from layerwise.workload import Workload


def measure_real_subprocess(model, workload: Workload, *, timeout: float = 600.0,
                            threads: int | None = None) -> StepMeasurement:
    from layerwise.measure.budget import check_run
    from layerwise.spec.io import to_data

    check_run("measure --real", model, workload, real=True)  # before a process is started
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in.json"), Path(tmp, "out.json")
        src.write_text(json.dumps({"model": to_data(model), "workload": asdict(workload)}))
        env = {**os.environ, **CLEAN_MALLOC_ENV, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        proc = subprocess.run([sys.executable, "-m", "layerwise.measure.run_real", str(src), str(dst)],
                              env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not dst.exists():
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            raise LayerwiseError("measure --real subprocess failed: " + " | ".join(tail))
        return _from_json(json.loads(dst.read_text()))


def _from_json(data: dict) -> StepMeasurement:
    rss = data.pop("rss", None)
    cuda = data.pop("cuda", None)
    data["notes"] = tuple(data.get("notes", ()))
    return StepMeasurement(**data, rss=RssStats(**rss) if rss else None, cuda=CudaStats(**cuda) if cuda else None)


def _to_json(result: StepMeasurement) -> dict:
    out = asdict(result)
    out["notes"] = list(result.notes)
    return out


def main(argv: list[str]) -> int:
    from layerwise.measure.step import measure_step
    from layerwise.spec.io import from_data

    data = json.loads(Path(argv[0]).read_text())
    workload = data["workload"]
    if workload.get("image") is not None:
        workload["image"] = tuple(workload["image"])
    result = measure_step(from_data(data["model"]), Workload(**workload), fake=False)
    Path(argv[1]).write_text(json.dumps(_to_json(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
