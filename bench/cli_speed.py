"""End-to-end wall time of the pure-Python cost path, as a user runs it (new process each time).

    .venv/bin/python bench/cli_speed.py

Prints the median and max of 5 runs per command; checks that no torch was imported along the way.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

LAYERWISE = str(Path(sys.executable).with_name("layerwise"))
COMMANDS = [
    ["summary", "llama-3-70b", "--json"],
    ["flops", "llama-3-70b", "--seq", "8192", "--json"],
    ["memory", "llama-3-70b", "--zero", "3", "--dp", "64", "--precision", "bf16-mixed", "--checkpointing", "full", "--json"],
    ["memory", "llama-2-7b", "--mode", "infer", "--seq", "4096", "--new-tokens", "512", "--json"],
    ["time", "llama-3-70b", "--gpu", "h100-sxm", "--gpus", "512", "--tp", "8", "--pp", "4", "--sp", "--seq", "8192",
     "--global-batch", "512", "--json"],
    ["plan", "llama-3-70b", "--gpu", "h100-sxm", "--gpus", "512", "--seq", "8192", "--json"],
]
NO_TORCH = ("import sys, io, contextlib; from layerwise.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main({args!r})\n"
            "print('torch' in sys.modules)")


def wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([LAYERWISE, *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    print(f"{'command':<100} {'median':>8} {'max':>8} torch")
    for args in COMMANDS:
        times = [wall(args) for _ in range(5)]
        torch_loaded = subprocess.run([sys.executable, "-c", NO_TORCH.format(args=args)], capture_output=True,
                                      text=True, check=True).stdout.strip()
        print(f"{'layerwise ' + ' '.join(args):<100} {statistics.median(times) * 1000:>6.0f}ms "
              f"{max(times) * 1000:>6.0f}ms {'yes' if torch_loaded == 'True' else 'no'}")


if __name__ == "__main__":
    main()
