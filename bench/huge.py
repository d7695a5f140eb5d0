"""Absurd sizes (issue #15): a spec with 2**31 experts, one with 10**6 layers, one with both, each
read by summary, flops and memory. Times the reading in process (main(), imports done: what the
size costs) and as a user runs it (a new process: Python and the imports included), with the CPU
seconds of that process (the machine is shared, so wall time varies with its load).

    .venv/bin/python bench/huge.py

The exact numbers are checked in tests/cost/test_huge_specs.py; this prints the times only.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from layerwise.cli import main
from layerwise.presets import get_preset
from layerwise.spec.io import dump

LAYERWISE = str(Path(sys.executable).with_name("layerwise"))
SMALL = dict(d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, vocab_size=100)
CASES = [
    ("n_experts: 2147483648", "mixtral-8x7b", dict(SMALL, n_layers=2, n_experts=2**31)),
    ("n_layers: 1000000", "llama-2-7b", dict(SMALL, n_layers=10**6, n_experts=None)),
    ("both", "mixtral-8x7b", dict(SMALL, n_layers=10**6, n_experts=2**31)),
]
COMMANDS = ("summary", "flops", "memory")


def _in_process(args: list[str]) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args) == 0, args
    return time.perf_counter() - start


def _new_process(args: list[str]) -> tuple[float, float]:
    before, start = os.times(), time.perf_counter()
    subprocess.run([LAYERWISE, *args], check=True, capture_output=True)
    after = os.times()
    return time.perf_counter() - start, (after.children_user - before.children_user) + (
        after.children_system - before.children_system)


def main_() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="layerwise-huge-"))
    _in_process(["summary", "tiny-gpt", "--json"])  # imports done once
    print("| spec | command | in process | new process (wall) | new process (CPU) |")
    print("|---|---|---|---|---|")
    for label, preset, kw in CASES:
        path = tmp / f"{label.split(':')[0]}.yaml"
        dump(get_preset(preset, **{k: v for k, v in kw.items() if v is not None}), path)
        for command in COMMANDS:
            inner = _in_process([command, str(path), "--json"])
            wall, cpu = _new_process([command, str(path), "--json"])
            print(f"| {label} | {command} | {inner * 1000:.0f} ms | {wall * 1000:.0f} ms | {cpu * 1000:.0f} ms |")


if __name__ == "__main__":
    main_()
