"""Accuracy suite II's fixed-seed sample in `make test` (issue #9): 150 of the random cases
bench/accuracy.py --random draws (bench/random_cases.py: every workload setting over every preset
at small sizes; seed 1, so not the draw the bench's README table was tuned on), each against the
measure reading (the built module under fake tensors): peak within 2%, every component within 5%
of the peak. The full-size models are left to the bench (minutes under fake tensors)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from memory_targets import check_within_targets  # noqa: E402
from random_cases import cases  # noqa: E402  (bench/, on pytest's pythonpath)

SAMPLE = cases(150, seed=1, full_every=0)


@pytest.mark.parametrize("i", range(len(SAMPLE)), ids=lambda i: f"{i}-{SAMPLE[i].preset}")
def test_suite2_case_within_targets(i):
    from layerwise.cost.memory import inference_memory, training_memory
    from layerwise.measure.step import measure_step

    case = SAMPLE[i]
    model, w = case.model(), case.workload
    reading = training_memory if w.mode == "train" else inference_memory
    check_within_targets(reading(model, w), measure_step(model, w, count_flops=False), case.label())
