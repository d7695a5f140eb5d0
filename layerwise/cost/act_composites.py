"""Dataflow of the composites whose children are not a plain chain: residual, repeat (where
activation checkpointing applies), transformer_block, decoder_lm (tied head), the ResNet blocks.
Each mirrors its module in layerwise/build/."""
from __future__ import annotations

from layerwise.cost import act_hf
from layerwise.cost.act_trace import T, Trace
from layerwise.cost.activations import act, run, run_copies


def add(tr: Trace, a: T, b: T) -> T:
    """a + b saves nothing."""
    return tr.pointwise(a, b)


def residual_add(tr: Trace, x: T, branch_start: int, y: T) -> T:
    """x + branch(x), the branch's steps starting at `branch_start`. In backward the gradient of
    the sum (in the sum's dtype) waits for the branch's gradient of x, so it is held through
    every step of the branch."""
    tr.begin(".add")
    out = add(tr, x, y)
    if tr.policy.grad:
        # same dtype: the branch's last step receives that very gradient (its grad_out already
        # counts it); a low-precision branch receives a cast copy, so it is extra there too
        last = len(tr.steps) - 2 - (1 if y.dtype == out.dtype else 0)
        tr.holds.append((branch_start, last, out.storage.nbytes))
        if y.dtype != out.dtype:  # the sum ends a checkpointed region: its backward (nothing saved)
            # runs before the recomputation, so the cast copy waits beside the gradient at the
            # trigger (the engine casts in validate_outputs, torch/csrc/autograd/engine.cpp)
            tr.recompute_grad[len(tr.steps) - 1] = out.storage.nbytes + y.storage.nbytes
    return out


@act("residual")
def _residual(b, tr: Trace, x: T) -> T:
    start = len(tr.steps)
    return residual_add(tr, x, start, run(b.branch, "branch", tr, x))


@act("repeat")
def _repeat(b, tr: Trace, x: T) -> T:
    """Full checkpointing wraps each copy of the outermost repeat (layerwise.measure.setup)."""
    outermost = tr.sink is None and not getattr(tr, "_in_repeat", False)

    def copies_from(lo: int):  # copy lo + i of a run of equal copies
        def copy(i: int, x: T) -> T:
            if tr.policy.checkpointing == "full" and outermost:
                return tr.checkpointed(lambda t: _item(b, tr, t, lo + i), x)
            return _item(b, tr, x, lo + i)

        return copy

    if b.other is not None:  # two kinds of layers alternating (Gemma 2/3): each traced, none lumped
        copy = copies_from(0)
        for i in range(b.n_layers):
            x = copy(i, x)
        return x
    # a stack of two kinds in sequence (DeepSeek) runs the first n_first copies, then the rest; the
    # state is handed over through `box` so no frame here holds a run's input (nn.Sequential's loop does not)
    box = [x]
    del x
    for lo, hi in ((0, b.n_first), (b.n_first, b.n_layers)):
        if hi > lo:
            box.append(run_copies(tr, hi - lo, copies_from(lo), box.pop(), lambda i, lo=lo: str(lo + i)))
    return box.pop()


def _item(b, tr: Trace, x: T, i: int) -> T:
    prev = getattr(tr, "_in_repeat", False)
    tr._in_repeat = True
    try:
        return run(b.block_at(i), str(i), tr, x)
    finally:
        tr._in_repeat = prev


@act("transformer_block")
def _transformer(b, tr: Trace, x: T) -> T:
    kids = dict(b.children())

    def drop(name: str, t: T) -> T:
        return run(kids[name], name, tr, t) if name in kids else t

    def branch(norm: str | None, name: str, t: T) -> T:
        h = run(kids[norm], norm, tr, t) if norm else t
        out = run(kids[name], name, tr, h)
        post = f"{name}_post_norm"  # Gemma 2/3's sandwich norm on the branch output
        if post in kids:
            out = run(kids[post], post, tr, out)
        return drop(f"{name}_dropout", out)

    if b.parallel:
        start = len(tr.steps)
        h = run(kids["attn_norm"], "attn_norm", tr, x)
        g = run(kids["ffn_norm"], "ffn_norm", tr, x) if "ffn_norm" in kids else h
        attn_start = len(tr.steps)
        a = drop("attn_dropout", run(kids["attn"], "attn", tr, h))
        # `x + attn(h) + ffn(g)`: Python sums x + attn(h) before the ffn runs (the sum, not the
        # attention's output, lives through the ffn)
        tr.begin(".add")
        xa = add(tr, x, a)
        del a
        ffn_start = len(tr.steps)
        f = drop("ffn_dropout", run(kids["ffn"], "ffn", tr, g))
        if tr.policy.grad:  # in backward the ffn's gradient of its input waits through the attention's
            tr.holds.append((attn_start, ffn_start - 1, g.storage.nbytes))
        return residual_add(tr, xa, start, f)
    if b.norm_position == "post":
        start = len(tr.steps)
        x = run(kids["attn_norm"], "attn_norm", tr, residual_add(tr, x, start, branch(None, "attn", x)))
        start = len(tr.steps)
        return run(kids["ffn_norm"], "ffn_norm", tr, residual_add(tr, x, start, branch(None, "ffn", x)))
    start = len(tr.steps)
    x = residual_add(tr, x, start, branch("attn_norm", "attn", x))
    start = len(tr.steps)
    return residual_add(tr, x, start, branch("ffn_norm", "ffn", x))


@act("decoder_lm")
def _decoder_lm(b, tr: Trace, x: T) -> T:
    for name, child in b.children():
        if name == "lm_head":
            if tr.policy.hf is not None:
                act_hf.hold_hidden(tr, x)
                return act_hf.softcap_logits(tr, run(child, name, tr, x))
            return _softcap(b, tr, run(child, name, tr, x))
        if name == "blocks" and tr.policy.hf is not None and hasattr(b.block, "attn"):  # --impl hf: mask
            act_hf.before_layers(tr, b.block.attn, x)  # and rotary tables (a Mamba block has none)
        x = run(child, name, tr, x)
        if name == "embed" and b.scale_embeddings:  # x * sqrt(d_model): a new tensor, nothing saved
            tr.path.append("embed")
            tr.begin(".scale")
            tr.path.pop()
            x = tr.new(x.shape, x.dtype, x.grad)
        if name == "blocks" and tr.policy.hf is not None:
            act_hf.after_layers(tr)
    if tr.policy.hf is not None:
        act_hf.hold_hidden(tr, x)
    tr.path.append("lm_head")  # tied: F.linear(x, embed.weight), the same parameter
    try:
        tr.begin()
        w = tr.param("/" + _join(tr, "embed.weight"), b.vocab_size * b.d_model, b.trainable, (b.vocab_size, b.d_model))
        logits = tr.mm(x, w, (*x.shape[:-1], b.vocab_size), b_key=_join(tr, "embed.weight"))
    finally:
        tr.path.pop()
    return _softcap(b, tr, logits) if tr.policy.hf is None else act_hf.softcap_logits(tr, logits)


def _softcap(b, tr: Trace, logits: T) -> T:
    """Gemma 2's cap * tanh(logits / cap): the division and the product save nothing, tanh saves
    its output (a logits-sized tensor kept for backward). The uncapped logits live until the
    module's forward rebinds them (after the product)."""
    if not b.logit_softcap:
        return logits
    tr.path.append("lm_head")
    tr.begin(".softcap")
    tr.path.pop()
    divided = tr.new(logits.shape, logits.dtype, logits.grad)
    capped = tr.new(divided.shape, divided.dtype, divided.grad)
    tr.save(capped)
    del divided
    return tr.new(capped.shape, capped.dtype, capped.grad)


def _join(tr: Trace, name: str) -> str:
    return ".".join([*tr.path[:-1], name])


@act("resnet_basic", "resnet_bottleneck")
def _resblock(b, tr: Trace, x: T) -> T:
    h, start = x, len(tr.steps)
    for name, child in b.main():
        h = run(child, name, tr, h)
    ds = b.downsample()
    skip = run(ds, "downsample", tr, x) if ds is not None else x
    s = residual_add(tr, skip, start, h)
    relu = dict(b.children())["relu"]
    return run(relu, "relu", tr, s)

