"""Saved tensors of the sequence blocks: attention (eager | sdpa), ffn, lora (moe: cost/act_moe.py).
Each function mirrors the forward of the module in layerwise/build/ (attention.py, ffn.py, lora.py).
Legend: B batch, S queries, Sk keys, H query heads, G kv heads, Dh head width."""
from __future__ import annotations

from layerwise.cost import act_hf
from layerwise.cost.act_leaves import activation_op, dropout_op
from layerwise.cost.act_trace import Storage, T, Trace, promote
from layerwise.cost.activations import act, run
from layerwise.cost.precision import nbytes
from layerwise.spec.errors import WorkloadError


def _rope(tr: Trace, t: T, tables: list[T]) -> T:
    """build/attention.py's RotaryEmbedding.rotate. Partial rotary (tables narrower than the head:
    Phi-2, GPT-NeoX): the leading dims (a view) are rotated and concatenated with the rest, a new
    full-width tensor; the rotated part dies with the cat."""
    rot = tables[0].shape[-1]
    if rot == t.shape[-1]:
        return _rope_whole(tr, t, tables)
    part = _rope_whole(tr, tr.view(t, (*t.shape[:-1], rot)), tables)
    out = tr.new(t.shape, t.dtype, t.grad)
    del part
    return out


def _rope_whole(tr: Trace, t: T, tables: list[T]) -> T:
    """x * cos + rotate_half(x) * sin: the muls save cos and sin (cast to x's dtype: `.to()` is
    a new tensor per call unless x is fp32, where it is the fp32 table itself)."""
    return _rotate(tr, t, *tables)


def _rotate(tr: Trace, t: T, cos: T, sin: T) -> T:
    """The tensors of build/attention.py's _rotate, in order: -x[..., half:] (half size), the cat
    (rotated), cos.to (a copy unless x is fp32), x * cos, sin.to, rotated * sin, the sum. With
    grad the muls keep the cast tables (the other factor needs none); the rest die on return."""
    half = tr.new((*t.shape[:-1], t.shape[-1] // 2), t.dtype, False)
    rotated = tr.new(t.shape, t.dtype, t.grad)
    del half
    cast = t.dtype != cos.dtype
    cos_c = tr.new(cos.shape, t.dtype, False) if cast else cos
    left = tr.new(t.shape, t.dtype, t.grad)
    if t.grad:
        tr.save(cos_c)
    del cos_c
    sin_c = tr.new(sin.shape, t.dtype, False) if cast else sin
    right = tr.new(t.shape, t.dtype, t.grad)
    if t.grad:
        tr.save(sin_c)
    del sin_c
    out = tr.new(t.shape, t.dtype, t.grad)
    del left, right, rotated  # `rotated` is _rotate's local: it dies on return
    return out


def _eager(tr: Trace, b, q: T, k: T, v: T, cached: bool = False, score_dtype: str | None = None,
           scaled: bool = False, cast_to: str | None = None, masked: bool = True) -> T:
    """build/attention.py's _eager, op by op. GQA/MQA: repeat_interleave'd k, v, contiguous
    (B, H, Sk, Dh) copies alive to the return, which matmul reads as they are; MHA: matmul copies
    the transposed q, k^T and v into (B*H, ., .) and saves the copies (a matmul saves each factor
    only for the other's gradient). q @ k^T, then * scale (the product dies), masked_fill (the
    scaled scores die; it saves the bool mask, made by attention_mask with ~mask alive during the
    fill); softmax saves its output, which the second bmm saves too. The mask is a local of
    _eager: alive to its return even without grad; with no input needing a gradient nothing is
    saved. `cached`: k, v are slices of the contiguous KV cache (a prefill through it), which fold
    as views. `score_dtype`: the biased scores' (T5: + an fp32 bias under autocast promotes them,
    and the probabilities, to fp32; the second bmm then reads an autocast copy in q's dtype, which
    it saves). `scaled`: sdpa's math path, which scales q and k first (new tensors the matmul saves); `cast_to`: its
    low-precision return, `(out.to(origin_dtype), attn.to(origin_dtype))`, made while its locals live."""
    bsz, h, s, dh = q.shape
    sk = k.shape[2]
    grad = q.grad or k.grad or v.grad
    k_rep = v_rep = None
    if k.shape[1] != h:
        k_rep, v_rep = tr.new((bsz, h, sk, dh), k.dtype, k.grad), tr.new((bsz, h, sk, dh), v.dtype, v.grad)
    # the (B, S, H, Dh) layout of the projections folds (B, H) into one batch dim as a view only
    # when B or S is 1; a partial rotary's cat made q and k contiguous (B, H, S, Dh) already
    cat = b.rope is not None and b.rope.rotated < b.rope.d_head
    q_flat = cat or bsz == 1 or s == 1  # (B, H) folds as a view
    k_flat = k_rep is not None or cat or cached or bsz == 1 or sk == 1
    # the math path's `query * sf` (a local of the function: alive to its return) and
    # `key_expanded^T * sf` (dies in the matmul) keep their inputs' layouts: matmul copies them alike
    q_s = tr.new(q.shape, q.dtype, q.grad) if scaled else q
    k_s = tr.new((bsz, h, sk, dh), k.dtype, k.grad) if scaled else k_rep if k_rep is not None else k
    q_c = q_s if q_flat else tr.new(q.shape, q.dtype, q.grad)
    k_c = k_s if k_flat else tr.new((bsz, h, sk, dh), k.dtype, k.grad)
    del k_s
    product = tr.new((bsz, h, s, sk), q.dtype, grad)
    if k.grad:  # a matmul saves each factor for the other's gradient
        tr.save(q_c)
    if q.grad:
        tr.save(k_c)
    qk = q_c.storage.nbytes * q.grad + k_c.storage.nbytes * k.grad  # their gradients' bytes
    del q_c, k_c  # matmul's internal copies: alive only if saved
    # * d_head ** -0.5 (the math path's q and k came scaled: its product is the scores)
    scores = product if scaled else tr.new(product.shape, q.dtype, grad)
    del product
    if b.softcap:  # scores / cap (saves nothing), tanh (saves its output), * cap (nothing)
        divided = tr.new(scores.shape, scores.dtype, grad)
        del scores
        capped = tr.new(divided.shape, divided.dtype, grad)
        if grad:
            tr.save(capped)
        del divided
        scores = tr.new(capped.shape, capped.dtype, grad)
        del capped
    mask = _math_mask(tr, b, s, sk, cast_to or q.dtype, q.dtype) if scaled and not b.score_bias else \
        _mask(tr, b, s, sk) if masked else None
    if mask is not None and scaled and not b.score_bias:  # attn.add(mask), out of place for a tensor
        scores = tr.new(scores.shape, scores.dtype, grad)  # subclass (the fake tensors measured)
    elif mask is not None:
        if grad:  # masked_fill keeps the mask for the scores' gradient
            tr.save(mask)
        inverted = tr.new((s, sk), "bool", False)
        scores = tr.new(scores.shape, score_dtype or scores.dtype, grad)  # masked_fill
        del inverted
    probs = tr.new(scores.shape, score_dtype or scores.dtype, grad)
    p_bytes = scores.storage.nbytes
    if scaled:  # the math path rebinds `attn` to the probabilities: the scores die
        del scores
    if grad:
        tr.save(probs)
    probs = dropout_op(tr, probs, b.dropout)
    if probs.dtype != q.dtype:  # autocast's copy for the bmm
        probs = tr.new(probs.shape, q.dtype, probs.grad)
    # the math path returns (matmul(attn, v).to(low), attn.to(low)): C++ evaluates the arguments
    # right to left (GCC), so the probabilities' low copy comes first (sdpa drops it)
    low_attn = tr.new(probs.shape, cast_to, False) if cast_to is not None else None
    v_c = v_rep if v_rep is not None else v if cached or bsz == 1 or sk == 1 else \
        tr.new((bsz, h, sk, dh), v.dtype, v.grad)
    tr.save(*([probs] if v.grad else []), *([v_c] if probs.grad else []))
    tr.reach()  # the product packs its operands: a recomputation gets this far
    out = tr.new(q.shape, q.dtype, grad)  # the bmm reads the copy of v: it dies after
    if grad:
        tr.steps[-1].inner = max(tr.steps[-1].inner, _eager_backward(
            out.storage.nbytes, p_bytes, qk, v_c.storage.nbytes, b.dropout > 0))
    if cast_to is not None:
        low_out = tr.new(out.shape, cast_to, out.grad)
        del low_attn, out
        out = low_out
    del v_c, q_s
    return out


def _eager_backward(out: int, p: int, qk: int, v: int, dropout: bool) -> int:
    """The most gradient bytes eager attention's backward holds at once beyond its saved tensors
    (all alive at its start; bytes of: the output, P one (B, H, S, Sk) tensor, the q and k
    copies its first matmul saved, v's). In reverse: probs @ v gives the
    probabilities' and v's gradients next to the output's; v's then waits (its node is older than
    the scores' chain) and v (and the dropped-out probs) are freed; dropout, softmax, masked_fill
    and the scale each turn one P gradient into another (2 P; with dropout the dropped-out probs
    just freed make up for one); q @ k^T ends with q's and k's gradients as the probs are gone."""
    return max(out + p + v, p if dropout else 2 * p, qk)


def math_upcasts(dtype: str) -> bool:
    """torch's _scaled_dot_product_attention_math (aten/src/ATen/native/transformers/attention.cpp)
    upcasts fp16/bf16 q, k, v to fp32 on every device unless
    torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(True) (off by default): the math path
    a `--device cuda` step takes (latent attention with dv != dq, T5's bias) keeps fp32 tensors too."""
    return dtype in ("bf16", "fp16")


def _math(tr: Trace, b, q: T, k: T, v: T, eager=_eager) -> T:
    """sdpa's math path (attention dropout, or a float mask that needs grad): eager's tensors;
    low-precision q, k, v are first upcast to fp32 (`_to_copy`), so everything it saves (the
    scaled q and k, the probabilities, the dropout mask, v) is fp32, and the output is cast back.
    `eager`: the block's own eager core (act_mla's for latent attention)."""
    low = math_upcasts(q.dtype)
    if not low:
        return eager(tr, b, q, k, v, scaled=True)
    q32, k32, v32 = (tr.new(t.shape, "fp32", t.grad) for t in (q, k, v))
    if eager is _eager:
        return _eager(tr, b, q32, k32, v32, scaled=True, cast_to=q.dtype)
    out = eager(tr, b, q32, k32, v32, scaled=True)
    del q32, k32, v32
    return tr.new(out.shape, q.dtype, out.grad)


def _biased(tr: Trace, b, q: T, k: T, v: T) -> T:
    """Scores plus a (1, H, S, Sk) bias (T5's relative positions, `tr.score_bias`): the eager
    tensors (sdpa takes the bias as a float mask; with grad, CPU runs its math path: the same
    saved tensors), and the biased scores, or the biased mask, alive during the call."""
    bias = getattr(tr, "score_bias", None)
    if bias is None:
        raise WorkloadError(f"{'.'.join(tr.path)}: attention with score_bias needs its stack's bias "
                            f"(an encoder_decoder with rel_buckets)")
    score_dtype = promote(q.dtype, bias.dtype)
    extra = tr.new((q.shape[0], q.shape[1], q.shape[2], k.shape[2]), score_dtype, False)
    if tr.policy.attention == "eager":
        out = _eager(tr, b, q, k, v, score_dtype=score_dtype)
    else:
        out = _math(tr, b, q, k, v) if tr.policy.grad else _sdpa(tr, b, q, k, v)
    del extra
    return out


def _math_path(tr: Trace, b) -> bool:
    """CPU's sdpa with dropout_p > 0 in training runs its math path; CUDA's flash and memory-efficient
    kernels apply dropout inside the kernel (the measure reading emulates them: measure/cuda_conventions.py)."""
    return b.dropout > 0 and tr.policy.grad and tr.policy.autocast_device != "cuda"


def _sdpa_math(tr: Trace, b, q: T, k: T, v: T) -> T:
    """torch 2.13's _scaled_dot_product_attention_math (CPU, attention dropout in training), op by
    op as the measure reading runs it (fake tensors are subclass-like: the mask add is out of
    place). Low-precision q, k, v are copied to fp32 (they stay to the return); q * sqrt(scale);
    the causal float mask (S, Sk) (its bool ones/tril die); GQA: k, v repeat_interleave'd; k^T *
    sqrt(scale); the matmul's contiguous copies of both factors (a (B, S, H, Dh)-layout view folds
    only when B or S is 1), which it saves; scores; + mask (the scores die); _safe_softmax (saved;
    the sum dies); dropout's noise (saved) and product (saved by the second matmul); a copy of the
    probabilities in the input dtype for the returned weights (C++ builds the tuple right to left:
    it comes before the matmul, and dies when sdpa drops it); v's copy (saved); the fp32 output,
    cast back."""
    bsz, h, s, dh = q.shape
    sk, g = k.shape[2], k.shape[1]
    grad = q.grad or k.grad or v.grad
    low = q.dtype in ("bf16", "fp16")
    acc = "fp32" if low else q.dtype
    q_acc, k_acc, v_acc = ((tr.new(t.shape, acc, t.grad) if low else t) for t in (q, k, v))
    q_s = tr.new(q.shape, acc, q.grad)  # * sqrt(scale)
    mask = None
    if b.causal or b.sliding_window:
        if b.sliding_window:  # the build's bool (S, Sk) mask, given as attn_mask
            keep = _mask(tr, b, s, sk)
        else:  # is_causal: ones(L, S).tril()
            ones = tr.new((s, sk), "bool", False)
            keep = tr.new((s, sk), "bool", False)
            del ones
        mask = tr.new((s, sk), acc, False)  # convert_boolean_attn_mask: where(mask, 0, -inf)
        del keep
    rep = g != h  # enable_gqa: every query head gets its kv head (new tensors; the G-head ones stay)
    k_r, v_r = (tr.new((bsz, h, sk, dh), acc, t.grad) for t in (k, v)) if rep else (k_acc, v_acc)
    k_s = tr.new((bsz, h, dh, sk), acc, k.grad)  # k^T * sqrt(scale)
    cat = b.rope is not None and b.rope.rotated < b.rope.d_head  # a partial rotary's cat: contiguous
    q_c = q_s if cat or bsz == 1 or s == 1 else tr.new(q.shape, acc, q.grad)
    k_c = k_s if rep or cat or bsz == 1 or sk == 1 else tr.new(k_s.shape, acc, k.grad)
    if k.grad:  # a matmul saves each factor for the other's gradient
        tr.save(q_c)
    if q.grad:
        tr.save(k_c)
    qk = q_c.storage.nbytes * q.grad + k_c.storage.nbytes * k.grad
    del q_c, k_c
    scores = tr.new((bsz, h, s, sk), acc, grad)
    del k_s  # matmul(query, key.transpose(-2, -1) * scale): the scaled k^T is the call's temporary
    if mask is not None:
        summed = tr.new(scores.shape, acc, grad)
        del scores
        scores = summed
        del summed
    probs = tr.new(scores.shape, acc, grad)
    p_bytes = scores.storage.nbytes
    del scores
    if grad:
        tr.save(probs)
    noise = tr.new(probs.shape, acc, False)
    if grad:
        tr.save(noise)
    # attn.to(origin dtype), the returned weights: made after the product it copies, but taken
    # here, before it (the same bytes alive from then on), so that a recomputation, which stops at
    # the last saved tensor's allocation (act_trace.recompute_peak), makes it too: torch's stops
    # when the second matmul saves its inputs, after the copy
    weights = tr.new(probs.shape, q.dtype, False) if low else None
    dropped = tr.new(probs.shape, acc, grad)
    del noise, probs
    v_c = v_r if rep or bsz == 1 or sk == 1 else tr.new((bsz, h, sk, dh), acc, v.grad)
    tr.save(*([dropped] if v.grad else []), *([v_c] if grad else []))
    out = tr.new(q.shape, acc, grad)
    if grad:
        tr.steps[-1].inner = max(tr.steps[-1].inner, _eager_backward(
            out.storage.nbytes, p_bytes, qk, v_c.storage.nbytes, True))
    if low:  # cast back in the return statement, the function's locals all alive
        if grad:  # the cast's backward turns the incoming gradient into an fp32 one before any
            tr.recompute_grad[tr.here] = out.storage.nbytes  # node that needs saved tensors runs
        out = tr.new(q.shape, q.dtype, grad)
    del v_c, dropped, weights, mask, q_s, q_acc, k_acc, v_acc, k_r, v_r
    return out


def _sdpa(tr: Trace, b, q: T, k: T, v: T) -> T:
    """CPU flash attention saves q, k, v as given (GQA: the G-head k, v), the output (allocated
    (B, S, H, Dh), so the o_proj input is a view of it) and logsumexp (B, H, S) fp32."""
    bsz, h, s, dh = q.shape
    if _math_path(tr, b):  # dropout_p > 0 (training) takes the math path on CPU; eval runs p = 0
        return _sdpa_math(tr, b, q, k, v)
    grad = q.grad or k.grad or v.grad
    out = tr.new(q.shape, q.dtype, grad)
    lse = tr.new((bsz, h, s), "fp32", False)
    additive = tr.new((s, k.shape[2]), q.dtype, False) if b.sliding_window else None
    if grad:  # nothing needs a gradient (frozen layers before the first LoRA one): nothing is saved
        tr.save(q, k, v, out, lse)
        # its backward (_scaled_dot_product_flash_attention_for_cpu_backward) returns the gradients
        # of q, k and v at once (GQA: k's and v's of the G heads) next to the output's
        tr.steps[-1].io = (sum(nbytes(t.numel, t.dtype) for t in (q, k, v)), nbytes(out.numel, out.dtype))
        if additive is not None:  # the bool mask is turned into an additive one in q's dtype, and saved
            tr.save(additive)
    del lse, additive
    return out


def _mask(tr: Trace, b, s: int, sk: int) -> T | None:
    """build/attention.py's attention_mask (eager, and sdpa through the KV cache): the query and key positions
    (int64 aranges), the (S, Sk) bool `keep`, and its transient comparisons (causal: j <= i; a
    window: (i - j) and its abs in int64, then < window)."""
    if not b.causal and not b.sliding_window:
        return None
    i, j = tr.new((s,), "int64", False), tr.new((sk,), "int64", False)
    keep = tr.new((s, sk), "bool", False)
    if b.causal:
        le = tr.new((s, sk), "bool", False)
        del le
    if b.sliding_window:
        diff = tr.new((s, sk), "int64", False)
        dist = tr.new((s, sk), "int64", False)
        del diff
        near = tr.new((s, sk), "bool", False)
        del dist, near
    del i, j
    return keep


def _math_mask(tr: Trace, b, s: int, sk: int, low: str, acc: str) -> T | tuple[T, T] | None:
    """The math path's float mask, alive to its return (aten's _scaled_dot_product_attention_math):
    is_causal makes a bool ones((S, Sk)).tril() and turns it into 0 / -inf in the (fp32) acc dtype;
    a window's explicit bool mask (_mask, a local of build/attention.py's _sdpa) is turned into one in
    the inputs' own dtype by scaled_dot_product_attention before the call."""
    if not b.causal and not b.sliding_window:
        return None
    if b.sliding_window:
        keep = _mask(tr, b, s, sk)
        return keep, tr.new((s, sk), low, False)  # both alive to the return
    ones = tr.new((s, sk), "bool", False)
    tril = tr.new((s, sk), "bool", False)
    del ones
    return tr.new((s, sk), acc, False)


def _sdpa_cached(tr: Trace, b, q: T, k: T, v: T) -> T:
    """build/attention.py's _cached under sdpa (inference): k, v go into the cache (an in-place copy;
    sdpa reads the cache's first Sk positions), the bool mask is made explicitly, and CPU sdpa turns
    it into an additive (S, Sk) mask in q's dtype (`where`) for its flash kernel: output and
    logsumexp as _sdpa's; the additive mask dies when sdpa returns, the bool one when _cached does."""
    bsz, h, s, dh = q.shape
    keep = _mask(tr, b, s, k.shape[2])
    additive = tr.new((s, k.shape[2]), q.dtype, False) if keep is not None else None
    out = tr.new(q.shape, q.dtype, False)
    lse = tr.new((bsz, h, s), "fp32", False)
    del lse, additive, keep
    return out


@act("attention")
def _attention(b, tr: Trace, x: T) -> T:
    bsz, s, _ = x.shape
    src = x
    if b.context_dim and getattr(tr, "cross_cached", 0):
        return _cross_cached(b, tr, x)
    if b.context_dim:  # an encoder-decoder's memory (act_seq2seq), else a context given as input
        src = getattr(tr, "context", None) or tr.input((bsz, b.context_len, b.context_dim), tr.policy.dtype, False)
    sk = src.shape[1]
    h, g, dh = b.n_heads, b.kv_heads, b.head_dim
    starts = [len(tr.steps)]  # the first steps of q_proj, k_proj, v_proj, the core (the backward's holds)
    with act_hf.fused(tr, tr.policy.hf is not None and tr.policy.hf.fused_qkv):
        q = tr.view(run(b.q_proj, "q_proj", tr, x), (bsz, s, h, dh))
        starts.append(len(tr.steps))
        k = tr.view(run(b.k_proj, "k_proj", tr, src), (bsz, sk, g, dh))
        starts.append(len(tr.steps))
        v = tr.view(run(b.v_proj, "v_proj", tr, src), (bsz, sk, g, dh))
    starts.append(len(tr.steps))
    tr.begin(".core")
    if b.q_norm is not None:
        q, k = run(b.q_norm, "q_norm", tr, q), run(b.k_norm, "k_norm", tr, k)
        tr.begin(".core")
    if tr.policy.grad and tr.policy.hf is None:
        _projection_holds(tr, starts, q, k, v, b.q_norm is not None)
    q, k, v = (tr.view(t, (t.shape[0], t.shape[2], t.shape[1], t.shape[3])) for t in (q, k, v))
    if tr.policy.hf is not None:  # Falcon's new architecture: k, v broadcast to every head
        k, v = act_hf.falcon_kv(tr, k, v, h)
    if b.rope is not None and tr.policy.hf is not None:
        q, k = act_hf.rope(tr, b, q, k)
    elif b.rope is not None:
        rot = b.rope.rotated  # cos, sin (S, rotated) fp32
        tables = [tr.new((s, rot), "fp32", False), tr.new((s, rot), "fp32", False)]
        q, k = _rope(tr, q, tables), _rope(tr, k, tables)
    # soft-capped scores have no sdpa kernel: our build runs them eager (HF's own: act_hf below)
    eager = tr.policy.attention == "eager" or (b.softcap > 0 and tr.policy.hf is None)
    core = _eager if eager else _sdpa
    rolling = b.sliding_window and s > b.sliding_window  # the window's buffer: the prefill runs uncached
    if tr.decode is not None and not b.context_dim:  # a decode step reads the cache (cost/decode.py)
        k, v, rolling = _from_cache(tr, b, k, v)
        if rolling:  # build/attention.py's _rolling: the whole buffer, no mask
            core = (lambda tr_, b_, q_, k_, v_: _eager(tr_, b_, q_, k_, v_, cached=True, masked=False)) if eager \
                else _sdpa_unmasked
    if getattr(tr, "prefill_cache", False) and not tr.policy.grad and not b.context_dim and not rolling:
        # a prefill through the KV cache (build/attention.py's _cached)
        core = _sdpa_cached if core is _sdpa else (lambda tr_, b_, q_, k_, v_: _eager(tr_, b_, q_, k_, v_, cached=True))
    if b.score_bias:  # T5: scores + bias (act_seq2seq); a bias that needs grad sends sdpa to the math path
        core = _biased
    if tr.policy.hf is not None:  # --impl hf: transformers' KV cache and attention functions
        k, v = act_hf.cache_update(tr, b, k, v)
        core = act_hf.eager if tr.policy.attention == "eager" else act_hf.sdpa
    if tr.policy.checkpointing == "selective" and tr.sink is None:  # recompute the core in backward
        y = tr.checkpointed(lambda q_, k_, v_: core(tr, b, q_, k_, v_), q, k, v)
    else:
        y = core(tr, b, q, k, v)  # (B, H, S, d_head)
    # sdpa's output takes the query's layout (empty_like(query)): a view of the (B, S, H, Dh)
    # projection unless a partial rotary's cat made the query contiguous (B, H, S, Dh)
    partial_rope = b.rope is not None and b.rope.rotated < b.rope.d_head
    # one query (a decode step): (B, H, 1, Dh).transpose(1, 2) is contiguous, the reshape a view
    if s > 1 and (eager or _math_path(tr, b) or act_hf.contiguous_query(tr, b) or partial_rope):
        # transpose(1, 2).reshape: a copy; our forward's `y` stays alive through o_proj
        # (transformers' attention functions rebind theirs: it dies with the copy)
        core_out = y if tr.policy.hf is None else None
        y = tr.new((bsz, s, h * dh), y.dtype, y.grad)
    else:
        y = tr.view(y, (bsz, s, h * dh))
    out = run(b.o_proj, "o_proj", tr, y)
    del y
    return out


def _from_cache(tr: Trace, b, k: T, v: T) -> tuple[T, T, bool]:
    """build/attention.py's decode step: this call's k, v are copied into the cache and rebound to
    its first start + S positions (views: the cache's own bytes), or on a rolling window layer
    whose buffer is full, to the whole buffer (build/lm.py init_kv_cache: the window's length)."""
    start, total = tr.decode
    s, (bsz, g, _, dh) = k.shape[2], k.shape
    length = min(total, b.sliding_window) if b.sliding_window else total
    rolling = bool(b.sliding_window) and length < start + s
    sk = length if rolling else start + s
    cache = Storage(0, "kv_cache")
    return T((bsz, g, sk, dh), k.dtype, False, cache), T((bsz, g, sk, dh), v.dtype, False, cache), rolling


def _sdpa_unmasked(tr: Trace, b, q: T, k: T, v: T) -> T:
    """sdpa over a full rolling buffer without a mask (inference): the output and logsumexp."""
    bsz, h, s, _ = q.shape
    out = tr.new(q.shape, q.dtype, False)
    lse = tr.new((bsz, h, s), "fp32", False)
    del lse
    return out


def _projection_holds(tr: Trace, starts: list[int], q: T, k: T, v: T, normed: bool) -> None:
    """The gradients of q, k and v wait in backward: the autograd engine runs the newest node
    first, so after the core (and k_norm, q_norm) v_proj's backward runs, then k_proj's, then
    q_proj's, and each gradient waits until its projection's turn. `starts`: the first steps of
    q_proj, k_proj, v_proj and the core; with q/k norms the core's first step is followed by
    q_norm's and k_norm's."""
    _, k_start, v_start, core = starts
    if normed:  # steps core + 1: q_norm, core + 2: k_norm
        if v.grad:
            tr.holds.append((core + 1, core + 2, v.storage.nbytes))  # v's, through both norms
        if q.grad:
            tr.holds.append((core + 2, core + 2, q.storage.nbytes))  # q's, through k_norm
        if k.grad:
            tr.holds.append((core + 1, core + 1, k.storage.nbytes))  # k's (normed back), through q_norm
    if q.grad:
        tr.holds.append((k_start, core - 1, q.storage.nbytes))  # q's, through v_proj and k_proj
    if k.grad:
        tr.holds.append((v_start, core - 1, k.storage.nbytes))  # k's, through v_proj


def _cross_cached(b, tr: Trace, x: T) -> T:
    """Cross-attention over keys/values already in the cache (layerwise.build.seq2seq.cross_attend,
    inference): q_proj, sdpa (nothing saved), o_proj on a view of its (B, S, H, Dh) output."""
    bsz, s, _ = x.shape
    h, g, dh = b.n_heads, b.kv_heads, b.head_dim
    q = tr.view(run(b.q_proj, "q_proj", tr, x), (bsz, h, s, dh))
    tr.begin(".core")
    kv = T((bsz, g, tr.cross_cached, dh), q.dtype, False, Storage(0, "kv_cache"))  # the cache's own bytes
    y = tr.view(_sdpa(tr, b, q, kv, kv), (bsz, s, h * dh))
    return run(b.o_proj, "o_proj", tr, y)


@act("ffn")
def _ffn(b, tr: Trace, x: T) -> T:
    if b.gated and not tr.policy.grad and tr.policy.hf is None:
        # no grad: act(gate(x)) runs before up(x) and nothing is saved, so gate(x) dies first
        g = run(b.gate_proj, "gate_proj", tr, x)
        tr.begin(".act")
        a = activation_op(tr, g, b.activation)
        del g
        u = run(b.up_proj, "up_proj", tr, x)
        tr.begin(".mul")
        hid = tr.new(a.shape, promote(a.dtype, u.dtype), False)
        del a
    elif b.gated and tr.policy.hf is None:
        # build/ffn.py's `act(gate_proj(x)) * up_proj(x)`: the activation runs before up_proj, so
        # its output is alive through up_proj's transients (a LoRA's, autocast's input cast)
        g = run(b.gate_proj, "gate_proj", tr, x)
        tr.begin(".act")
        a = activation_op(tr, g, b.activation)
        tr.steps[-1].io = (g.storage.nbytes if g.grad else 0, a.storage.nbytes if a.grad else 0)
        del g
        up_start = len(tr.steps)
        u = run(b.up_proj, "up_proj", tr, x)
        tr.begin(".mul")
        hid = tr.new(a.shape, a.dtype, a.grad or u.grad)
        tr.save(*([a] if u.grad else []), *([u] if a.grad else []))  # a * u: each factor for the other's gradient
        if hid.grad:  # its backward: the gradients of both factors next to the product's; the
            # activation's then waits through up_proj's backward (the engine runs the newer node first)
            tr.steps[-1].inner = hid.storage.nbytes + a.storage.nbytes + u.storage.nbytes
            if a.grad:
                tr.holds.append((up_start, len(tr.steps) - 2, a.storage.nbytes))
        del a
    elif b.gated:
        with act_hf.fused(tr, tr.policy.hf is not None and tr.policy.hf.fused_gate_up):
            g = run(b.gate_proj, "gate_proj", tr, x)
            u = run(b.up_proj, "up_proj", tr, x)
        tr.begin(".act")
        a = activation_op(tr, g, b.activation)
        hid = tr.new(a.shape, a.dtype, a.grad or u.grad)
        tr.save(*([a] if u.grad else []), *([u] if a.grad else []))  # a * u: each factor for the other's gradient
        if hid.grad:  # its backward: the gradients of both factors next to the product's
            tr.steps[-1].inner = hid.storage.nbytes + a.storage.nbytes + u.storage.nbytes
        del g, a
    else:
        u = run(b.up_proj, "up_proj", tr, x)
        tr.begin(".act")
        hid = activation_op(tr, u, b.activation)
        # its backward holds the gradients of its input and output at once (as a leaf's); quick_gelu's
        # product rule (x * sigmoid(1.702 x)) holds both factors' gradients next to the output's
        grads = 2 if b.activation == "quick_gelu" else 1
        tr.steps[-1].io = (grads * u.storage.nbytes if u.grad else 0, hid.storage.nbytes if hid.grad else 0)
    del u  # the module keeps only h: the projections die unless saved
    hid = dropout_op(tr, hid, b.dropout)
    return run(b.down_proj, "down_proj", tr, hid)


@act("lora")
def _lora(b, tr: Trace, x: T) -> T:
    """build/lora.py's order: `update = lora_b(lora_a(dropout(x)))`, then `base(x) + update * scaling`.
    In backward the autograd engine runs the nodes made last first: the add and the scaling's mul
    (a new gradient of the update's size), then the base's matmul (made after the update's) while
    that scaled gradient waits for lora_b's: held through the base's steps. Then the base's
    gradient of x waits for the adapter's (autograd sums the two when both have arrived): held
    through lora_b's, lora_a's and the dropout's steps."""
    adapter_start = len(tr.steps)
    tr.begin(".adapter")
    a_in = dropout_op(tr, x, b.dropout)
    upd = run(b.lora_b, "lora_b", tr, run(b.lora_a, "lora_a", tr, a_in))
    del a_in
    base_start = len(tr.steps)
    base = run(b.base, "base", tr, x)
    if x.grad and tr.policy.grad:
        tr.holds.append((adapter_start, base_start - 1, x.storage.nbytes))
    tr.begin(".add")
    scaled = tr.new(upd.shape, upd.dtype, upd.grad)  # update * scaling saves nothing
    if scaled.grad and tr.policy.grad:
        tr.holds.append((base_start, len(tr.steps) - 2, scaled.storage.nbytes))
    return tr.pointwise(base, scaled)


import layerwise.cost.act_moe  # noqa: E402,F401  (registers the moe function)
import layerwise.cost.act_rnn  # noqa: E402,F401  (registers the rnn function)
