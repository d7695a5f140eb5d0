"""The step-time model: seconds of one optimizer step of a training layout, from the spec.

Per micro-batch and pipeline stage, on one GPU (ranks ordered tp fastest, then dp, then pp, as in
Megatron-LM, so a tp group sits inside a node when tp <= 8):
  compute      each block's roofline (cost/block_time.py), forward + backward, plus the recompute
               of activation checkpointing (full: the layer's forward again, with its all-reduces;
               selective: the attention core);
  tensor par.  2 all-reduces of the (b, s, d_model) activation per transformer block in forward and
               2 in backward (Megatron-LM, Shoeybi et al. 2019, Fig. 4); with sequence parallelism
               each becomes a reduce-scatter + all-gather (same volume) and backward re-gathers the
               two sharded inputs of the column-parallel projections (Korthikanti et al. 2022 §4.2.2);
               on the critical path, except that with Layout.tp_overlap (Megatron-LM's async
               communication) the column-parallel backward collectives hide behind their GEMMs;
  expert par.  4 all-to-alls per MoE layer (dispatch and combine, forward and backward) of the
               micro-batch's top_k token copies (Lepikhin et al. 2020, GShard);
  pipeline     a point-to-point send of the stage's output activation (split by tp: Narayanan et
               al. 2021's scatter/gather) forward and one backward per micro-batch and model chunk;
  ZeRO-3/FSDP  per micro-batch, all-gather of the stage's weights in forward and in backward and a
               reduce-scatter of its gradients, prefetched: only what exceeds that micro-batch's
               compute is exposed.
The pipeline then takes (m + (p - 1)/v) x the slowest stage's micro-batch time (1F1B and GPipe
have the bubble (p-1)/(m+p-1) of the step; interleaving with v chunks per GPU divides it by v;
Narayanan et al. 2021 §2.2). After it: the data-parallel gradient all-reduce (ZeRO-1/2: reduce-
scatter, then an all-gather of the updated weights), overlapped with the last micro-batch's backward
when `overlap_grad_reduce` (PyTorch DDP/FSDP buckets; Megatron-LM 2021 did not overlap), and the
optimizer step, bandwidth-bound over the GPU's shard of the states. Pure Python.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from layerwise.cost.block_time import BlockTime, TimeCtx, block_time
from layerwise.cost import comm
from layerwise.cost.efficiency import Efficiency
from layerwise.cost.hardware import GPU
from layerwise.cost.parallel import layers_per_stage
from layerwise.cost.precision import nbytes, policy
from layerwise.spec.base import Block, walk
from layerwise.spec.errors import WorkloadError
from layerwise.spec.model import Model

SCHEDULES = ("1f1b", "gpipe", "interleaved")
CHECKPOINTING = ("none", "selective", "full")
# Bytes the optimizer step streams per parameter of the GPU's shard (fp32 states): the AdamW update
# reads grad, master weight, m, v (16) and writes weight, m, v (12) plus the low-precision weight
# copy (2); clipping by the global norm reads the gradients once for the norm and once to scale them,
# writing them back (12); fp16 loss scaling adds an unscale pass with its inf check (8).
ADAMW_BYTES, CLIP_BYTES, UNSCALE_BYTES = 30, 12, 8


@dataclass(frozen=True, kw_only=True)
class Layout:
    """A training layout: dp x tp x pp GPUs; ep splits the experts over dp ranks."""

    dp: int = 1
    tp: int = 1
    pp: int = 1
    ep: int = 1
    zero: int = 0
    sequence_parallel: bool = False
    schedule: str = "1f1b"
    interleave: int = 1  # model chunks per GPU (the interleaved schedule's v)
    micro_batch: int = 1
    grad_accum: int = 1  # micro-batches per step per pipeline (m)
    checkpointing: str = "none"
    # Megatron-LM's async tensor-parallel communication (since Sep 2021; Korthikanti et al. 2022 ran
    # with it): in a column-parallel projection's backward the input-gradient all-reduce runs
    # during the weight-gradient GEMM; with sequence parallelism the input all-gather during the
    # input-gradient GEMM and the reduce-scatter during the weight-gradient GEMM. PyTorch's
    # tensor parallel (train/parallel.py) runs them in turn: off by default.
    tp_overlap: bool = False

    def __post_init__(self):
        for name in ("dp", "tp", "pp", "ep", "interleave", "micro_batch", "grad_accum"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise WorkloadError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.zero not in (0, 1, 2, 3):
            raise WorkloadError(f"--zero must be 0, 1, 2 or 3, got {self.zero!r}")
        if self.schedule not in SCHEDULES:
            raise WorkloadError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.checkpointing not in CHECKPOINTING:
            raise WorkloadError(f"--checkpointing must be one of {', '.join(CHECKPOINTING)}")
        if self.interleave > 1 and self.schedule != "interleaved":
            raise WorkloadError("--interleave > 1 needs --schedule interleaved")
        if self.sequence_parallel and self.tp == 1:
            raise WorkloadError("sequence parallelism needs --tp > 1")
        if self.dp % self.ep:
            raise WorkloadError(f"--ep {self.ep} must divide --dp {self.dp} (experts are split over dp ranks)")

    @property
    def n_gpus(self) -> int:
        return self.dp * self.tp * self.pp

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.dp


@dataclass(frozen=True)
class StepTime:
    """One optimizer step on the whole layout; seconds are wall-clock, FLOPs are per step."""

    layout: Layout
    step_seconds: float
    tokens_per_step: int
    model_flops: int  # forward + backward, no recompute (MFU's numerator; PaLM appendix B)
    hardware_flops: int  # with the recompute (HFU's)
    peak_flops: int  # per GPU
    parts: dict  # seconds by term (compute, tp, ep, p2p, bubble, dp, zero3, optimizer)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_step / self.step_seconds

    @property
    def tflops_per_gpu(self) -> float:
        return self.model_flops / self.step_seconds / self.layout.n_gpus / 1e12

    @property
    def mfu(self) -> float:
        return self.model_flops / (self.step_seconds * self.layout.n_gpus * self.peak_flops)

    @property
    def hfu(self) -> float:
        return self.hardware_flops / (self.step_seconds * self.layout.n_gpus * self.peak_flops)


@dataclass(frozen=True)
class Parts:
    """A model cut at its repeated blocks: what comes before (stage 0), one layer, what comes after
    (the last stage), in seconds per micro-batch, and their parameters."""

    pre: BlockTime
    layer: BlockTime
    post: BlockTime
    n_layers: int
    layer_params: int
    pre_params: int
    post_params: int
    tp_collectives: int  # all-reduces per layer per pass (2 for a transformer block)
    col_gemm_fwd: tuple[float, ...]  # per column-parallel site (attention input, FFN input): its GEMMs' forward seconds
    moe_top_k: int  # > 0: the layer is an MoE layer with this top_k
    expert_params: int  # of one layer: the parameters split by ep


def _cut(model: Model, shape):
    """(before, repeat, after) of the body's top-level children, each a list of (block, in_shape)."""
    before, rep, after = [], None, []
    for _, child, child_in in model.body.trace(shape):
        if rep is None and child.type_name == "repeat":
            rep = (child, child_in)
        elif rep is None:
            before.append((child, child_in))
        else:
            after.append((child, child_in))
    if rep is None:
        return [(model.body, shape)], None, []
    return before, rep, after


@lru_cache(maxsize=1024)
def model_parts(model: Model, micro_batch: int, seq: int | None, ctx: TimeCtx) -> Parts:
    """The model's blocks timed once per distinct block (memoised) for one micro-batch."""
    shape = model.input_shape(micro_batch, seq, None)
    n_layers = getattr(model.body, "n_layers", 0)
    short = model  # the same shapes with one copy of the repeated block: tracing 80 layers is slow
    first, n_first = getattr(model.body, "first_block", None), getattr(model.body, "n_first", 0)
    if (n_layers > 1 or first is not None) and hasattr(model.body, "block"):
        short = replace(model, body=replace(model.body, n_layers=1, first_block=None, n_first=0))
    before, rep, after = _cut(short, shape)
    pre = sum((block_time(b, s, ctx) for b, s in before), BlockTime())
    post = sum((block_time(b, s, ctx) for b, s in after), BlockTime())
    if model.task != "none" and after:
        post = post + _loss_time(short.body.out_shape(shape), ctx)
    if rep is None:
        return Parts(pre + post, BlockTime(), BlockTime(), 0, 0, model.params().total, 0, 0, (), 0, 0)
    block, n = rep[0].block, (n_layers if short is not model else rep[0].n_layers)
    layer = block_time(block, rep[1], ctx)
    moe = getattr(block, "ffn", None)
    top_k = moe.top_k if getattr(moe, "type_name", "") == "moe" else 0
    experts = sum(e.params().total for e in moe.experts) if top_k else 0
    layer_params = block.params().total
    if first is not None:  # a stack of two kinds (DeepSeek's dense layers first): timed as its mean layer,
        # so the stack's total is exact and pipeline stages split it evenly (an estimate)
        layer = _mean_layer(block_time(first, rep[1], ctx), n_first, layer, n - n_first)
        layer_params = (n_first * first.params().total + (n - n_first) * layer_params) // n
        experts = experts * (n - n_first) // n  # the dense layers have none for ep to split
    return Parts(pre, layer, post, n, layer_params, sum(b.params().total for b, _ in before),
                 sum(b.params().total for b, _ in after), 2 if block.type_name == "transformer_block" else 0,
                 _column_sites(block, rep[1], ctx), top_k, experts)


def _mean_layer(a: BlockTime, n_a: int, b: BlockTime, n_b: int) -> BlockTime:
    n = n_a + n_b
    return BlockTime((a.fwd * n_a + b.fwd * n_b) / n, (a.bwd * n_a + b.bwd * n_b) / n,
                     (a.attention_core_fwd * n_a + b.attention_core_fwd * n_b) / n,
                     (a.matmul_flops_fwd * n_a + b.matmul_flops_fwd * n_b) // n)


# The column-parallel projections of a transformer block (Megatron-LM's split, train/parallel.py's
# plan), grouped by the activation they read: one tensor-parallel collective per group and pass.
COLUMN_SITES = (("q_proj", "k_proj", "v_proj", "qkv_proj"), ("up_proj", "gate_proj"))


def _column_sites(block: Block, in_shape, ctx: TimeCtx) -> tuple[float, ...]:
    """Forward seconds of each column-parallel site's GEMMs (= its weight-gradient GEMMs' time)."""
    sites = [0.0] * len(COLUMN_SITES)
    for info in walk(block, tuple(in_shape)):
        leaf = info.path.rsplit(".", 1)[-1]
        for i, names in enumerate(COLUMN_SITES):
            if info.block.type_name == "linear" and leaf in names:
                sites[i] += block_time(info.block, info.in_shape, ctx).fwd
    return tuple(sites)


def _loss_time(logits_shape, ctx: TimeCtx) -> BlockTime:
    """Cross-entropy in fp32 over the (vocab-parallel) logits, pass by pass as Megatron-LM's
    vocab_parallel_cross_entropy runs it: forward upcasts (read a, write 4 bytes), takes the max (4),
    subtracts and exponentiates (8), sums (4) and normalises the saved softmax (8); backward
    subtracts the one-hot (8), scales by the incoming gradient (8) and casts down (4 + a)."""
    n = 1
    for d in logits_shape:
        n *= d
    n /= ctx.tp
    bw = ctx.gpu.bandwidth * ctx.eff.bandwidth
    return BlockTime((ctx.act_bytes + 28) * n / bw, (20 + ctx.act_bytes) * n / bw)


def time_ctx(gpu: GPU, precision: str, layout: Layout, *, attention: str = "sdpa",
             eff: Efficiency = Efficiency()) -> TimeCtx:
    pol = policy(precision)
    dtype = pol.activations if pol.activations != "fp32" else "fp32"
    if dtype not in gpu.dtypes:
        raise WorkloadError(f"--precision {precision}: {gpu.name} has no {dtype} peak (it has {', '.join(gpu.dtypes)})")
    return TimeCtx(gpu, dtype, nbytes(1, pol.activations), layout.tp, layout.sequence_parallel,
                   attention == "sdpa", eff)


def step_time(model: Model, gpu: GPU, layout: Layout, *, seq: int | None = None, precision: str = "bf16-mixed",
              attention: str = "sdpa", overlap_grad_reduce: bool = True, eff: Efficiency = Efficiency()) -> StepTime:
    """Seconds of one optimizer step of `model` trained with `layout` on `gpu`s (see the module docstring)."""
    ctx = time_ctx(gpu, precision, layout, attention=attention, eff=eff)
    parts = model_parts(model, layout.micro_batch, seq, ctx)
    _check(parts, layout, model)
    shape = model.input_shape(layout.micro_batch, seq, None)
    tokens_mb = shape[0] * shape[1] if model.input.kind == "tokens" else shape[0]
    d_model = getattr(model.body, "d_model", 0)
    terms = _stage_terms(parts, layout, gpu, ctx, tokens_mb * d_model * ctx.act_bytes)
    m, v = layout.grad_accum, layout.interleave if layout.schedule == "interleaved" else 1
    t_mb = max(t["total"] for t in terms)
    slow = max(terms, key=lambda t: t["total"])
    bubble = (layout.pp - 1) / v * t_mb
    pipeline = m * t_mb + bubble
    dp, opt = _data_parallel(parts, layout, gpu, ctx, precision, slow["bwd"], overlap_grad_reduce)
    step = pipeline + dp + opt
    model_f, hw_f = micro_batch_flops(model, layout.micro_batch, seq, layout.checkpointing)
    shares = {k: m * slow[k] for k in ("compute", "tp", "ep", "p2p", "zero3")}
    shares.update(bubble=bubble, dp=dp, optimizer=opt)
    tokens = tokens_mb * m * layout.dp
    return StepTime(layout, step, tokens, model_f * m * layout.dp, hw_f * m * layout.dp,
                    gpu.peak_flops(ctx.dtype), shares)


def _check(parts: Parts, layout: Layout, model: Model) -> None:
    if layout.pp > 1 and parts.n_layers == 0:
        raise WorkloadError(f"--pp {layout.pp}: {model.name} has no repeated blocks to split into stages")
    if layout.tp > 1 and parts.tp_collectives == 0:
        raise WorkloadError(f"--tp {layout.tp}: {model.name} has no transformer blocks to split")
    chunks = layout.pp * (layout.interleave if layout.schedule == "interleaved" else 1)
    if parts.n_layers and chunks > parts.n_layers:
        raise WorkloadError(f"--pp x --interleave = {chunks} is more than the model's {parts.n_layers} layers")
    if layout.ep > 1 and not parts.moe_top_k:
        raise WorkloadError(f"--ep {layout.ep}: {model.name} has no mixture-of-experts layers")


def _layer_terms(parts: Parts, layout: Layout, gpu: GPU, ctx: TimeCtx, act_bytes_mb: float):
    """Seconds of one layer's tensor-parallel traffic (forward, backward), its recompute, its
    expert-parallel all-to-alls, and one tensor-parallel all-reduce of the activation."""
    eff = ctx.eff
    tp_link = comm.group_link(gpu, layout.tp, eff) if layout.tp > 1 else None
    per_ar = comm.all_reduce(act_bytes_mb, layout.tp, tp_link) if tp_link else 0.0
    regather = comm.all_gather(act_bytes_mb, layout.tp, tp_link) if tp_link and layout.sequence_parallel else 0.0
    fwd_tp = parts.tp_collectives * per_ar
    bwd_tp = parts.tp_collectives * (per_ar + regather)
    if tp_link and layout.tp_overlap and parts.col_gemm_fwd:
        bwd_tp = _overlapped_backward_tp(parts, layout, tp_link, act_bytes_mb)
    layer = parts.layer
    recompute = {"none": 0.0, "selective": layer.attention_core_fwd, "full": layer.fwd + fwd_tp}[layout.checkpointing]
    ep = 0.0
    if layout.ep > 1 and parts.moe_top_k:
        ep_link = comm.group_link(gpu, layout.tp * layout.ep, eff)
        passes = 4 + (2 if layout.checkpointing == "full" else 0)
        ep = passes * comm.all_to_all(parts.moe_top_k * act_bytes_mb / layout.tp, layout.ep, ep_link)
    return fwd_tp, bwd_tp, recompute, ep, per_ar


def _overlapped_backward_tp(parts: Parts, layout: Layout, link, act_bytes_mb: float) -> float:
    """Exposed backward tensor-parallel seconds of one layer under Megatron-LM's async communication
    (Layout.tp_overlap): each column-parallel site's collectives hide behind its own GEMMs (the
    input- and weight-gradient GEMMs each take the forward GEMM's time); without sequence
    parallelism the row-parallel projections' backward has no collective, with it the all-gather
    of the output gradient (the backward of the forward's reduce-scatter) is exposed."""
    if not layout.sequence_parallel:
        per_ar = comm.all_reduce(act_bytes_mb, layout.tp, link)
        return sum(max(0.0, per_ar - wgrad) for wgrad in parts.col_gemm_fwd)
    gather = comm.all_gather(act_bytes_mb, layout.tp, link)
    scatter = comm.reduce_scatter(act_bytes_mb, layout.tp, link)
    hidden = sum(max(0.0, gather - gemm) + max(0.0, scatter - gemm) for gemm in parts.col_gemm_fwd)
    return len(parts.col_gemm_fwd) * gather + hidden


def layer_seconds(model: Model, gpu: GPU, layout: Layout, *, seq: int | None = None, precision: str = "bf16-mixed",
                  attention: str = "sdpa", eff: Efficiency = Efficiency()) -> float:
    """One repeated block for one micro-batch: forward + backward + recompute + its communication."""
    ctx = time_ctx(gpu, precision, layout, attention=attention, eff=eff)
    parts = model_parts(model, layout.micro_batch, seq, ctx)
    shape = model.input_shape(layout.micro_batch, seq, None)
    fwd_tp, bwd_tp, recompute, ep, _ = _layer_terms(parts, layout, gpu, ctx, shape[0] * shape[1] *
                                                    model.body.d_model * ctx.act_bytes)
    return parts.layer.fwd + parts.layer.bwd + recompute + fwd_tp + bwd_tp + ep


def _stage_terms(parts: Parts, layout: Layout, gpu: GPU, ctx: TimeCtx, act_bytes_mb: float) -> list[dict]:
    """Per pipeline stage, seconds of one micro-batch by term."""
    eff = ctx.eff
    fwd_tp, bwd_tp, recompute, ep, per_ar = _layer_terms(parts, layout, gpu, ctx, act_bytes_mb)
    layer = parts.layer
    v = layout.interleave if layout.schedule == "interleaved" else 1
    p2p = 0.0
    if layout.pp > 1:
        pp_link = comm.group_link(gpu, 2 * layout.tp * layout.dp, eff)
        p2p = 2 * v * comm.p2p(act_bytes_mb / layout.tp, pp_link)
    terms = []
    stages = layers_per_stage(parts.n_layers, layout.pp) if parts.n_layers else (0,)
    head_tp = per_ar if parts.n_layers else 0.0  # vocab-parallel embedding / head: one each way
    for i, n in enumerate(stages):
        t = layer * n
        fwd, bwd = t.fwd, t.bwd
        extra_tp = 0.0
        if i == 0:
            fwd, bwd, extra_tp = fwd + parts.pre.fwd, bwd + parts.pre.bwd, extra_tp + head_tp
        if i == len(stages) - 1:
            fwd, bwd, extra_tp = fwd + parts.post.fwd, bwd + parts.post.bwd, extra_tp + 2 * head_tp
        compute = fwd + bwd + n * recompute
        tp = n * (fwd_tp + bwd_tp) + extra_tp
        zero3 = _zero3_exposed(parts, layout, gpu, ctx, i, n, compute)
        total = compute + tp + n * ep + p2p + zero3
        terms.append({"total": total, "compute": compute, "tp": tp, "ep": n * ep, "p2p": p2p, "zero3": zero3,
                      "bwd": bwd + n * (bwd_tp + recompute)})
    return terms


def _stage_params(parts: Parts, layout: Layout, stage: int, n_layers: int) -> float:
    """Parameters one GPU of this stage holds before ZeRO: split by tp, experts also by ep."""
    dense = parts.layer_params - parts.expert_params
    n = n_layers * (dense + parts.expert_params / layout.ep)
    if stage == 0:
        n += parts.pre_params
    if stage == layout.pp - 1:
        n += parts.post_params
    return n / layout.tp


def _zero3_exposed(parts, layout, gpu, ctx, stage, n_layers, compute) -> float:
    if layout.zero != 3 or layout.dp == 1:
        return 0.0
    link = comm.group_link(gpu, layout.tp * layout.dp, ctx.eff)
    w = _stage_params(parts, layout, stage, n_layers) * ctx.act_bytes  # gathered in compute dtype
    traffic = 2 * comm.all_gather(w, layout.dp, link) + comm.reduce_scatter(w, layout.dp, link)
    return max(0.0, traffic - compute)


def _data_parallel(parts, layout, gpu, ctx, precision, last_bwd, overlap) -> tuple[float, float]:
    """Exposed gradient-sync seconds after the pipeline, and the optimizer step's seconds."""
    pol = policy(precision)
    stages = layers_per_stage(parts.n_layers, layout.pp) if parts.n_layers else (0,)
    n = max(_stage_params(parts, layout, i, k) for i, k in enumerate(stages))
    grad_b = nbytes(1, pol.grads)
    sync = 0.0
    if layout.dp > 1 and layout.zero < 3:
        link = comm.group_link(gpu, layout.tp * layout.dp, ctx.eff)
        if layout.zero == 0:
            sync = comm.all_reduce(n * grad_b, layout.dp, link)
            exposed = max(0.0, sync - last_bwd) if overlap else sync
        else:  # reduce-scatter the gradients, all-gather the updated weights after the step
            rs = comm.reduce_scatter(n * grad_b, layout.dp, link)
            exposed = (max(0.0, rs - last_bwd) if overlap else rs) + comm.all_gather(n * nbytes(1, pol.weights),
                                                                                    layout.dp, link)
        sync = exposed
    shard = n / layout.dp if layout.zero >= 1 else n
    per_param = ADAMW_BYTES + CLIP_BYTES + (UNSCALE_BYTES if pol.activations == "fp16" else 0)
    opt = per_param * shard / (gpu.bandwidth * ctx.eff.bandwidth)
    return sync, opt


def micro_batch_flops(model: Model, micro_batch: int, seq: int | None, checkpointing: str) -> tuple[int, int]:
    """Model and hardware FLOPs of one micro-batch (forward + backward; hardware adds the recompute).
    Attention counted as 4 matmuls in backward (eager), the model-FLOPs convention of cost/time.py.
    Every term is per sample, so one sample's count times the micro-batch."""
    model_f, hw = _sample_flops(model, seq, checkpointing)
    return model_f * micro_batch, hw * micro_batch


@lru_cache(maxsize=256)
def _sample_flops(model: Model, seq: int | None, checkpointing: str) -> tuple[int, int]:
    from layerwise.cost.flops import model_flops
    from layerwise.workload import Workload

    from layerwise.spec.applies import has_attention

    # eager where there is attention (a model without has no such choice: spec/applies.py)
    base = Workload(batch=1, seq=seq, attention="eager" if has_attention(model.body) else "sdpa", device="cuda")

    def count(m: Model) -> tuple[int, int]:
        model_f = model_flops(m, base).total
        recompute = model_flops(m, base.with_(checkpointing=checkpointing)).recompute.total if checkpointing != "none" else 0
        return model_f, model_f + recompute

    body = model.body
    first = getattr(body, "n_first", 0)  # a stack of two kinds: linear in the second kind's number
    if not (hasattr(body, "n_layers") and hasattr(body, "block")) or body.n_layers < first + 3:
        return count(model)
    # identical layers: the count is linear in their number, so two small models give it exactly
    (m1, h1), (m2, h2) = (count(replace(model, body=replace(body, n_layers=first + k))) for k in (1, 2))
    n = body.n_layers - first - 1
    return m1 + n * (m2 - m1), h1 + n * (h2 - h1)
