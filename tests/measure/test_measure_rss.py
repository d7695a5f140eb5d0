"""Real CPU runs: the tracker's peak against the process's peak RSS (Linux only)."""
from __future__ import annotations

import sys

import pytest

from layerwise.blocks import Linear, Repeat
from layerwise.measure.run_real import measure_real_subprocess
from layerwise.measure.step import measure_step
from layerwise.spec.model import InputSpec, Model
from layerwise.workload import Workload

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def test_peak_rss_of_a_real_step_agrees_with_the_tracker_within_2_percent():
    # 12 x Linear(1024, 1024) = 12.6M params; an AdamW step's tensors peak at ~210 MB (16 B/param
    # + scratch), ~40% of the subprocess's peak RSS (the rest is the interpreter and torch).
    # The subprocess pins glibc's mmap threshold (procmem.CLEAN_MALLOC_ENV) so frees reach the OS.
    # Measured here: the tensors' share of the RSS peak within 0.3% of the tracker's peak, and the
    # RSS growth during the step within 1% of the tracked growth; the margins allow 2% and 3%.
    model = Model(name="lin", body=Repeat(block=Linear(d_in=1024, d_out=1024), n_layers=12),
                  input=InputSpec(kind="features", shape=(1024,)), task="none")
    workload = Workload(batch=8, optimizer="adamw")
    real = measure_real_subprocess(model, workload)
    fake = measure_step(model, workload)
    assert real.peak_bytes == fake.peak_bytes and real.components == fake.components
    rss = real.rss
    assert rss is not None and "MALLOC_MMAP_THRESHOLD_" in rss.malloc
    assert abs(rss.tensor_peak_bytes / real.peak_bytes - 1) < 0.02
    growth_rss = rss.peak_bytes - rss.start_bytes
    growth_tracked = real.peak_bytes - rss.tracked_start_bytes
    assert abs(growth_rss / growth_tracked - 1) < 0.03
