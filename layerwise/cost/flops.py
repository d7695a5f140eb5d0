"""The FLOPs reading of a whole model under a workload: per-layer rows, totals, per token, and the
training compute of a token budget next to the 6·N·D convention.

1 multiply-add = 2 FLOPs. "matmul" FLOPs are what torch's FlopCounterMode counts (linear, conv,
attention scores and values, RNN gates); "other" FLOPs (norms, softmax, activations, elementwise,
pooling, the loss) are estimates with per-element costs stated at each block.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from layerwise.spec.applies import check_applies
from layerwise.spec.base import Block, Shape
from layerwise.spec.counts import FlopCtx, Flops
from layerwise.spec.model import Model
from layerwise.spec.shapes import prod
from layerwise.workload import Workload

# Cross-entropy over logits, forward: max, subtract, exp, sum, log, pick ~ 5 FLOPs per logit;
# its backward (softmax - one_hot) ~ 2 per logit. Not matmuls, so never in the counted ground truth.
CE_FWD_PER_LOGIT = 5
CE_BWD_PER_LOGIT = 2


@dataclass(frozen=True)
class FlopRow:
    path: str
    type: str
    level: int
    flops: Flops
    count: int = 1  # > 1: one row standing for this many equal copies ("blocks.1-79")


@dataclass(frozen=True)
class FlopReport:
    model: str
    input_shape: Shape
    flops: Flops  # one step (train) or one forward (infer), recompute and loss included
    recompute: Flops  # forward FLOPs repeated in backward by activation checkpointing
    loss: Flops
    rows: tuple[FlopRow, ...]
    tokens: int  # tokens (or samples) processed by the step
    mode: str
    decode: Flops = Flops()  # infer with --new-tokens: every decode step's forward, KV cache in use
    new_tokens: int = 0

    @property
    def forward(self) -> int:
        return self.flops.forward

    @property
    def backward(self) -> int:
        return self.flops.backward if self.mode == "train" else 0

    @property
    def total(self) -> int:
        """The step (train) or the prefill (infer); decode steps are apart, in `decode`."""
        return self.forward + self.backward

    @property
    def decode_per_token(self) -> int:
        """Decode FLOPs per generated token, averaged over the steps (the cache grows each step)."""
        return self.decode.forward // self.new_tokens if self.new_tokens else 0

    @property
    def per_token(self) -> float:
        return self.total / self.tokens


def checkpointed_runs(body: Block, in_shape: Shape):
    """(unit, its input shape, copies) of each unit that `--checkpointing full` wraps: every copy
    inside a Repeat (transformer blocks, ResNet blocks), outermost Repeats only — the measure reading
    wraps the same; equal copies on equal shapes come once, with their number."""
    if body.type_name == "repeat":
        for names, child, child_in in body.runs(in_shape):
            yield child, child_in, len(names)
        return
    for _, child, child_in in body.runs(in_shape):
        yield from checkpointed_runs(child, child_in)


def _attention_core(block: Block, in_shape: Shape, ctx: FlopCtx) -> Flops:
    """Forward FLOPs that selective checkpointing recomputes in the attention blocks inside `block`.

    The recompute stops at the last tensor backward needs (torch's early stop): eager attention's
    backward needs the probabilities, so q@k^T, scale, mask and softmax rerun but not probs@v; sdpa
    is one op whose outputs are saved, so it reruns whole (measured: tests/cost/test_flops_model.py).
    """
    total = Flops()
    if block.type_name == "attention":
        core = block.own_flops(in_shape, ctx)
        eager = block._impl(ctx) == "eager"
        total = total + Flops(fwd_matmul=core.fwd_matmul // 2 if eager else core.fwd_matmul, fwd_other=core.fwd_other)
    if block.type_name == "mla":  # q @ k^T is its own width (d_nope + d_rope), not half of the core
        core = block.own_flops(in_shape, ctx)
        scores = 2 * in_shape[0] * block.n_heads * in_shape[1] ** 2 * block.d_qk
        eager = block._impl(ctx) == "eager"
        total = total + Flops(fwd_matmul=scores if eager else core.fwd_matmul, fwd_other=core.fwd_other)
    for names, child, child_in in block.runs(in_shape):
        total = total + _attention_core(child, child_in, ctx) * len(names)
    return total


def _unsaved_tail(unit: Block, in_shape: Shape, ctx: FlopCtx) -> Flops:
    """Forward FLOPs at the end of a checkpointed unit that PyTorch does not recompute.

    Non-reentrant `torch.utils.checkpoint` stops recomputing (early stop, the default) once the last
    tensor saved for backward is rebuilt. In a pre-norm transformer block the FFN's down projection
    feeds only the residual add, which saves nothing, so its matmul is skipped; a post-norm block ends
    in a LayerNorm that saves its input, and residual dropout saves a mask, so those recompute all;
    so does Gemma's sandwich norm after the FFN, and Qwen2-MoE's gate multiply on the shared expert.
    """
    if (unit.type_name not in ("transformer_block", "decoder_block") or unit.norm_position == "post" or unit.dropout > 0
            or getattr(unit, "sandwich", False)):
        return Flops()
    ffn = unit.ffn
    if ffn.type_name == "moe" and getattr(ffn, "shared_gate", False):
        return Flops()
    if ffn.type_name == "moe":  # routed experts' outputs are saved by the gate multiply; the shared one is not
        ffn, prefix = getattr(ffn, "shared_expert", None), "ffn.shared_expert"
        if ffn is None:
            return Flops()
    else:
        prefix = "ffn"
    if ffn.type_name != "ffn" or ffn.dropout > 0:
        return Flops()
    from layerwise.spec.base import walk

    for info in walk(unit, in_shape, collapse_over=1):
        if info.path == f"{prefix}.down_proj":
            return info.block.flops(info.in_shape, replace(ctx, input_grad=True))
    return Flops()


def _rows(block: Block, in_shape: Shape, ctx: FlopCtx, path: str, level: int, out: list) -> None:
    """Rows in execution order; a run of more than COLLAPSE_OVER equal copies is its first copy and
    one row for the others (their FLOPs summed)."""
    from layerwise.cost.summary import COLLAPSE_OVER

    if path:
        out.append(FlopRow(path, block.type_name, level, block.flops(in_shape, ctx)))
    grad = ctx.input_grad
    for names, child, child_in in block.runs(in_shape):
        listed = names if len(names) <= COLLAPSE_OVER else names[:1]
        for name in listed:
            _rows(child, child_in, replace(ctx, input_grad=grad), f"{path}.{name}" if path else name, level + 1, out)
            grad = grad or child.params().trainable > 0
        if len(listed) < len(names):
            rest = f"{names[1]}-{names[-1].rsplit('.', 1)[-1]}"
            flops = child.flops(child_in, replace(ctx, input_grad=grad)) * (len(names) - 1)
            out.append(FlopRow(f"{path}.{rest}" if path else rest, child.type_name, level + 1, flops, len(names) - 1))


def model_flops(model: Model, workload: Workload) -> FlopReport:
    """FLOPs of one training step (forward, loss, backward, recompute) or one inference forward
    (the prefill) plus, with --new-tokens, the decode steps. --lora-rank: the LoRA model (frozen
    weights compute no weight gradients)."""
    check_applies(model, workload)
    if workload.lora_rank:
        from layerwise.spec.lora import apply_lora

        model = apply_lora(model, workload.lora_rank)
    in_shape = model.input_shape(workload.batch, workload.seq, workload.image)
    # The input batch never requires grad: the first layer computes no grad_input.
    ctx = FlopCtx(input_grad=False, attention=workload.attention, device=workload.device)
    step = model.body.flops(in_shape, ctx)
    rows: list[FlopRow] = []
    _rows(model.body, in_shape, ctx, "", 0, rows)
    out_shape = model.body.out_shape(in_shape)
    loss = Flops(fwd_other=CE_FWD_PER_LOGIT * prod(out_shape), bwd_other=CE_BWD_PER_LOGIT * prod(out_shape))
    recompute = Flops()
    if workload.mode == "train" and workload.checkpointing != "none":
        for unit, unit_in, copies in checkpointed_runs(model.body, in_shape):
            unit_ctx = replace(ctx, input_grad=True)
            if workload.checkpointing == "full":
                f = unit.flops(unit_in, unit_ctx)
                tail = _unsaved_tail(unit, unit_in, unit_ctx)
                f = Flops(fwd_matmul=f.fwd_matmul - tail.fwd_matmul, fwd_other=f.fwd_other - tail.fwd_other)
            else:  # selective: only the attention core is recomputed (Korthikanti et al. 2022)
                f = _attention_core(unit, unit_in, unit_ctx)
            recompute = recompute + Flops(bwd_matmul=f.fwd_matmul, bwd_other=f.fwd_other) * copies
    if workload.mode == "infer":
        step = Flops(fwd_matmul=step.fwd_matmul, fwd_other=step.fwd_other, causal_skippable=step.causal_skippable)
        loss = Flops()
    total = step + loss + recompute
    tokens = prod(in_shape[:2]) if model.input.kind == "tokens" else in_shape[0]
    decode = decode_flops(model, workload) if workload.new_tokens else Flops()
    return FlopReport(model=model.name, input_shape=in_shape, flops=total, recompute=recompute, loss=loss,
                      rows=tuple(rows), tokens=tokens, mode=workload.mode, decode=decode,
                      new_tokens=workload.new_tokens)


def decode_flops(model: Model, workload: Workload) -> Flops:
    """Forward FLOPs of `new_tokens` decode steps after a prompt of `seq` tokens, with a KV cache
    (layerwise.build.lm's `forward(ids, kv_cache=, start_pos=)`): step i runs the model on one token
    per sequence, and each self-attention scores it against the L_i = seq + i + 1 cached keys, or
    min(L_i, window) on a sliding-window layer (its cache is a rolling buffer of the window: build/
    attention.py `_rolling`). The core is linear in the key count, so the steps sum to one core over
    sum_i L_i keys; the rest of the model is the one-token forward, new_tokens times."""
    from layerwise.cost.memory import has_kv_cache
    from layerwise.spec.base import walk
    from layerwise.spec.errors import WorkloadError

    if workload.mode != "infer" or not has_kv_cache(model):
        raise WorkloadError(f"--new-tokens: {model.name} has no KV-cache decoding (a causal decoder LM "
                            f"with --mode infer has)")
    n, prompt = workload.new_tokens, model.input_shape(workload.batch, workload.seq, workload.image)[1]
    if model.body.type_name == "encoder_decoder":
        from layerwise.cost.seq2seq_flops import seq2seq_decode_flops

        return seq2seq_decode_flops(model.body, workload.batch, prompt, n, workload)
    one = model.input_shape(workload.batch, 1, workload.image)
    ctx = FlopCtx(input_grad=False, attention=workload.attention, device=workload.device)
    step = model.body.flops(one, ctx)
    extra = Flops()
    for info in walk(model.body, one):
        if info.block.type_name == "mamba_mixer":  # its step convolves one position over the state
            extra = extra + _mamba_conv_step(info.block, info.in_shape[0], ctx) * n
        if info.block.type_name == "attention":
            b, w = info.in_shape[0], info.block.sliding_window
            grow = min(n, max(0, w - prompt)) if w else n  # steps before the window is full
            keys = grow * prompt + grow * (grow + 1) // 2 + (n - grow) * w  # sum_i min(prompt + i + 1, w)
            core = info.block.core_flops(b, 1, keys, False, False, False, "sdpa")
            own = info.block.core_flops(b, 1, 1, False, False, False, "sdpa")
            extra = extra + Flops(fwd_matmul=core.fwd_matmul - n * own.fwd_matmul,
                                  fwd_other=core.fwd_other - n * own.fwd_other)
        elif info.block.type_name == "mla":
            extra = extra + info.block.decode_extra(info.in_shape[0], n, prompt)
    return Flops(fwd_matmul=n * step.fwd_matmul + extra.fwd_matmul, fwd_other=n * step.fwd_other + extra.fwd_other)


def _mamba_conv_step(mixer, b: int, ctx: FlopCtx) -> Flops:
    """A Mamba decode step (build/mamba.py `_conv_cached`) convolves its conv state (B, Di, K) into
    one output position; the one-token forward pads the token to K outputs. The difference."""
    conv = dict(mixer.children())["conv1d"]
    k = conv.kernel if isinstance(conv.kernel, int) else conv.kernel[0]
    padded = conv.flops((b, conv.c_in, 1), ctx)
    step = replace(conv, padding=0).flops((b, conv.c_in, k), ctx)
    return Flops(fwd_matmul=step.fwd_matmul - padded.fwd_matmul, fwd_other=step.fwd_other - padded.fwd_other)


@dataclass(frozen=True)
class TrainingCompute:
    """Training compute for a token budget (token_budget_flops, the same count `layerwise time`
    uses) next to 6·N·D."""

    tokens: int
    flops: int
    six_nd: int
    params: int
    non_embedding_params: int

    @property
    def ratio_to_6nd(self) -> float:
        return self.flops / self.six_nd


def token_budget_flops(model: Model, tokens: int, seq: int | None = None) -> tuple[int, int, int]:
    """(model FLOPs of one sequence of `seq` tokens, of `tokens` tokens, 6·N·D with N the active
    parameters): the one count behind `flops --tokens` and `time`. Model FLOPs, MFU's numerator
    (PaLM, arXiv 2204.02311 appendix B): forward + backward with no grad for the input data, and
    attention's backward as 4 bmms (eager), not sdpa's 5 (its recompute of the scores is hardware,
    not model, FLOPs); no activation-checkpointing recompute. Attention's s² terms are in, 6ND
    leaves them out."""
    in_shape = model.input_shape(batch=1, seq=seq)
    per_seq = model.body.flops(in_shape, FlopCtx(input_grad=False, attention="eager")).total
    return per_seq, per_seq * tokens // in_shape[1], 6 * model.body.active_params().total * tokens


def training_compute(model: Model, workload: Workload, tokens: int) -> TrainingCompute:
    """token_budget_flops at the workload's sequence length, with the parameter counts."""
    _, flops, six = token_budget_flops(model, tokens, workload.seq)
    n = model.params().total
    embed = sum(count * child.params().total for count, child in _embeddings(model.body))
    return TrainingCompute(tokens=tokens, flops=flops, six_nd=six, params=n, non_embedding_params=n - embed)


def _embeddings(block: Block, count: int = 1):
    """(copies, block) of the embedding tables in the tree, equal neighbours walked once."""
    for names, child in block.child_groups():
        if child.type_name in ("embedding", "learned_positions"):
            yield count * len(names), child
        else:
            yield from _embeddings(child, count * len(names))
