"""Dataflow of the encoder-decoder (layerwise/build/seq2seq.py) for the saved-activation reading.

The encoder's output (the memory) is one storage read by every decoder layer's cross-attention
k/v projections: saved once (by the first of them), alive until the encoder's backward, and its
gradient accumulates over the decoder layers' backward (held from the last decoder layer's
backward to the encoder's)."""
from __future__ import annotations

from layerwise.cost import act_hf
from layerwise.cost.act_composites import _item, residual_add
from layerwise.cost.act_leaves import dropout_op
from layerwise.cost.act_trace import T, Trace, promote
from layerwise.cost.activations import act, run


@act("encoder_decoder")
def _encoder_decoder(b, tr: Trace, x: T) -> T:
    kids = dict(b.children())
    bsz, s, _ = x.shape
    src, tgt = tr.view(x, (bsz, s)), tr.view(x, (bsz, s))  # ids[..., 0], ids[..., 1]: views

    def side(name: str, t: T) -> T:
        return run(kids[name], name, tr, t) if name in kids else t

    h = side("embed", src)
    for name in ("enc_pos", "pos", "enc_embed_norm", "drop"):
        h = side(name, h)
    box = [h]  # the build loops over the layers itself: the stack's input dies after layer 0
    del h
    # T5's bias (1, H, S, S) is a local of encode() and decode(): alive through the final norm (and head)
    h, bias = _stack(b, "enc", tr, box, s)
    memory = _stack_end(tr, side("enc_norm", h))
    del h, bias
    born = len(tr.steps)  # the memory's gradient is consumed by the step that made it (enc_norm)
    if getattr(tr, "prefill_cache", False) and not tr.policy.grad:
        memory = _fill_cross(b, tr, memory)  # None: the decoder reads the cross caches
    h = side("tgt_embed" if "tgt_embed" in kids else "embed", tgt)
    for name in ("dec_pos", "pos", "dec_embed_norm", "drop"):
        h = side(name, h)
    outer, tr.memory = getattr(tr, "memory", None), memory
    box = [h]
    del h
    try:
        h, bias = _stack(b, "dec", tr, box, s, *([memory] if memory is not None else []))
    finally:
        tr.memory = outer
        tr.cross_cached = 0
    if memory is not None and tr.policy.grad and memory.grad:  # the memory's gradient, summed over the decoder layers:
        # born in the last layer's cross-attention v_proj backward (counted there as its grad_in),
        # held from the step before it back to the encoder's last step
        # (under LoRA the projection is a wrapper: its steps are cross_attn.v_proj.base, .lora_a, ...)
        last = max(i for i, st in enumerate(tr.steps) if f".cross_attn.v_proj." in f".{st.path}.")
        tr.holds.append((born, last - 1, memory.storage.nbytes))
    h = _stack_end(tr, side("dec_norm", h))  # the memory stays alive to the head: an argument of decode()
    if tr.policy.hf is not None:  # T5Stack's position_bias dies as the decoder stack returns
        act_hf.hold_hidden(tr, h)  # T5: decoder_outputs keeps it while lm_head reads its scaled copy
        bias = None
    if "lm_head" in kids:
        out = run(kids["lm_head"], "lm_head", tr, h)
        del bias
        return _final_logits_bias(tr, out)
    table = "tgt_embed" if "tgt_embed" in kids else "embed"
    tr.path.append("lm_head")  # tied: F.linear(x, table.weight), the same parameter
    try:
        tr.begin()
        key = ".".join([*tr.path[:-1], f"{table}.weight"])
        w = tr.param("/" + key, b.vocab_size * b.d_model, b.trainable, (b.vocab_size, b.d_model))
        out = tr.mm(h, w, (*h.shape[:-1], b.vocab_size), b_key=key)
        del bias
        return _final_logits_bias(tr, out)
    finally:
        tr.path.pop()


def _final_logits_bias(tr: Trace, logits: T) -> T:
    """--impl hf, BartForConditionalGeneration: lm_head(x) + final_logits_bias, an fp32 buffer of
    zeros: new logits (fp32 under autocast), the head's own output dying."""
    if tr.policy.hf is None or tr.policy.hf.seq2seq != "bart":
        return logits
    tr.begin(".final_logits_bias")
    return tr.new(logits.shape, promote(logits.dtype, "fp32"), logits.grad)


def _stack_end(tr: Trace, h: T) -> T:
    """--impl hf: T5Stack.forward's dropout after the final norm; the stack's mask and T5's
    cross-attention zeros die as it returns (act_hf.after_layers)."""
    if tr.policy.hf is None:
        return h
    act_hf.after_layers(tr)
    if not tr.policy.hf.stack_dropout:
        return h
    tr.begin(".stack_dropout")
    return dropout_op(tr, h, tr.policy.hf.stack_dropout)


def _fill_cross(b, tr: Trace, memory: T) -> None:
    """EncoderDecoderModule.fill_cross: each decoder layer's k_proj and v_proj of the memory, copied
    into the cross caches (counted as kv_cache) and dropped; then the memory is dropped too."""
    cross = b.dec_block.cross_attn
    for i in range(b.dec_layers):
        tr.path += ["decoder", str(i), "cross_attn"]
        try:
            k = run(cross.k_proj, "k_proj", tr, memory)
            v = run(cross.v_proj, "v_proj", tr, memory)
            del k, v
        finally:
            del tr.path[-3:]
    tr.cross_cached = memory.shape[1]  # the decoder's cross-attention reads this many cached positions
    return None


def _stack(b, side: str, tr: Trace, box: list[T], s: int, *extra: T) -> tuple[T, T | None]:
    """One stack's repeat (its input in a one-item list `box`, so no caller keeps it alive: the
    build loops over the layers itself, unlike nn.Sequential's caller). Its layers also read the memory (decoder) and T5's relative position
    bias (1, H, S, S), made once per stack: under full checkpointing each layer is checkpointed
    with them as inputs (block(x, memory, bias)), so they stay saved; the bias's gradient sums
    over the layers' backward (held from the last layer's to the table's). Returns the output and the
    bias (None without one), which the caller holds as the build's encode() / decode() do."""
    kids = dict(b.children())
    bias = None
    if f"{side}_rel_bias" in kids:
        ids = tr.new((s, s), "int64", False)  # the bucket of each (query, key) pair
        bias = run(kids[f"{side}_rel_bias"], f"{side}_rel_bias", tr, ids)
        del ids
        extra = (*extra, bias)
    rep = kids["encoder" if side == "enc" else "decoder"]
    outer, tr.score_bias = getattr(tr, "score_bias", None), bias
    tr.path.append("encoder" if side == "enc" else "decoder")
    start = len(tr.steps)
    h = box.pop()  # the only reference: the first layer's output replaces it
    try:
        outermost = tr.sink is None and not getattr(tr, "_in_repeat", False)
        for i in range(rep.n_layers):
            if tr.policy.checkpointing == "full" and outermost:
                h = tr.checkpointed(lambda t, *_, i=i: _item(rep, tr, t, i), h, *extra)
            else:
                h = _item(rep, tr, h, i)
    finally:
        tr.score_bias = outer
        tr.path.pop()
    if bias is not None and tr.policy.grad and bias.grad:
        tr.holds.append((start, len(tr.steps) - 1, bias.storage.nbytes))
    return h, bias


@act("relative_position_bias")
def _relative_position_bias(b, tr: Trace, ids: T) -> T:
    """embedding(ids, weight) (S, Sk, H), permuted to (1, H, S, Sk): a view."""
    tr.begin()
    tr.param("weight", b.n_buckets * b.n_heads, b.trainable, (b.n_buckets, b.n_heads))
    out = tr.new((*ids.shape, b.n_heads), tr.policy.dtype, b.trainable)
    if out.grad:
        tr.save(ids)  # embedding_backward needs the bucket ids
    return tr.view(out, (1, b.n_heads, *ids.shape))


@act("decoder_block")
def _decoder_block(b, tr: Trace, x: T) -> T:
    kids = dict(b.children())

    def branch(name: str, t: T) -> T:
        if name == "cross_attn":
            prev, tr.context = getattr(tr, "context", None), tr.memory
            try:
                out = run(kids[name], name, tr, t)
            finally:
                tr.context = prev
        else:
            out = run(kids[name], name, tr, t)
        drop = f"{name}_dropout"
        return run(kids[drop], drop, tr, out) if drop in kids else out

    for name in ("self_attn", "cross_attn", "ffn"):
        norm = f"{name}_norm"
        start = len(tr.steps)
        if b.norm_position == "post":
            x = run(kids[norm], norm, tr, residual_add(tr, x, start, branch(name, x)))
        else:
            x = residual_add(tr, x, start, branch(name, run(kids[norm], norm, tr, x)))
    return x
