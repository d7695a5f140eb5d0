"""Will it fit: for every GPU of the catalogue, does one step fit, with how much to spare, the
largest micro-batch and the longest context that fit. Pure Python.

A GPU holds the analytic tensor peak plus the device overhead (CUDA context and allocator cache,
cost/overhead.py, an estimate reported apart), as the planner counts it. The verdict uses CUDA's
implementation defaults (`--device cuda`: foreach optimizer, 1-byte dropout masks) because it is a
verdict about GPUs. The searches double then bisect (the peak grows with batch and with sequence
length) and share one memo of peaks, so the whole catalogue costs a few dozen estimates.
"""
from __future__ import annotations

import math
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


def largest(need: Callable[[int], int | None], budget: int, limit: int, guess: int = 1) -> int:
    """The largest n in [1, limit] with need(n) <= budget (need grows with n; None: n is not
    allowed), 0 if none. From `guess`, gallop (doubling n) to a bracket, then narrow it by the chord
    through the bracket's ends (the peak is nearly linear in n; the Illinois rule halves a stale
    end's weight so a convex need does not stall one side), halving the bracket whenever a step did
    not: a handful of calls where bisection from 1 takes dozens."""
    seen: dict[int, float] = {}

    def value(n: int) -> float:
        if n not in seen:
            v = need(n)
            seen[n] = math.inf if v is None else v
        return seen[n]

    guess = max(1, min(limit, guess))
    if value(guess) <= budget:
        lo = guess
        while lo < limit and value(min(2 * lo, limit)) <= budget:
            lo = min(2 * lo, limit)
        hi = min(2 * lo, limit + 1)
    else:  # the bracket [1, guess], or nothing fits
        hi, lo = guess, 1 if value(1) <= budget else 0
        if lo == 0:
            return 0
    # chord weights of the two ends (excess over the budget), Illinois-halved when an end is kept
    w_lo = budget - value(lo)
    w_hi = value(hi) - budget if hi <= limit else math.inf
    kept, slow = "", 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if slow < 2 and math.isfinite(w_hi) and w_lo + w_hi > 0:  # else: two slow chords, halve
            mid = min(hi - 1, max(lo + 1, lo + int(w_lo * (hi - lo) // (w_lo + w_hi))))
        width = hi - lo
        if value(mid) <= budget:
            lo, w_lo = mid, budget - value(mid)
            w_hi, kept = (w_hi / 2 if kept == "hi" else w_hi), "hi"
        else:
            hi, w_hi = mid, value(mid) - budget
            w_lo, kept = (w_lo / 2 if kept == "lo" else w_lo), "lo"
        slow = 0 if 2 * (hi - lo) <= width or slow >= 2 else slow + 1
    return lo


def _secant(need_a: int | None, need_b: int | None, a: int, b: int, budget: int) -> int:
    """Where the line through (a, need_a) and (b, need_b) reaches `budget`: a first guess."""
    if need_a is None or need_b is None or need_b <= need_a:
        return a
    return a + (budget - need_a) * (b - a) // (need_b - need_a)


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
    # the peak grows about linearly with the batch (and, with sdpa, the sequence): each search
    # starts where the line through two estimates crosses the GPU's memory; GPUs of one size share it
    need = peaks.device_bytes
    by_size: dict[int, tuple[int, int | None]] = {}
    for gpu in gpus or tuple(CATALOG.values()):
        budget = gpu.memory_bytes
        if budget not in by_size:
            guess = _secant(need(1, workload.seq), need(2, workload.seq), 1, 2, budget)
            max_batch = largest(lambda b: need(b, workload.seq), budget, MAX_BATCH, guess)
            max_seq = None
            if tokens and seq:  # below the workload's length: the line from 1 token; above: seq to 2 seq
                at = (1, seq) if (need(workload.batch, seq) or math.inf) > budget else (seq, 2 * seq)
                guess = _secant(need(workload.batch, at[0]), need(workload.batch, at[1]), *at, budget)
                max_seq = largest(lambda s: need(workload.batch, s), budget, model.input.max_seq or MAX_SEQ, guess)
            by_size[budget] = (max_batch, max_seq)
        max_batch, max_seq = by_size[budget]
        spare = gpu.memory_bytes - peak - overhead
        out.append(Verdict(gpu.name, gpu.memory_bytes, peak, overhead, spare >= 0, spare, max_batch, max_seq))
    return out
