"""`layerwise time` as a function: a layout from the flags, the step-time model's step, and the
training time of a token (or sample) budget, with its cost. Pure Python."""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.cost.hardware import GPU
from layerwise.cost.step_time import Layout, StepTime, step_time
from layerwise.cost.time import DAY, TimeEstimate, estimate_model_time
from layerwise.spec.errors import WorkloadError


def plan_layout(*, gpus: int | None, dp: int | None, tp: int = 1, pp: int = 1, ep: int = 1, zero: int = 0,
                sp: bool = False, schedule: str = "1f1b", interleave: int = 1, batch: int = 1,
                grad_accum: int | None = None, global_batch: int | None = None,
                checkpointing: str = "none") -> Layout:
    """A Layout from the command-line flags: --gpus or --dp (checked against each other), --grad-accum
    or --global-batch (which must split into micro-batches over the data-parallel ranks)."""
    for flag, value in (("--tp", tp), ("--pp", pp), ("--batch", batch)):
        if value < 1:
            raise WorkloadError(f"{flag} must be a positive integer, got {value}")
    if dp is None:
        n = 1 if gpus is None else gpus
        if n < 1 or n % (tp * pp):
            raise WorkloadError(f"--gpus {n} is not a multiple of --tp x --pp = {tp * pp}")
        dp = n // (tp * pp)
    elif gpus is not None and gpus != dp * tp * pp:
        raise WorkloadError(f"--gpus {gpus} differs from --dp x --tp x --pp = {dp * tp * pp}")
    if grad_accum is not None and global_batch is not None:
        raise WorkloadError("give --grad-accum or --global-batch, not both")
    if global_batch is not None:
        if global_batch < 1 or global_batch % (batch * max(dp, 1)):
            raise WorkloadError(f"--global-batch {global_batch} is not a multiple of --batch x dp = {batch * dp}")
        grad_accum = global_batch // (batch * dp)
    return Layout(dp=dp, tp=tp, pp=pp, ep=ep, zero=zero, sequence_parallel=sp, schedule=schedule,
                  interleave=interleave, micro_batch=batch, grad_accum=grad_accum or 1, checkpointing=checkpointing)


@dataclass(frozen=True)
class TrainingEstimate:
    budget: TimeEstimate  # FLOPs of the budget (the 6ND comparison), from cost/time.py
    step: StepTime  # the step-time model (its step_seconds replaced when --mfu overrides)
    precision: str
    mfu_override: float | None
    price_per_gpu_hour: float | None

    @property
    def seconds(self) -> float:
        if self.mfu_override is not None:  # FLOPs of the budget / (GPUs x peak x MFU)
            return self.budget.time.seconds
        units = self.budget.tokens if self.budget.tokens is not None else self.budget.samples
        return units / self.step.tokens_per_second

    @property
    def days(self) -> float:
        return self.seconds / DAY

    @property
    def gpu_hours(self) -> float:
        return self.seconds / 3600 * self.step.layout.n_gpus

    @property
    def cost(self) -> float | None:
        return None if self.price_per_gpu_hour is None else self.gpu_hours * self.price_per_gpu_hour


def _precision(gpu: GPU, precision: str | None, dtype: str | None, mfu: float | None) -> str:
    if dtype is not None and precision is not None:
        raise WorkloadError("give --precision or --dtype, not both")
    if dtype is not None:
        named = {"bf16": "bf16-mixed", "fp16": "fp16-mixed", "fp32": "fp32"}
        if dtype not in named:
            if mfu is None:
                raise WorkloadError(f"--dtype {dtype} needs --mfu (the step-time model covers bf16, fp16, fp32)")
            return "bf16-mixed" if "bf16" in gpu.dtypes else "fp16-mixed"
        return named[dtype]
    return precision or ("bf16-mixed" if "bf16" in gpu.dtypes else "fp16-mixed")


def training_estimate(model, gpu: GPU, layout: Layout, *, seq: int | None = None, precision: str | None = None,
                      attention: str = "sdpa", tokens: int | None = None, samples: int | None = None,
                      mfu: float | None = None, dtype: str | None = None,
                      price_per_gpu_hour: float | None = None) -> TrainingEstimate:
    if price_per_gpu_hour is not None and price_per_gpu_hour < 0:
        raise WorkloadError(f"--price-per-gpu-hour must be >= 0, got {price_per_gpu_hour}")
    if attention not in ("sdpa", "eager"):
        raise WorkloadError(f"--attention must be sdpa or eager, got {attention!r}")
    prec = _precision(gpu, precision, dtype, mfu)
    peak_dtype = dtype or ("fp32" if prec == "fp32" else prec.split("-")[0])
    budget = estimate_model_time(model, gpu, n_gpus=layout.n_gpus, tokens=tokens, samples=samples,
                                 mfu=mfu if mfu is not None else 0.5, dtype=peak_dtype, seq=seq)
    step = step_time(model, gpu, layout, seq=seq, precision=prec, attention=attention)
    if mfu is not None:  # the override: the same step's model FLOPs at the given utilisation
        from dataclasses import replace

        seconds = step.model_flops / (layout.n_gpus * gpu.peak_flops(peak_dtype) * mfu)
        step = replace(step, step_seconds=seconds, peak_flops=gpu.peak_flops(peak_dtype))
    return TrainingEstimate(budget, step, prec, mfu, price_per_gpu_hour)
