"""How long the measure reading takes under FakeTensorMode for ~7B-parameter steps, and what it finds.

    .venv/bin/python bench/measure_speed.py [--quick]

Prints one row per (model, workload): parameters, the peak and its phase, bytes per parameter, and
the wall time of `measure_step` (warm-up + measured step + FLOP counting). Not run by the tests.
"""
from __future__ import annotations

import sys
import time

from layerwise.blocks import Linear, Repeat
from layerwise.measure.step import measure_step
from layerwise.spec.model import InputSpec, Model
from layerwise.workload import Workload


def linear_7b() -> Model:
    # 417 x Linear(4096, 4096) = 6,997,807,104 parameters, 512 tokens of width 4096 per sample
    return Model(name="417 x linear 4096", body=Repeat(block=Linear(d_in=4096, d_out=4096), n_layers=417),
                 input=InputSpec(kind="sequence", shape=(512, 4096)), task="none")


def llama_7b():
    try:
        from layerwise.presets import get_preset
    except ImportError:
        return None
    return get_preset("llama-2-7b")


def cases(quick: bool):
    lin = linear_7b()
    yield lin, Workload(batch=1, optimizer_impl="loop")
    yield lin, Workload(batch=1, optimizer_impl="foreach")
    if not quick:
        yield lin, Workload(batch=1, optimizer_impl="fused")
        yield lin, Workload(batch=1, precision="bf16-mixed")
    llama = llama_7b()
    if llama is not None:
        yield llama, Workload(batch=1, seq=512)
        if not quick:
            yield llama, Workload(batch=1, seq=512, optimizer_impl="foreach")
            yield llama, Workload(batch=1, seq=4096, precision="bf16-mixed", checkpointing="full")
            yield llama, Workload(batch=1, seq=4096, mode="infer")


def describe(w: Workload) -> str:
    extra = [] if w.checkpointing == "none" else [f"ckpt {w.checkpointing}"]
    if w.mode == "infer":
        return f"infer b{w.batch} s{w.seq} {w.precision}"
    return " ".join([f"b{w.batch}", f"s{w.seq}" if w.seq else "", w.precision, f"{w.optimizer}/{w.impl}", *extra])


def main(argv: list[str]) -> int:
    rows = []
    for model, workload in cases("--quick" in argv):
        start = time.perf_counter()
        r = measure_step(model, workload)
        seconds = time.perf_counter() - start
        n = model.params().total
        rows.append((model.name, f"{n / 1e9:.2f}B", describe(workload), f"{r.peak_bytes / 2**30:.2f}",
                     r.peak_phase, f"{r.peak_bytes / n:.2f}", f"{seconds:.1f}"))
    header = ("model", "params", "workload", "peak GiB", "phase", "B/param", "seconds")
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
