"""The step-time model against published Megatron-LM measurements (refdata/step_time_runs.csv):
Narayanan et al. 2021 Table 1 (TFLOP/s per GPU, 1.7B on 32 A100s to 1T on 3072) and Korthikanti et
al. 2022 Table 4 (one 22B layer, ms) and Table 5 (iteration seconds). Prints each prediction, the
published figure and the error; target: every row within 10%.

    .venv/bin/python bench/time_accuracy.py
"""
from __future__ import annotations

import sys
from pathlib import Path

from layerwise.cost.reference_runs import CALIBRATION, predict, read_runs

TARGET = 0.10
UNITS = {"tflops_per_gpu": "TFLOP/s/GPU", "layer_ms": "ms/layer", "step_s": "s/step"}


def main() -> int:
    runs = read_runs(Path(__file__).resolve().parents[1] / "refdata" / "step_time_runs.csv")
    print("| source | run | layout | published | predicted | error |")
    print("|---|---|---|---|---|---|")
    worst, within = 0.0, 0
    for run in runs:
        got = predict(run)
        err = got / run.value - 1
        worst, within = max(worst, abs(err)), within + (abs(err) <= TARGET)
        layout = f"tp{run.tp} pp{run.pp}" + (f" v{run.interleave}" if run.interleave > 1 else "") + \
            f" {run.gpus} GPUs, mb {run.micro_batch}, {run.recompute}" + (" +SP" if run.sequence_parallel else "")
        name = run.name + (" (calibrates eager attention)" if run.name in CALIBRATION else "")
        print(f"| {run.source} | {name} | {layout} | {run.value:g} {UNITS[run.metric]} | {got:.4g} | {err:+.1%} |")
    errors = sorted(abs(predict(r) / r.value - 1) for r in runs if r.name not in CALIBRATION)
    print(f"\n{within}/{len(runs)} rows within {TARGET:.0%}; worst {worst:.1%}; median {errors[len(errors) // 2]:.1%}"
          f" over the {len(errors)} rows that are not calibration")
    return 0 if within == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
