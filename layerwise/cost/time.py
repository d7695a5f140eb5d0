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
from layerwise.spec.counts import FlopCtx
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

    def __add__(self, o: "Roofline") -> "Roofline":
        """Two phases one after the other (cost/infer_time.py sums a decode's steps)."""
        return Roofline(self.flops + o.flops, self.bytes_moved + o.bytes_moved,
                        self.compute_seconds + o.compute_seconds, self.memory_seconds + o.memory_seconds)


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


# ---- a whole model ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TimeEstimate:
    """`layerwise time`: training time of a model for a token (or sample) budget on n GPUs."""

    model: str
    gpu: str
    gpu_source: str
    n_gpus: int
    dtype: str
    mfu: float
    tokens: int | None  # token budget (token models); None for sample-budget models
    samples: int  # sequences or images processed
    seq: int | None  # tokens per sequence used to count FLOPs per token
    flops_per_sample: int  # forward + backward from the spec (matmul + other)
    total_flops: int
    six_nd_flops: int | None  # 6·N·D for token models, the convention everyone quotes
    n_params: int
    active_params: int
    time: TrainingTime
    tokens_default: bool  # True: the budget was not given, Chinchilla's 20 tokens/param was used


CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022, Table 3 (≈ 20 tokens per parameter)


def estimate_model_time(model, gpu: GPU, *, n_gpus: int = 1, tokens: int | None = None,
                        samples: int | None = None, mfu: float = 0.4, dtype: str | None = None,
                        seq: int | None = None) -> TimeEstimate:
    """FLOPs per sample from the spec (forward + backward, batch 1) x the budget, over n GPUs.

    Token models: the budget is `tokens` (default 20 x params); FLOPs per token = spec FLOPs of one
    sequence of `seq` tokens / seq, so attention's s² term is included (6ND leaves it out).
    Other models: the budget is `samples`.
    """
    dtype = dtype or ("bf16" if "bf16" in gpu.dtypes else "fp16")
    is_tokens = model.input.kind == "tokens"
    in_shape = model.input_shape(batch=1, seq=seq if is_tokens else None)
    # model FLOPs (MFU's numerator): no grad for the input data, and attention's backward counted
    # as 4 bmms (eager), not sdpa's 5 (its recompute of the scores is hardware, not model, FLOPs)
    per_sample = model.body.flops(in_shape, FlopCtx(input_grad=False, attention="eager")).total
    n_params, active = model.params().total, model.body.active_params().total
    defaulted = False
    if is_tokens:
        if samples is not None:
            raise WorkloadError("--samples applies to non-token models; give --tokens for a language model")
        if tokens is None:
            tokens, defaulted = CHINCHILLA_TOKENS_PER_PARAM * n_params, True
        if tokens < 1:
            raise WorkloadError(f"--tokens must be positive, got {tokens}")
        from layerwise.cost.flops import token_budget_flops  # the one count `flops --tokens` shows too

        s = in_shape[1]
        per_sample, total, six = token_budget_flops(model, tokens, s)
        n_samples = -(-tokens // s)
    else:
        if tokens is not None:
            raise WorkloadError(f"--tokens applies to token models; {model.name} takes {model.input.kind}: give --samples")
        if samples is None or samples < 1:
            raise WorkloadError(f"{model.name} takes {model.input.kind} inputs: give --samples N (images/examples seen)")
        s, total, n_samples, six = None, per_sample * samples, samples, None
    t = training_time(total, n_gpus=n_gpus, peak_flops=gpu.peak_flops(dtype), mfu=mfu)
    return TimeEstimate(model.name, gpu.name, gpu.source, n_gpus, dtype, mfu, tokens if is_tokens else None,
                        n_samples, s, per_sample, total, six, n_params, active, t, defaulted)
