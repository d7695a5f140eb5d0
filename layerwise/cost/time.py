"""Training time from FLOPs, and inference latency from a roofline. Pure Python.

Training: time = total FLOPs / (n_gpus x peak x MFU). MFU (model FLOPs utilisation, PaLM
appendix B) counts the model's FLOPs only, not recomputation; Megatron-LM's "8TP/(nX)"
(Narayanan et al. 2021; memory_flops_facts.md §6) instead counts 8 FLOPs/param/token (6 + 2 for
recomputing the forward) against the achieved hardware throughput X.
Inference: each phase takes max(FLOPs / compute rate, bytes moved / bandwidth) (roofline); prefill
is usually compute-bound, decode at small batch bandwidth-bound (all weights read per token).
"""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.cost.hardware import GPU
from layerwise.spec.errors import WorkloadError

DAY = 86_400


def six_nd(n_params: int, tokens: int) -> int:
    """Training FLOPs ≈ 6 N D: 2 per param per token forward, 4 backward (Kaplan et al. 2020;
    GPT-3 Table D.1: 6 x 174.6e9 x 300e9 = 3.14e23)."""
    return 6 * n_params * tokens


def megatron_flops_with_recompute(n_params: int, tokens: int) -> int:
    """Megatron-LM's 8TP: full activation recomputation adds one more forward (2 per param/token)."""
    return 8 * n_params * tokens


@dataclass(frozen=True)
class TrainingTime:
    total_flops: int
    n_gpus: int
    flops_per_gpu: float  # achieved FLOP/s per GPU = peak x MFU
    seconds: float

    @property
    def days(self) -> float:
        return self.seconds / DAY

    @property
    def hours(self) -> float:
        return self.seconds / 3600


def training_time(total_flops: int, *, n_gpus: int, peak_flops: float, mfu: float) -> TrainingTime:
    """Seconds to do `total_flops` on `n_gpus` each sustaining `peak_flops x mfu`."""
    if n_gpus < 1:
        raise WorkloadError(f"--gpus must be a positive integer, got {n_gpus}")
    if not 0 < mfu <= 1:
        raise WorkloadError(f"--mfu must be in (0, 1], got {mfu}")
    achieved = peak_flops * mfu
    return TrainingTime(total_flops, n_gpus, achieved, total_flops / (n_gpus * achieved))


@dataclass(frozen=True)
class Roofline:
    flops: int
    bytes_moved: int
    compute_seconds: float
    memory_seconds: float

    @property
    def seconds(self) -> float:
        return max(self.compute_seconds, self.memory_seconds)

    @property
    def bound(self) -> str:
        """Which limit sets the time: 'compute' or 'bandwidth'."""
        return "compute" if self.compute_seconds >= self.memory_seconds else "bandwidth"


def roofline(flops: int, bytes_moved: int, gpu: GPU, *, dtype: str = "bf16", compute_eff: float = 1.0,
             bandwidth_eff: float = 1.0) -> Roofline:
    return Roofline(flops, bytes_moved, flops / (gpu.peak_flops(dtype) * compute_eff),
                    bytes_moved / (gpu.bandwidth * bandwidth_eff))


@dataclass(frozen=True)
class DecoderCost:
    """What the roofline of a decoder needs: active params (MoE: per token), weight bytes as
    stored, and the attention shape for the score/value FLOPs and the KV cache reads."""

    n_params: int
    weight_bytes: int
    n_layers: int
    d_attn: int  # n_heads x d_head: width of the score and value matmuls
    kv_bytes_per_token: int


def prefill(m: DecoderCost, gpu: GPU, *, batch: int, prompt: int, dtype: str = "bf16",
            compute_eff: float = 1.0, bandwidth_eff: float = 1.0) -> Roofline:
    """One forward over `batch` prompts: 2·N FLOPs per token for the weights, plus QK^T and PV
    (2·2·L·d_attn·S² per sequence) halved for causal kernels that skip the masked triangle
    (flash attention). Reads the weights once and writes the prompt's KV cache."""
    tokens = batch * prompt
    flops = 2 * m.n_params * tokens + 2 * m.n_layers * m.d_attn * prompt * prompt * batch
    moved = m.weight_bytes + tokens * m.kv_bytes_per_token
    return roofline(flops, moved, gpu, dtype=dtype, compute_eff=compute_eff, bandwidth_eff=bandwidth_eff)


def decode_step(m: DecoderCost, gpu: GPU, *, batch: int, context: int, dtype: str = "bf16",
                compute_eff: float = 1.0, bandwidth_eff: float = 1.0) -> Roofline:
    """One generated token for each of `batch` sequences holding `context` cached tokens:
    2·N + 4·L·d_attn·context FLOPs per sequence; reads every weight and the whole cache."""
    flops = batch * (2 * m.n_params + 4 * m.n_layers * m.d_attn * context)
    moved = m.weight_bytes + batch * context * m.kv_bytes_per_token
    return roofline(flops, moved, gpu, dtype=dtype, compute_eff=compute_eff, bandwidth_eff=bandwidth_eff)


def decode_throughput(step: Roofline, batch: int) -> float:
    """Tokens per second across the batch at this step's latency."""
    return batch / step.seconds
