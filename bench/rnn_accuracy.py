"""Accuracy of the memory model on recurrent layers beyond the presets (layerwise.cost.act_rnn
against the measure reading, fake tensors): text-gru with 1 and 2 layers x one and two directions x
batch 1 and 4 x fp32 and bf16-mixed x train and infer (32 cases; suite II draws only the preset's
one-layer, one-direction GRU).

    .venv/bin/python bench/rnn_accuracy.py

Prints one row per case (peak error, worst component error relative to the peak) and the count
within 2%. Not a test; it takes about a minute.
"""
from __future__ import annotations

import itertools
import sys

from layerwise.cost.memory import inference_memory, training_memory
from layerwise.presets import get_preset
from layerwise.workload import Workload


def case(n_layers: int, bidirectional: bool, batch: int, precision: str, mode: str) -> tuple[float, float]:
    from layerwise.measure.step import measure_step

    model = get_preset("text-gru", n_layers=n_layers, bidirectional=bidirectional)
    w = Workload(batch=batch, precision=precision, mode=mode, optimizer="sgd")
    truth = measure_step(model, w, count_flops=False)
    report = (training_memory if mode == "train" else inference_memory)(model, w)
    comps = report.components.as_dict()
    worst = max(abs(comps[k] - truth.components[k]) for k in truth.components)
    return (report.peak_bytes - truth.peak_bytes) / truth.peak_bytes, worst / truth.peak_bytes


def main() -> int:
    errors = []
    print(f"{'layers':6} {'dirs':4} {'batch':5} {'precision':10} {'mode':5} {'peak err':>9} {'component':>9}")
    for n, bi, b, p, mode in itertools.product((1, 2), (False, True), (1, 4), ("fp32", "bf16-mixed"), ("train", "infer")):
        peak, comp = case(n, bi, b, p, mode)
        errors.append(abs(peak))
        print(f"{n:6} {2 if bi else 1:4} {b:5} {p:10} {mode:5} {100 * peak:+8.2f}% {100 * comp:8.2f}%", flush=True)
    print(f"\nwithin 2%: {sum(e <= 0.02 for e in errors)}/{len(errors)}, max {100 * max(errors):.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
