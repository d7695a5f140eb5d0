"""How many threads torch computes with: `--threads N`, else OMP_NUM_THREADS, else a default chosen
for the workload and the machine.

The default, from bench/threads.py (README, "Threads"): the demo models' training steps (up to
~2 GFLOPs forward) ran 10-30x slower with 2 threads than with 1 on a loaded 2-core machine
(digits-cnn 1.7 vs 40 ms, tiny-gpt 192 vs 2,722 ms): their kernels take microseconds, so waking and
synchronising threads costs more than it saves, and a busy core stalls every parallel region. So a
step under SMALL_STEP_FLOPS gets one thread; a larger one gets the cores that are idle (usable cores
minus the 1-minute load average), at least one. No torch at import: the CLI stays fast.
"""
from __future__ import annotations

import os

from layerwise.spec.errors import LayerwiseError

SMALL_STEP_FLOPS = 2 * 10**9  # forward matmul FLOPs of one micro-batch below which one thread is faster (measured to 1.8e9)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(step_flops: int | None) -> int:
    """One thread for a small step; else the idle cores (at least one)."""
    if step_flops is not None and step_flops < SMALL_STEP_FLOPS:
        return 1
    cores = usable_cores()
    try:
        busy = round(os.getloadavg()[0])
    except OSError:
        busy = 0
    return max(1, min(cores, cores - busy))


def choose(threads: int | None, step_flops: int | None = None) -> int:
    """--threads if given, else OMP_NUM_THREADS if set, else default_threads(step_flops)."""
    if threads is not None:
        if threads < 1:
            raise LayerwiseError(f"--threads must be at least 1, got {threads}")
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    return default_threads(step_flops)


def use(threads: int | None, step_flops: int | None = None) -> int:
    """Set torch's intra-op thread count (choose()) -> the count."""
    import torch

    n = choose(threads, step_flops)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def model_step_flops(model, batch: int, **shape) -> int | None:
    """Forward matmul FLOPs of one micro-batch by the cost reading (None if it cannot say)."""
    try:
        return model.body.flops(model.input_shape(batch, **shape)).fwd_matmul
    except (LayerwiseError, TypeError, ValueError, AttributeError):
        return None
