"""The planner: training set-ups for a model on N GPUs of one type that fit in memory, best first.

Searched: ZeRO stage (with data parallelism), tensor parallelism (1, 2, 4, 8 that divide the GPUs),
activation checkpointing (none, selective, full) and the micro-batch (doubled while it fits, up to
`max_micro_batch`); precision is bf16-mixed where the GPU has bf16 (fp16-mixed otherwise). Pipeline
parallelism is not searched.

Ranking, stated plainly because it is a model and not a measurement: time per token is FLOPs / (GPUs ×
peak × MFU), so at a fixed MFU the set-ups differ only by their recompute FLOPs; ties go to less
communication (lower ZeRO stage, then smaller TP) and then to larger micro-batches (which in practice
raise MFU). A set-up fits when its analytic peak plus the estimated device overhead (CUDA context,
allocator cache) is at most the GPU's memory. Pure Python.
"""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.cost.flops import model_flops
from layerwise.cost.hardware import GPU
from layerwise.cost.memory import training_memory
from layerwise.cost.overhead import device_overhead_bytes
from layerwise.spec.errors import WorkloadError
from layerwise.spec.model import Model
from layerwise.workload import Workload

CHECKPOINTING = ("none", "selective", "full")  # by recompute FLOPs, least first


@dataclass(frozen=True)
class Candidate:
    workload: Workload
    peak_bytes: int  # analytic tensor peak per device
    overhead_bytes: int  # estimated CUDA context + allocator cache
    flops_per_token: int  # one training step's FLOPs (recompute included) per token (or sample)
    seconds_per_token: float  # over all GPUs at the given MFU

    @property
    def device_bytes(self) -> int:
        return self.peak_bytes + self.overhead_bytes


@dataclass(frozen=True)
class Plan:
    model: str
    gpu: GPU
    n_gpus: int
    mfu: float
    candidates: tuple[Candidate, ...]  # the ones that fit, best first
    tried: int  # set-ups evaluated


def _tp_options(n_gpus: int, model: Model) -> list[int]:
    heads = getattr(getattr(getattr(model.body, "block", None), "attn", None), "n_heads", 1)
    return [tp for tp in (1, 2, 4, 8) if tp <= n_gpus and n_gpus % tp == 0 and heads % tp == 0]


def _base_settings(model: Model, gpu: GPU, n_gpus: int):
    for ckpt in CHECKPOINTING:
        for zero in ((0, 1, 2, 3) if n_gpus > 1 else (0,)):
            for tp in _tp_options(n_gpus, model):
                dp = n_gpus // tp
                if zero and dp == 1:
                    continue
                yield ckpt, zero, tp, dp


def _evaluate(model: Model, gpu: GPU, workload: Workload, n_gpus: int, mfu: float, dtype: str) -> Candidate:
    peak = training_memory(model, workload).peak_bytes
    overhead = device_overhead_bytes(peak, device="cuda").total
    flops = model_flops(model, workload.with_(tp=1, dp=1, zero=0))
    per_token = flops.total // flops.tokens
    seconds = per_token / (n_gpus * gpu.peak_flops(dtype) * mfu)
    return Candidate(workload, peak, overhead, per_token, seconds)


def plan(model: Model, gpu: GPU, *, n_gpus: int = 1, seq: int | None = None, mfu: float = 0.4,
         optimizer: str = "adamw", max_micro_batch: int = 64, keep: int = 8) -> Plan:
    """Up to `keep` set-ups that fit, best first (see the module docstring for the ranking)."""
    if n_gpus < 1:
        raise WorkloadError(f"--gpus must be a positive integer, got {n_gpus}")
    if not 0 < mfu <= 1:
        raise WorkloadError(f"--mfu must be in (0, 1], got {mfu}")
    dtype = "bf16" if "bf16" in gpu.dtypes else "fp16"
    precision = f"{dtype}-mixed"
    found, tried = [], 0
    for ckpt, zero, tp, dp in _base_settings(model, gpu, n_gpus):
        best = None
        micro = 1
        while micro <= max_micro_batch:
            workload = Workload(batch=micro, seq=seq, precision=precision, optimizer=optimizer, checkpointing=ckpt,
                                zero=zero, tp=tp, dp=dp, device="cuda")
            candidate = _evaluate(model, gpu, workload, n_gpus, mfu, dtype)
            tried += 1
            if candidate.device_bytes > gpu.memory_bytes:
                break
            best, micro = candidate, micro * 2
        if best is not None:
            found.append(best)
            if len(found) >= keep:
                break
    return Plan(model.name, gpu, n_gpus, mfu, tuple(found), tried)
