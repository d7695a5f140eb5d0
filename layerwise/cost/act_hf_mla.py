"""`--impl hf`: DeepSeek-V2/V3's multi-head latent attention as transformers 5.23 runs it, op by op.
Legend: B batch, S queries (= keys), H heads, dn/dr/dv the no-position, rotary and value widths,
dq = dn + dr, r the latent width (kv_lora_rank).

Read from models/deepseek_v2/modeling_deepseek_v2.py (DeepseekV2Attention.forward, expand_kv,
apply_rotary_emb) and models/deepseek_v3/modeling_deepseek_v3.py:
  latents    kv_a_proj_with_mqa(x) split into the latent (B, S, r), normed by a LlamaRMSNorm-style
             Python norm, and the shared rotary key (B, 1, S, dr)
  rotary     V2: apply_rotary_emb in complex numbers: x.float() viewed as complex, times freqs_cis
             (complex64 (1, S, dr/2), made once per forward, saved by every product), .type_as(x);
             V3 (rope_interleave): the even and odd dims times the shared cos/sin tables' first halves,
             cat (promoted to the tables' dtype: the query is fp32 under autocast)
  cache      with use_cache (and no checkpointing) the compressed latent and rotary key are cat into a
             DynamicCache (copies, held to the loss)
  expand_kv  kv_b_proj of the latent (B, 1, S, H * (dn + dv)) split into k_nope and a strided value
             view; the key is new_empty (B, H, S, dq) filled by two copy_ (nothing saved)
  core       eager: matmul(query, key^T) on the contiguous cat/new_empty tensors (views, no copies),
             the fp32 softmax and its low copy, matmul with the strided value (a copy, a view at batch 1);
             sdpa: dv != dq (CPU's flash kernel needs one head width): the math path
"""
from __future__ import annotations

from layerwise.cost import act_hf
from layerwise.cost.act_leaves import dropout_op
from layerwise.cost.act_trace import T, Trace, nbytes, promote
from layerwise.cost.activations import run


def mla(b, tr: Trace, x: T) -> T:
    """DeepseekV2Attention.forward / DeepseekV3Attention.forward on x (B, S, d)."""
    bsz, s, _ = x.shape
    h, dn, dr, dv = b.n_heads, b.d_nope, b.d_rope, b.d_v
    q = x
    for name in b.q_path():
        q = run(getattr(b, name), name, tr, q)
    q = tr.view(q, (bsz, h, s, dn + dr))  # view + transpose; q_nope, q_pe: split views
    lat = run(b.kv_a_proj_with_mqa, "kv_a_proj_with_mqa", tr, x)  # (B, S, r + dr)
    c = run(b.kv_a_layernorm, "kv_a_layernorm", tr, tr.view(lat, (bsz, s, b.kv_rank)))
    tr.begin(".core")
    rotary = _rotary if tr.policy.hf.mla == "deepseek_v2" else _rotary_interleave
    q_pe = rotary(tr, b, tr.view(q, (bsz, h, s, dr)))
    k_pe = rotary(tr, b, tr.view(lat, (bsz, 1, s, dr)))
    if tr.policy.hf.cache:  # DynamicLayer.update: torch.cat([empty, x]) copies, held to the loss
        c, k_pe = act_hf.cache_update(tr, b, tr.view(c, (bsz, 1, s, b.kv_rank)), k_pe)
    q_full = tr.new((bsz, h, s, dn + dr), promote(q.dtype, q_pe.dtype), q.grad or q_pe.grad)  # cat
    del q_pe
    kv = run(b.kv_b_proj, "kv_b_proj", tr, tr.view(c, (bsz, s, b.kv_rank)))  # (B, 1, S, H * (dn + dv))
    tr.begin(".core")
    k_full = tr.new((bsz, h, s, dn + dr), kv.dtype, kv.grad or k_pe.grad)  # new_empty + copy_ x2
    v = tr.view(kv, (bsz, h, s, dv))  # a strided split view
    core = _eager if tr.policy.attention == "eager" else _math
    y = core(tr, b, q_full, k_full, v)
    y2 = tr.new((bsz, s, h * dv), y.dtype, y.grad)  # transpose(1, 2).contiguous(): a copy
    del y
    return run(b.o_proj, "o_proj", tr, y2)


def _rotary(tr: Trace, b, t: T) -> T:
    """apply_rotary_emb (V2): t.float() (a copy unless fp32) viewed as complex, times the shared
    freqs_cis (saved), viewed as real, .type_as(t) (a copy unless fp32)."""
    freqs = freqs_cis(tr, t.shape[2], t.shape[3])
    up = t if t.dtype == "fp32" else tr.new(t.shape, "fp32", t.grad)
    out = tr.new(t.shape, "fp32", up.grad)  # complex64 (.., dr/2): the bytes of fp32 (.., dr)
    if up.grad:
        tr.save(freqs)
    del up
    return out if t.dtype == "fp32" else tr.new(t.shape, t.dtype, out.grad)


def _rotary_interleave(tr: Trace, b, t: T) -> T:
    """apply_rotary_pos_emb_interleave (V3, rope_interleave): the even and odd dims (strided views)
    times the first halves of the shared cos and sin tables (both saved), four half-width products
    combined into two halves, then cat: promoted to the tables' dtype (fp32 under autocast)."""
    s, dr = t.shape[2], t.shape[3]
    key = ("rope", s, dr)
    if key not in tr.shared:
        tr.shared[key] = [tr.new((1, s, dr), tr.policy.dtype, False) for _ in range(2)]
    cos, sin = tr.shared[key]
    dtype = promote(t.dtype, cos.dtype)
    half = (*t.shape[:-1], dr // 2)
    parts = []
    for _ in range(2):  # q1 * cos - q2 * sin, q2 * cos + q1 * sin
        a, c = tr.new(half, dtype, t.grad), tr.new(half, dtype, t.grad)
        parts.append(tr.new(half, dtype, t.grad))
        del a, c
    if t.grad:
        tr.save(cos, sin)
    out = tr.new(t.shape, dtype, t.grad)
    del parts
    return out


def freqs_cis(tr: Trace, s: int, dr: int) -> T:
    """DeepseekV2RotaryEmbedding.forward: torch.polar of the positions' angles, complex64
    (1, S, dr/2) (held as its bytes: fp32 (1, S, dr)), made once per forward (act_hf.before_layers)."""
    key = ("freqs_cis", s, dr)
    if key not in tr.shared:
        tr.shared[key] = tr.new((1, s, dr), "fp32", False)
    return tr.shared[key]


def _eager(tr: Trace, b, q: T, k: T, v: T) -> T:
    """eager_attention_forward (n_rep 1): q and k^T are views of contiguous tensors (saved as they
    are), the scaled scores plus the eager mask, softmax in fp32 (saved), its .to(query.dtype) copy,
    dropout, then matmul with a copy of the strided value (both saved)."""
    bsz, h, s, _ = q.shape
    low, query_dtype = tr.policy.autocast or q.dtype, q.dtype
    grad = q.grad or k.grad or v.grad
    q, k = (t if t.dtype == low else tr.new(t.shape, low, t.grad) for t in (q, k))  # autocast's casts
    tr.save(q, k)
    scores = tr.new((bsz, h, s, s), low, grad)
    scaled = tr.new(scores.shape, low, grad)
    del scores
    mask = act_hf.causal_mask(tr, bsz, s, s)
    scaled = tr.new(scaled.shape, promote(low, mask.dtype), grad)
    probs = tr.new(scaled.shape, "fp32", grad)
    del scaled
    tr.save(probs)
    if probs.dtype != query_dtype:  # .to(query.dtype): V3's query is fp32 under autocast (rotary)
        probs = tr.new(probs.shape, query_dtype, grad)
    probs = dropout_op(tr, probs, b.dropout)
    if probs.dtype != low:  # autocast's cast for the matmul
        probs = tr.new(probs.shape, low, grad)
    v_c = _value(tr, v, low)
    tr.save(probs, v_c)
    del v_c
    return tr.new((bsz, h, s, v.shape[-1]), low, grad)


def _value(tr: Trace, v: T, dtype: str) -> T:
    """matmul's (B*H, S, dv) value operand: reshaping the strided split view of kv_b_proj's output
    copies it, except at batch 1 (the batch dim merges with any stride: a view, so the whole
    projection output is what is saved); autocast's cast is a copy."""
    if v.shape[0] == 1 and v.dtype == dtype:
        return v
    return tr.new(v.shape, dtype, v.grad)


def _math(tr: Trace, b, q: T, k: T, v: T) -> T:
    """aten::_scaled_dot_product_attention_math with is_causal (dv != dq): low q, k, v upcast to
    fp32 (copies alive during the call), q * sf and k^T * sf saved, the (S, S) causal mask made
    (bool, then float), added in place; _safe_softmax saves its output; dropout; matmul with a copy
    of the strided value (saved); the output cast back."""
    bsz, h, s, _ = q.shape
    q, k, v = (tr.low(t) for t in (q, k, v))
    grad = q.grad or k.grad or v.grad
    acc = "fp32" if q.dtype in ("bf16", "fp16") else q.dtype
    upcast = [tr.new(t.shape, acc, t.grad) for t in (q, k, v)] if acc != q.dtype else []
    tr.save(tr.new(q.shape, acc, q.grad), tr.new(k.shape, acc, k.grad))
    keep = tr.new((s, s), "bool", False)
    additive = tr.new((s, s), acc, False)
    del keep
    probs = tr.new((bsz, h, s, s), acc, grad)
    del additive
    tr.save(probs)
    dropped = dropout_op(tr, probs, b.dropout)
    del probs
    v_c = upcast[2] if upcast else _value(tr, v, acc)  # .to(fp32) of the strided view: contiguous
    tr.save(dropped, v_c)
    del v_c, dropped, upcast
    out = tr.new((bsz, h, s, v.shape[-1]), acc, grad)
    # its backward holds the probabilities' gradient and _softmax_backward_data's output at once
    tr.steps[-1].io = ((1 if b.dropout > 0 else 2) * nbytes(bsz * h * s * s, acc), 2 * out.storage.nbytes)
    return tr.new(out.shape, q.dtype, grad) if acc != q.dtype else out
