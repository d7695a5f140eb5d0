"""Will it fit: for every GPU of the catalogue, does one step fit, with how much to spare, the
largest micro-batch and the longest context that fit. Pure Python.

A GPU holds the analytic tensor peak plus the device overhead (CUDA context and allocator cache,
cost/overhead.py, an estimate reported apart), as the planner counts it. The verdict uses CUDA's
implementation defaults (`--device cuda`: foreach optimizer, 1-byte dropout masks) because it is a
verdict about GPUs. The searches double then bisect (the peak grows with batch and with sequence
length) and share one memo of peaks, so the whole catalogue costs a few dozen estimates.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from layerwise.cost.hardware import CATALOG, GPU
from layerwise.cost.overhead import device_overhead_bytes
from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import Model
from layerwise.workload import Workload

MAX_BATCH = 1 << 20  # searches stop here
MAX_SEQ = 1 << 24


@dataclass(frozen=True)
class Verdict:
    gpu: str
    memory_bytes: int
    peak_bytes: int  # tensor peak of the workload as given (device cuda)
    device_overhead_bytes: int  # estimated, not in peak_bytes
    fits: bool  # peak + overhead <= memory
    spare_bytes: int  # memory - peak - overhead (negative: short by that much)
    max_batch: int  # largest micro-batch that fits at the workload's sequence length (0: none)
    max_seq: int | None  # longest sequence that fits at the workload's batch (None: not a token model)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def largest(fits: Callable[[int], bool], limit: int) -> int:
    """The largest n in [1, limit] with fits(n), given fits is monotone (true then false); 0 if
    none: doubling, then bisection."""
    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


class _Peaks:
    """Analytic device bytes (tensor peak + overhead) by (batch, seq), memoised; a sequence the
    model cannot take (longer than its position table) counts as not fitting."""

    def __init__(self, model: Model, workload: Workload, estimate):
        self.model, self.workload, self.estimate = model, workload, estimate
        self.memo: dict[tuple[int, int | None], int | None] = {}

    def device_bytes(self, batch: int, seq: int | None) -> int | None:
        key = (batch, seq)
        if key not in self.memo:
            try:
                peak = self.estimate(self.model, replace(self.workload, batch=batch, seq=seq)).peak_bytes
                self.memo[key] = peak + device_overhead_bytes(peak, device="cuda").total
            except LayerwiseError:
                self.memo[key] = None
        return self.memo[key]

    def fits(self, gpu: GPU, batch: int, seq: int | None) -> bool:
        need = self.device_bytes(batch, seq)
        return need is not None and need <= gpu.memory_bytes


def gpu_verdicts(model: Model, workload: Workload, estimate, gpus: tuple[GPU, ...] | None = None) -> list[Verdict]:
    """One Verdict per GPU (the catalogue's by default). `estimate(model, workload)` is the memory
    reading to use (training or inference memory)."""
    workload = replace(workload, device="cuda")
    report = estimate(model, workload)
    peak, overhead = report.peak_bytes, device_overhead_bytes(report.peak_bytes, device="cuda").total
    peaks = _Peaks(model, workload, estimate)
    tokens = model.input.kind == "tokens"
    seq = workload.seq if workload.seq is not None else (model.input.shape[0] if tokens else None)
    out = []
    for gpu in gpus or tuple(CATALOG.values()):
        max_batch = largest(lambda b: peaks.fits(gpu, b, workload.seq), MAX_BATCH)
        max_seq = largest(lambda s: peaks.fits(gpu, workload.batch, s), MAX_SEQ) if tokens and seq else None
        spare = gpu.memory_bytes - peak - overhead
        out.append(Verdict(gpu.name, gpu.memory_bytes, peak, overhead, spare >= 0, spare, max_batch, max_seq))
    return out
