"""The planner: every training layout of a model on N GPUs of one type that fits in memory, ranked
by the step-time model's tokens per second.

Searched: tensor parallelism (powers of two up to a node, dividing the heads, KV heads and FFN
width), pipeline parallelism (powers of two up to the layers) with 1F1B, GPipe, and the interleaved
schedule (2 or 4 chunks per GPU, when the layers and micro-batches divide), expert parallelism for
MoE models (divisors of the experts that divide dp), ZeRO stage 0-3 (with pipelines only 0-1: the
ZeRO-2/3 gradient and weight sharding needs every micro-batch's gradients, which DeepSpeed and
Megatron-LM refuse with pipelining), sequence parallelism (when tp > 1), activation checkpointing
(none, selective, full) and the micro-batch (1-16), with grad-accum set by the global batch
(default: about 4M tokens, Llama 2's batch, Touvron et al. 2023 §2.2). Precision is bf16-mixed
where the GPU has bf16 (fp16-mixed otherwise).

A layout fits when its per-device peak (plan/memory.py, the largest pipeline stage) plus the
estimated CUDA context and allocator cache is at most the GPU's memory. Memory is evaluated per
distinct (micro-batch, checkpointing) and time per distinct block, so a search of thousands of
layouts takes well under a second (bench/cli_speed.py). Pure Python.
"""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.cost.hardware import GPU
from layerwise.cost.memory import first_repeat
from layerwise.cost.overhead import device_overhead_bytes
from layerwise.cost.parallel import layers_per_stage
from layerwise.cost.step_time import Layout, StepTime, step_time
from layerwise.plan.memory import check_identical_layers, memory_parts, per_device_bytes
from layerwise.spec.applies import has_attention
from layerwise.spec.errors import WorkloadError
from layerwise.spec.model import Model
from layerwise.workload import Workload

CHECKPOINTING = ("none", "selective", "full")
MICRO_BATCHES = (1, 2, 4, 8, 16)
GLOBAL_TOKENS = 1 << 22  # ~4M tokens per step (Llama 2 and 3 pre-training batches start there)
GLOBAL_SAMPLES = 256  # a model that does not read tokens: the ImageNet ResNet batch (He et al. 2016, §3.4)


@dataclass(frozen=True)
class Candidate:
    layout: Layout
    step: StepTime
    per_device_bytes: int  # analytic tensor peak of the fullest stage
    overhead_bytes: int  # estimated CUDA context + allocator cache

    @property
    def device_bytes(self) -> int:
        return self.per_device_bytes + self.overhead_bytes

    @property
    def tokens_per_second(self) -> float:
        return self.step.tokens_per_second


@dataclass(frozen=True)
class Plan:
    model: str
    gpu: GPU
    n_gpus: int
    precision: str
    global_batch: int
    candidates: tuple[Candidate, ...]  # the ones that fit, fastest first (up to `top`)
    searched: int  # layouts evaluated
    fitting: int  # of which fit


def _powers(limit: int) -> list[int]:
    out, k = [], 1
    while k <= limit:
        out.append(k)
        k *= 2
    return out


def _tp_options(model: Model, gpu: GPU, n_gpus: int) -> list[int]:
    block = getattr(model.body, "block", None)
    if getattr(block, "type_name", "") != "transformer_block" or block.attn.type_name != "attention":
        return [1]  # latent attention (mla) has no tensor-parallel split here
    attn, ffn = block.attn, block.ffn
    node = gpu.links.gpus_per_node if gpu.links else 8
    return [t for t in _powers(min(node, n_gpus)) if n_gpus % t == 0 and attn.n_heads % t == 0
            and attn.kv_heads % t == 0 and ffn.d_ff % t == 0]


def _pp_options(model: Model, n_gpus: int) -> list[int]:
    layers = getattr(model.body, "n_layers", 0) if hasattr(model.body, "block") else 0
    return [p for p in _powers(min(layers or 1, n_gpus)) if n_gpus % p == 0]


def _schedules(pp: int, layers: int, m: int):
    if pp == 1:
        yield "1f1b", 1
        return
    yield "1f1b", 1
    yield "gpipe", 1
    for v in (2, 4):
        if layers % (pp * v) == 0 and m % pp == 0:
            yield "interleaved", v


def _ep_options(model: Model, dp: int) -> list[int]:
    ffn = getattr(getattr(model.body, "block", None), "ffn", None)
    if getattr(ffn, "type_name", "") != "moe":
        return [1]
    return [e for e in range(1, ffn.n_experts + 1) if ffn.n_experts % e == 0 and dp % e == 0]


def layouts(model: Model, gpu: GPU, n_gpus: int, global_batch: int):
    """Every layout the planner considers (before the memory check)."""
    layers = getattr(model.body, "n_layers", 0)
    # checkpointing recomputes repeated blocks; a model without a `repeat` has none to recompute
    ckpts = CHECKPOINTING if first_repeat(model.body) is not None else ("none",)
    if not has_attention(model.body):  # selective recomputes the attention core: nothing to recompute
        ckpts = tuple(c for c in ckpts if c != "selective")
    for tp in _tp_options(model, gpu, n_gpus):
        for pp in _pp_options(model, n_gpus // tp):
            dp = n_gpus // (tp * pp)
            for mb in MICRO_BATCHES:
                if global_batch % (mb * dp):
                    continue
                m = global_batch // (mb * dp)
                for ep in _ep_options(model, dp):
                    for zero in (0, 1, 2, 3) if dp > 1 else (0,):
                        if pp > 1 and zero > 1:
                            continue
                        for sp in (False, True) if tp > 1 else (False,):
                            for ckpt in ckpts:
                                for schedule, v in _schedules(pp, layers, m):
                                    yield Layout(dp=dp, tp=tp, pp=pp, ep=ep, zero=zero, sequence_parallel=sp,
                                                 schedule=schedule, interleave=v, micro_batch=mb, grad_accum=m,
                                                 checkpointing=ckpt)


def plan(model: Model, gpu: GPU, *, n_gpus: int = 1, seq: int | None = None, global_batch: int | None = None,
         optimizer: str = "adamw", top: int = 10) -> Plan:
    """The `top` fastest layouts that fit, by predicted tokens/s (see the module docstring)."""
    if n_gpus < 1:
        raise WorkloadError(f"--gpus must be a positive integer, got {n_gpus}")
    if top < 1:
        raise WorkloadError(f"--top must be a positive integer, got {top}")
    check_identical_layers(model)
    precision = "bf16-mixed" if "bf16" in gpu.dtypes else "fp16-mixed"
    s = model.input_shape(1, seq, None)[1] if model.input.kind == "tokens" else 1
    tokens = model.input.kind == "tokens"
    gb = global_batch or (max(1, GLOBAL_TOKENS // s) if tokens else GLOBAL_SAMPLES)
    layers = getattr(model.body, "n_layers", 0) if hasattr(model.body, "block") else 0
    fits, searched, parts_by = [], 0, {}
    for lay in layouts(model, gpu, n_gpus, gb):
        searched += 1
        if lay.checkpointing not in parts_by:
            parts_by[lay.checkpointing] = memory_parts(model, Workload(seq=seq, precision=precision,
                                                                       optimizer=optimizer, device="cuda",
                                                                       checkpointing=lay.checkpointing))
        parts = parts_by[lay.checkpointing]
        stages = layers_per_stage(layers, lay.pp) if layers else (0,)
        peak = per_device_bytes(parts, lay, stages)
        overhead = device_overhead_bytes(peak, device="cuda").total
        if peak + overhead > gpu.memory_bytes:
            continue
        fits.append(Candidate(lay, step_time(model, gpu, lay, seq=seq, precision=precision), peak, overhead))
    fits.sort(key=lambda c: -c.tokens_per_second)
    return Plan(model.name, gpu, n_gpus, precision, gb, tuple(fits[:top]), searched, len(fits))
