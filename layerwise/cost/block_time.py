"""Compute time of one block for one micro-batch on one GPU: a roofline per op class.

Each op takes max(FLOPs / (peak x matmul efficiency), bytes moved / (HBM bandwidth x bandwidth
efficiency)); ops run one after another (one CUDA stream), so a block's time is their sum.
Op classes, from the spec tree (FLOPs from the blocks' own counts):
  GEMM (linear): reads its input and weight, writes its output; backward is two GEMMs of the same
    size (grad of input, grad of weight), so twice the forward.
  attention core, eager (Megatron-LM 2021/2022, HF eager): QK^T and PV batched matmuls (each a
    roofline at Efficiency.eager_attention of HBM: at d_head 64-128 they are bandwidth-bound), one fused scale-mask-softmax kernel
    (reads and writes the b x heads x s x s scores), dropout (reads, writes, a 1-byte mask);
    backward: four batched matmuls, dropout and softmax backward over the scores.
  attention core, flash (sdpa on CUDA): compute-bound at the flash-attention efficiency; the
    masked half of causal scores is skipped; backward does 2.5x the forward's FLOPs (recomputes QK^T).
  elementwise (norms, activations, dropout, residual adds, rope, embedding gathers): bandwidth-
    bound; a kernel reads its input(s) and writes its output once (a residual add is fused with the
    dropout before it, as Megatron-LM's bias_dropout_add); backward reads the saved input and the
    incoming gradient and writes the input gradient: taken as 2x the forward's bytes.
Under tensor parallelism (Megatron) the projections, the attention heads and the FFN hidden are
split by tp; the work at d_model width (norms, residual adds, block dropout) is replicated unless
sequence parallelism splits it too (Korthikanti et al. 2022 §4.2.2). Results are memoised per
distinct block and shape. Pure Python.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from layerwise.cost.efficiency import Efficiency
from layerwise.cost.hardware import GPU
from layerwise.spec.base import Block, Shape, walk
from layerwise.spec.counts import FlopCtx
from layerwise.spec.shapes import prod

BWD_OVER_FWD_BYTES = 2  # elementwise backward: reads saved input + grad, writes grad (see above)
FLASH_BWD_OVER_FWD = 2.5  # FlashAttention backward: 5 matmuls of the 2 forward ones (recompute QK^T)


@dataclass(frozen=True)
class TimeCtx:
    """What a block's time depends on besides its input shape."""

    gpu: GPU
    dtype: str = "bf16"  # the matmul peak used
    act_bytes: int = 2  # bytes per activation element (2 under fp16/bf16 mixed precision)
    tp: int = 1
    sequence_parallel: bool = False
    flash: bool = True  # attention core: flash (sdpa on CUDA) or eager
    eff: Efficiency = Efficiency()


@dataclass(frozen=True)
class BlockTime:
    """Seconds for one micro-batch: forward, backward, and the parts that checkpointing reruns."""

    fwd: float = 0.0
    bwd: float = 0.0
    attention_core_fwd: float = 0.0  # what selective recompute reruns (Korthikanti et al. 2022)
    matmul_flops_fwd: int = 0  # per GPU, for reporting

    def __add__(self, o: "BlockTime") -> "BlockTime":
        return BlockTime(self.fwd + o.fwd, self.bwd + o.bwd, self.attention_core_fwd + o.attention_core_fwd,
                         self.matmul_flops_fwd + o.matmul_flops_fwd)

    def __mul__(self, k: int) -> "BlockTime":
        return BlockTime(self.fwd * k, self.bwd * k, self.attention_core_fwd * k, self.matmul_flops_fwd * k)


def _roof(flops: float, nbytes: float, ctx: TimeCtx, eff: float | None = None, bw: float | None = None) -> float:
    peak = ctx.gpu.peak_flops(ctx.dtype) * (ctx.eff.matmul if eff is None else eff)
    return max(flops / peak, nbytes / (ctx.gpu.bandwidth * (ctx.eff.bandwidth if bw is None else bw)))


def _stream(nbytes: float, ctx: TimeCtx, bw: float | None = None) -> float:
    return nbytes / (ctx.gpu.bandwidth * (ctx.eff.bandwidth if bw is None else bw))


def _gemm(block: Block, in_shape: Shape, out_shape: Shape, ctx: TimeCtx) -> BlockTime:
    f = block.flops(in_shape, FlopCtx(input_grad=False)).fwd_matmul / ctx.tp
    moved = (prod(in_shape) + prod(out_shape) + block.params().total) * ctx.act_bytes / ctx.tp
    t = _roof(f, moved, ctx)
    return BlockTime(t, 2 * t, 0.0, round(f))


def _attention_core(attn: Block, in_shape: Shape, ctx: TimeCtx) -> BlockTime:
    b, s = in_shape[0], in_shape[1]
    sk = attn._kv_shape(in_shape)[1]
    heads = attn.n_heads / ctx.tp
    unit = 2 * b * heads * s * sk * attn.head_dim  # one of QK^T or PV (FLOPs)
    if ctx.flash:
        visible = attn.visible(s, sk) / (s * sk)  # the causal kernel skips the masked blocks
        fwd = _roof(2 * unit * visible, 0, ctx, ctx.eff.flash_attention)
        return BlockTime(fwd, FLASH_BWD_OVER_FWD * fwd, fwd, round(2 * unit))
    a = ctx.act_bytes
    scores = b * heads * s * sk  # elements of the score matrix
    q = b * heads * s * attn.head_dim
    k = b * (attn.kv_heads / ctx.tp) * sk * attn.head_dim
    drop = (2 * a + 1) * scores if attn.dropout > 0 else 0  # read, write, 1-byte mask
    bw = ctx.eff.eager_attention
    qk = _roof(unit, (q + k + scores) * a, ctx, bw=bw)
    pv = _roof(unit, (scores + k + q) * a, ctx, bw=bw)
    softmax = _stream(2 * a * scores + drop, ctx, bw)  # fused scale + mask + softmax, then dropout
    fwd = qk + pv + softmax
    # backward: dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q (each reads or writes the scores);
    # dropout backward; softmax backward reads P and dP and writes dS
    bwd = 2 * qk + 2 * pv + _stream(3 * a * scores + drop, ctx, bw)
    return BlockTime(fwd, bwd, fwd, round(2 * unit))


def _elementwise(nbytes: float, ctx: TimeCtx) -> BlockTime:
    t = _stream(nbytes, ctx)
    return BlockTime(t, BWD_OVER_FWD_BYTES * t)


def _own(block: Block, info, d_model: int, ctx: TimeCtx) -> BlockTime:
    """The block's own work, apart from its children's."""
    a, kind = ctx.act_bytes, block.type_name
    out = prod(info.out_shape)
    split = ctx.tp if (info.out_shape[-1] != d_model or ctx.sequence_parallel) else 1
    if kind == "linear":
        return _gemm(block, info.in_shape, info.out_shape, ctx)
    if kind == "attention":
        return _attention_core(block, info.in_shape, ctx)
    if kind == "transformer_block":
        # two residual adds (read two, write one), each fused with the branch's dropout when there
        # is one (Megatron-LM's bias_dropout_add kernel: + a 1-byte mask)
        per_add = 3 * a * out + (out if block.dropout > 0 else 0)
        return _elementwise(2 * per_add / split, ctx)
    if kind == "moe":  # dispatch (gather) and weighted combine of top_k copies of each token
        return _elementwise(4 * block.top_k * out * a / ctx.tp, ctx)
    if kind == "ffn":
        hidden = prod(info.in_shape[:-1]) * block.d_ff
        act = (5 if block.gated else 2) * hidden * a  # act(gate) (read, write) x up (read 2, write 1)
        drop = (2 * a + 1) * hidden if block.dropout > 0 else 0
        return _elementwise((act + drop) / ctx.tp, ctx)
    if block.child_groups():
        other = block.flops(info.in_shape, FlopCtx(input_grad=False)).fwd_other - sum(
            c.flops(i, FlopCtx(input_grad=False)).fwd_other for _, c, i in block.trace(info.in_shape))
        return _elementwise(3 * other * a / split, ctx)  # elementwise adds/products: 2 reads, 1 write
    if block.flops(info.in_shape, FlopCtx(input_grad=False)).fwd_matmul:  # conv, RNN: a GEMM's roofline
        return _gemm(block, info.in_shape, info.out_shape, replace(ctx, tp=1))
    extra = out if kind == "dropout" and getattr(block, "p", 0) > 0 else 0  # its 1-byte mask
    return _elementwise(((prod(info.in_shape) + out) * a + extra) / split, ctx)


@lru_cache(maxsize=4096)
def block_time(block: Block, in_shape: Shape, ctx: TimeCtx) -> BlockTime:
    """Seconds of `block` on one GPU for one micro-batch of shape `in_shape` (memoised)."""
    d_model = in_shape[-1]
    total = BlockTime()
    for info in walk(block, tuple(in_shape)):
        total = total + _own(info.block, info, d_model, ctx)
    return total


def with_tp(ctx: TimeCtx, tp: int, sequence_parallel: bool) -> TimeCtx:
    return replace(ctx, tp=tp, sequence_parallel=sequence_parallel)
