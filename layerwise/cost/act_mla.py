"""Saved tensors of multi-head latent attention, mirroring build/mla.py's forward op by op.
Legend: B batch, S queries (= keys), H heads, dn/dr/dv the no-position, rotary and value widths,
dq = dn + dr, r the latent width. The rotations reuse attention's (act_seq._rope); the core is
eager's products, or sdpa: the fused CPU kernel when dv == dq, else its math path (CPU's flash
kernel needs one head width for q, k and v)."""
from __future__ import annotations

from layerwise.cost.act_leaves import dropout_op
from layerwise.cost.act_seq import _math as _seq_math, _math_path, _rope, _sdpa, math_upcasts
from layerwise.cost.act_trace import Storage, T, Trace
from layerwise.cost.activations import act, run
from layerwise.cost.precision import nbytes


@act("mla")
def _mla(b, tr: Trace, x: T) -> T:
    if tr.policy.hf is not None:  # --impl hf: transformers' DeepSeek attention (cost/act_hf_mla.py)
        from layerwise.cost.act_hf_mla import mla

        return mla(b, tr, x)
    bsz, s, _ = x.shape
    h, dn, dr, dv = b.n_heads, b.d_nope, b.d_rope, b.d_v
    q = x
    for name in b.q_path():
        q = run(getattr(b, name), name, tr, q)
    q = tr.view(q, (bsz, h, s, dn + dr))  # view + transpose; alive to the end (q_nope is a local)
    lat = run(b.kv_a_proj_with_mqa, "kv_a_proj_with_mqa", tr, x)  # (B, S, r + dr)
    c = run(b.kv_a_layernorm, "kv_a_layernorm", tr, tr.view(lat, (bsz, s, b.kv_rank)))
    tr.begin(".core")
    cos, sin = tr.new((s, dr), "fp32", False), tr.new((s, dr), "fp32", False)
    q_rope = _rope(tr, tr.view(q, (bsz, h, s, dr)), [cos, sin])
    k_rope = _rope(tr, tr.view(lat, (bsz, 1, s, dr)), [cos, sin])
    del lat  # its last view is rotated: the projection's output dies
    sk = s
    if tr.decode is not None:  # a decode step (cost/decode.py): this call's latents go into the cache,
        # which is read back up to start + S (views: the cache's own bytes)
        start, total = tr.decode
        sk = start + s
        c = T((bsz, 1, sk, b.kv_rank), c.dtype, False, Storage(0, "kv_cache"))
        k_rope = T((bsz, 1, sk, dr), k_rope.dtype, False, Storage(0, "kv_cache"))
    # linear's reshape of a (B, 1, Sk, r) slice of the (B, 1, total, r) cache: a copy (a temporary)
    copied = tr.decode is not None and bsz > 1 and sk < tr.decode[1] and tr.policy.autocast is None
    kv = run(b.kv_b_proj, "kv_b_proj", tr, tr.new(c.shape, c.dtype, False) if copied else c)  # (B, Sk, H * (dn + dv))
    tr.begin(".core")
    q_full = tr.new((bsz, h, s, dn + dr), q.dtype, q.grad or q_rope.grad)  # cat: saves nothing
    k_full = tr.new((bsz, h, sk, dn + dr), kv.dtype, kv.grad or k_rope.grad)
    v = tr.view(kv, (bsz, h, sk, dv))
    fused = tr.policy.attention == "sdpa" and dv == dn + dr and not _math_path(tr, b)
    core = _eager if tr.policy.attention == "eager" else (_fused if fused else _math)
    if not tr.policy.grad and not fused:
        core = _eager_no_grad if tr.policy.attention == "eager" else _math_no_grad
    if tr.decode is not None and fused:  # an explicit mask past position 0
        core = _fused_masked
    if tr.policy.checkpointing == "selective" and tr.sink is None:  # recompute the core in backward
        y = tr.checkpointed(lambda q_, k_, v_: core(tr, b, q_, k_, v_), q_full, k_full, v)
    else:
        y = core(tr, b, q_full, k_full, v)  # (B, H, S, dv)
    if y.grad and not fused:  # its backward's most, at softmax's: the gradients of the probabilities
        # and of the scores, two (B, H, S, S); the output's gradient and the copy of v are freed by
        # then, v's gradient alive instead (measured: tests/cost/test_memory_suite2_families.py)
        p = nbytes(bsz * h * s * s, "fp32" if _low_cpu(tr, q_full) else q_full.dtype)
        tr.steps[-1].extra += p
        tr.steps[-1].io = (p, 0)
    # transpose(1, 2).reshape: a copy (measured, also fused); a view for one query (a decode step)
    y2 = tr.new((bsz, s, h * dv), y.dtype, y.grad) if s > 1 else tr.view(y, (bsz, s, h * dv))
    return run(b.o_proj, "o_proj", tr, y2)


def _eager(tr: Trace, b, q: T, k: T, v: T, scaled: bool = False) -> T:
    """q @ k^T saves q and k (contiguous from the cat: the batched views are free), or, on the math
    path (`scaled`), their scaled copies; masked_fill saves the (S, S) bool mask (the math path adds
    a float mask in place: nothing); softmax saves its output, which the second product saves with
    a copy of the strided v."""
    bsz, h, s, _ = q.shape
    grad = q.grad or k.grad or v.grad
    if scaled:
        tr.save(tr.new(q.shape, q.dtype, q.grad), tr.new(k.shape, k.dtype, k.grad))
    else:
        tr.save(q, k)
        tr.save(tr.new((s, s), "bool", False))
    probs = tr.new((bsz, h, s, s), q.dtype, grad)
    tr.save(probs)
    probs = dropout_op(tr, probs, b.dropout)
    tr.save(probs, tr.new(v.shape, v.dtype, v.grad))
    return tr.new((bsz, h, s, v.shape[-1]), q.dtype, grad)


def _fused(tr: Trace, b, q: T, k: T, v: T) -> T:
    """CPU flash attention (dv == dq): saves q, k, v (the strided view: kv_b_proj's whole output),
    its output and logsumexp."""
    return _sdpa(tr, b, q, k, v)


def _math(tr: Trace, b, q: T, k: T, v: T) -> T:
    """torch's _scaled_dot_product_attention_math (CPU sdpa when dv != dq, or with dropout): act_seq's
    math path (low-precision q, k, v upcast to fp32: math_upcasts) around this block's eager core."""
    return _seq_math(tr, b, q, k, v, eager=_eager)


def _eager_no_grad(tr: Trace, b, q: T, k: T, v: T) -> T:
    """build/mla.py's _eager under no_grad, in allocation order (measured): q @ k^T (contiguous
    operands: no copies) dies into the scaled scores, which die into the masked ones; the bool mask,
    the masked scores and the probabilities stay (locals) to the end; a copy of the strided v for the
    product; the output."""
    bsz, h, s, _ = q.shape
    sk = k.shape[2]
    prod_ = tr.new((bsz, h, s, sk), q.dtype, False)
    scores = tr.new((bsz, h, s, sk), q.dtype, False)
    del prod_
    keep = tr.new((s, sk), "bool", False)
    flipped = tr.new((s, sk), "bool", False)
    masked = tr.new((bsz, h, s, sk), q.dtype, False)
    del scores, flipped
    probs = tr.new((bsz, h, s, sk), q.dtype, False)
    v_c = tr.new(v.shape, v.dtype, False)
    out = tr.new((bsz, h, s, v.shape[-1]), q.dtype, False)
    del v_c, probs, masked, keep
    return out


def _math_no_grad(tr: Trace, b, q: T, k: T, v: T) -> T:
    """torch's math sdpa under no_grad, in allocation order (measured): the causal mask as a float
    (S, S) tensor, the scaled q (alive to the end), the scaled k^T (dies in the product), the scores,
    the masked scores, the probabilities, a copy of the strided v, the output; low precision
    first upcast to fp32 (and the output cast back)."""
    bsz, h, s, _ = q.shape
    n = k.shape[2]
    low = math_upcasts(q.dtype)
    dtype = "fp32" if low else q.dtype
    # past position 0 (a decode step) build/mla.py passes attention_mask's bool (S, Sk), which sdpa
    # turns into an additive one in q's own dtype before the call; else is_causal's, made inside
    keep = _decode_mask(tr, s, n) if tr.decode is not None else None
    given = tr.new((s, n), q.dtype, False) if keep is not None else None
    ups = [tr.new(t.shape, "fp32", False) for t in (q, k, v)] if low else []
    mask = given if given is not None else tr.new((s, s), dtype, False)
    sq = tr.new(q.shape, dtype, False)
    sk = tr.new(k.shape, dtype, False)
    scores = tr.new((bsz, h, s, n), dtype, False)
    del sk
    masked = tr.new((bsz, h, s, n), dtype, False)
    del scores
    probs = tr.new((bsz, h, s, n), dtype, False)
    del masked, mask, given
    probs_low = tr.new(probs.shape, q.dtype, False) if low else None  # measured: a low copy stays
    v_c = tr.new(v.shape, dtype, False)
    out = tr.new((bsz, h, s, v.shape[-1]), dtype, False)
    del v_c, probs, probs_low, sq, ups
    return tr.new(out.shape, q.dtype, False) if low else out


def _decode_mask(tr: Trace, s: int, n: int) -> T:
    """build/attention.py's attention_mask(S, Sk, causal, offset=start): the positions (int64), the
    bool keep and its j <= i; the keep stays (a local of build/mla.py's _sdpa)."""
    i, j = tr.new((s,), "int64", False), tr.new((n,), "int64", False)
    keep = tr.new((s, n), "bool", False)
    le = tr.new((s, n), "bool", False)
    del le, i, j
    return keep


def _fused_masked(tr: Trace, b, q: T, k: T, v: T) -> T:
    """CPU flash attention with the decode step's explicit mask (dv == dq, inference): the bool
    mask, its additive form in q's dtype, the output and logsumexp."""
    bsz, h, s, _ = q.shape
    keep = _decode_mask(tr, s, k.shape[2])
    additive = tr.new((s, k.shape[2]), q.dtype, False)
    out = tr.new((bsz, h, s, v.shape[-1]), q.dtype, False)
    lse = tr.new((bsz, h, s), "fp32", False)
    del lse, additive, keep
    return out


def _low_cpu(tr: Trace, t: T) -> bool:
    """The math path upcasts low-precision q, k, v to fp32 on CPU."""
    return math_upcasts(t.dtype) and tr.policy.attention == "sdpa"
