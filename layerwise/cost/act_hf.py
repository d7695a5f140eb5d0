"""`--impl hf`: the ops of transformers' own modeling code (5.23, pinned by the `hf` extra) where they
keep other tensors than our build. Pure Python; each function names the HF function it mirrors.
Legend: B batch, S queries, Sk keys, H query heads, Dh head width, R rotated dims.

Read from transformers/models/*/modeling_*.py and checked against HF measured (tests/cost/test_hf.py):
  eager attention   `eager_attention_forward`: (q @ k^T) * scaling + the additive 4-D mask (no bool mask
                    saved); softmax in fp32 (`dtype=torch.float32`, llama-style) or in the scores' dtype
                    (gpt2, bert, roberta); `.to(query.dtype)` / `.type(value.dtype)` keeps a low copy
                    next to the fp32 probabilities under mixed precision
  causal mask       `create_causal_mask` (masking_utils.py): eager attention gets a (B, 1, S, Sk) mask
                    in the embeddings' dtype, made once per forward; sdpa gets none (is_causal) unless a
                    sliding window applies
  sdpa + dropout    `sdpa_attention_forward` with dropout_p > 0: CPU sdpa takes its math path
                    (aten `_scaled_dot_product_attention_math`): q, k, v upcast to fp32, q * sqrt(scale)
                    and k^T * sqrt(scale) saved, softmax output, dropout noise and result saved, v copied
  rotary tables     `*RotaryEmbedding.forward`: cos, sin (1, S, R) in the embeddings' dtype, made once
                    per forward and shared by every layer; q * cos promotes (fp32 under autocast)
  gelu_new          `NewGELUActivation` (activations.py): 0.5 * x * (1 + tanh(c * (x + 0.044715 x^3)))
                    in Python ops, which saves x, tanh, 1 + tanh and 0.5 * x
  soft-capping      Gemma 2's eager_attention_forward: tanh(scores / cap) * cap saves the tanh output;
                    Gemma2ForCausalLM does the same to the logits
  layer types       Gemma 2/3 (`layer_types`): a full and a sliding mask made per forward; a sliding
                    layer's sdpa gets the window's bool mask (kv_length >= window), turned into an
                    additive one in q's dtype and saved per call; Gemma 3: rotary tables per type
  Falcon            FalconAttention calls sdpa itself: multi-query k, v of one head go to the math path;
                    the new architecture broadcasts k, v to every head (copies) first
  MoE               Mixtral / Qwen-MoE router and grouped experts: cost/act_hf_moe.py
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

from layerwise.cost.act_leaves import dropout_op
from layerwise.cost.act_trace import T, Trace, nbytes, promote


@dataclass(frozen=True)
class HFOps:
    """How one architecture's HF code differs from ours, op by op (cost/hf.py reads it from a config)."""

    softmax_fp32: bool = True  # eager_attention_forward's softmax(..., dtype=torch.float32)
    causal_mask: bool = True  # a decoder: create_causal_mask materialises the eager mask
    python_gelu: bool = False  # hidden_act "gelu_new": NewGELUActivation in Python ops
    cache: bool = False  # a decoder with use_cache (the config's default) and no checkpointing
    fused_qkv: bool = False  # one projection for q, k, v (GPT-2's c_attn, NeoX's query_key_value, Phi-3)
    fused_gate_up: bool = False  # Phi-3's gate_up_proj
    rope_cat: bool = False  # Phi-3's apply_rotary_pos_emb concatenates even with the whole head rotated
    llama_rmsnorm: bool = False  # LlamaRMSNorm-style Python norm (weight * x.to(input_dtype)), not Gemma's
    attn_softcap: float = 0.0  # Gemma 2's attn_logit_softcapping: tanh(scores / cap) * cap in eager
    logit_softcap: float = 0.0  # Gemma 2's final_logit_softcapping on the logits
    window: int = 0  # the config's sliding_window, for the layers `sliding` marks (Gemma 2/3's layer_types)
    sliding: tuple[bool, ...] = ()  # per layer: a sliding_attention layer; () = every layer as its spec says
    rope_per_type: bool = False  # Gemma 3: one pair of rotary tables per layer type (local and global bases)
    falcon: bool = False  # FalconAttention: sdpa called directly (k, v heads broadcast, no enable_gqa)
    kv_broadcast: bool = False  # Falcon's new_decoder_architecture: k, v broadcast to every query head
    moe: str = ""  # mixtral | qwen: transformers' MoE router and grouped experts (cost/act_hf_moe.py)
    moe_renormalise: bool = False  # the top-k weights divided by their sum (Mixtral; Qwen's norm_topk_prob)
    seq2seq: str = ""  # t5 | bart: an encoder-decoder
    mla: str = ""  # deepseek_v2 | deepseek_v3: multi-head latent attention (cost/act_hf_mla.py)
    float_logits: bool = False  # MambaForCausalLM: lm_head(x).float() in the forward (the low logits die)
    stack_dropout: float = 0.0  # T5Stack.dropout after each stack's final norm


def _low(tr: Trace, t: T) -> str:
    """The dtype a matmul computes in: autocast's, else the tensor's own."""
    return tr.policy.autocast or t.dtype


def _layer_sliding(tr: Trace) -> bool:
    """This layer is one of HFOps.sliding's sliding_attention layers (its index follows "blocks")."""
    hf = tr.policy.hf
    if not hf.sliding or "blocks" not in tr.path:
        return False
    i = tr.path.index("blocks") + 1
    return i < len(tr.path) and tr.path[i].isdigit() and hf.sliding[int(tr.path[i]) % len(hf.sliding)]


def _windowed(tr: Trace, b, sk: int) -> bool:
    """sdpa gets an explicit mask: the window reaches into the keys (masking_utils'
    _ignore_causal_mask_sdpa: kv_length >= the window); Gemma's full layers get none."""
    hf = tr.policy.hf
    if hf.sliding:
        return _layer_sliding(tr) and sk >= hf.window
    return bool(b.sliding_window) and sk > b.sliding_window


def causal_mask(tr: Trace, bsz: int, s: int, sk: int, kind: str = "full") -> T:
    """The (B, 1, S, Sk) additive mask, made once per forward (the trace holds it until the head);
    Gemma 2/3 make a full and a sliding one (kind)."""
    key = ("mask", bsz, s, sk, kind)
    if key not in tr.shared:  # sdpa_mask makes a bool one, eager_mask an additive one
        dtype = "bool" if tr.policy.attention == "sdpa" else tr.policy.dtype
        tr.shared[key] = tr.new((bsz, 1, s, sk), dtype, False)
    return tr.shared[key]


def rope(tr: Trace, b, q: T, k: T) -> tuple[T, T]:
    """apply_rotary_pos_emb with the shared tables: q * cos + rotate_half(q) * sin saves cos and sin
    (once for the model); the result is promoted to the tables' dtype."""
    s, rot = q.shape[2], b.rope.rotated
    key = ("rope", s, rot)
    if key not in tr.shared:
        tr.shared[key] = [tr.new((1, s, rot), tr.policy.dtype, False) for _ in range(2)]
    cos, sin = tr.shared[key]
    out = []
    for t in (q, k):
        if t.grad:
            tr.save(cos, sin)
        out.append(tr.new(t.shape, promote(t.dtype, cos.dtype), t.grad))
    return out[0], out[1]


@contextlib.contextmanager
def fused(tr: Trace, on: bool):
    """Projections that transformers fuses into one matmul read one autocast cast of their input
    (our separate ones cast it once each)."""
    if not on or tr.shared.get(("fused",)) is not None:
        yield
        return
    tr.shared[("fused",)] = {}
    try:
        yield
    finally:
        del tr.shared[("fused",)]


def falcon_kv(tr: Trace, k: T, v: T, h: int) -> tuple[T, T]:
    """FalconAttention._split_heads (new_decoder_architecture): key and value broadcast_to every query
    head and flatten(2, 3): (B, S, H, Dh) copies, transposed and reshaped into (B, H, S, Dh) copies."""
    if not tr.policy.hf.kv_broadcast or k.shape[1] == h:
        return k, v
    out = []
    for t in (k, v):
        flat = tr.new((t.shape[0], h, t.shape[2], t.shape[3]), t.dtype, t.grad)
        out.append(tr.new(flat.shape, t.dtype, t.grad))
        del flat
    return out[0], out[1]


def contiguous_query(tr: Trace, b) -> bool:
    """apply_rotary_pos_emb of phi, gpt_neox (partial rotary) and phi3 (always) ends in
    torch.cat([q_rot, q_pass]): a contiguous (B, H, S, Dh) query, so sdpa's output comes in that
    layout and `.transpose(1, 2).contiguous()` copies it for o_proj."""
    hf = tr.policy.hf
    return hf is not None and b.rope is not None and (hf.rope_cat or b.rope.rotated < b.rope.d_head)


def cache_update(tr: Trace, b, k: T, v: T) -> tuple[T, T]:
    """DynamicLayer.update (cache_utils.py): with use_cache, even in training, the base model makes a
    DynamicCache and every layer attends to torch.cat([cache, k]) / [cache, v]: new copies, held by
    the cache until the forward returns (`cache_held_bytes`). T5's EncoderDecoderCache: the decoder's
    self- and cross-attention layers (its encoder gets none)."""
    hf = tr.policy.hf
    if not hf.cache or (hf.seq2seq and not (b.causal or b.context_dim)):
        return k, v
    # the layer's empty tensors take the keys' dtype, so cat promotes the values to it (fp32
    # post-rotary keys under autocast: fp32 values too)
    k, v = tr.new(k.shape, k.dtype, k.grad), tr.new(v.shape, promote(k.dtype, v.dtype), v.grad)
    tr.shared.setdefault(("held",), []).extend((k, v))
    return k, v


def hold_hidden(tr: Trace, x: T) -> None:
    """*ForCausalLM.forward keeps the base model's output (last_hidden_state) through the loss."""
    tr.shared.setdefault(("held",), []).append(x)


def held_bytes(tr: Trace) -> int:
    """What transformers keeps at the loss that autograd does not save: the cache's keys and values
    (fp32 under autocast, whose bf16 copies are the saved ones) and the last hidden state."""
    held = {id(t.storage): t.storage.nbytes for t in tr.shared.get(("held",), []) if id(t.storage) not in tr.saved}
    return sum(held.values())


def _contiguous(tr: Trace, t: T, h: int, low: str) -> bool:
    """matmul's operand is a view of `t` (no copy): the cache's contiguous copy, one per head
    (repeat_kv copies for GQA), already in the compute dtype (autocast would cast)."""
    return tr.policy.hf.cache and t.shape[1] == h and t.dtype == low


def _operand(tr: Trace, t: T, h: int, low: str) -> T:
    """matmul's (B*H, ., .) k or v operand: a view of `t` when `_contiguous`, or when Falcon's one
    kv head is broadcast at batch 1 (expand + reshape of its autocast cast, or of t itself, is a
    stride-0 view); else a copy with every head."""
    bsz, _, sk, dh = t.shape
    if tr.policy.hf.falcon and t.shape[1] == 1 and h > 1 and bsz == 1:
        return t if t.dtype == low else tr.new(t.shape, low, t.grad)
    return t if _contiguous(tr, t, h, low) else tr.new((bsz, h, sk, dh), low, t.grad)


def eager(tr: Trace, b, q: T, k: T, v: T) -> T:
    """eager_attention_forward: saved q, k^T copies (k repeat_kv'd), the softmax output (fp32 or the
    scores' dtype), its low copy when that differs from the compute dtype, dropout's noise and
    result, and a v copy."""
    hf = tr.policy.hf
    bsz, h, s, dh = q.shape
    sk = k.shape[2]
    grad = q.grad or k.grad or v.grad
    low = _low(tr, q)
    q_c = tr.new(q.shape, low, q.grad)  # q is a transposed (B, S, H, Dh) layout: reshaping copies
    # k^T of a contiguous full-head k (the cache's copy) in the compute dtype reshapes to a view
    k_c = _operand(tr, k, h, low)
    tr.save(q_c, k_c)
    del q_c, k_c
    scores = tr.new((bsz, h, s, sk), low, grad)
    scaled = tr.new(scores.shape, low, grad)  # * scaling
    del scores
    if hf.attn_softcap:  # / softcap, tanh (saves its output), * softcap
        capped = tr.new(scaled.shape, low, grad)
        del scaled
        th = tr.new(capped.shape, low, grad)
        del capped
        tr.save(th)
        scaled = tr.new(th.shape, low, grad)
        del th
    bias = score_bias(tr, b, q, sk)
    if bias is not None:  # T5: + position_bias (fp32 from its embedding table; cross-attention's zeros)
        scaled = tr.new(scaled.shape, promote(scaled.dtype, bias.dtype), grad or bias.grad)
    if hf.causal_mask and (b.causal or not hf.seq2seq):  # an encoder-decoder: its decoder's self-attention
        mask = causal_mask(tr, bsz, s, sk, "sliding" if _layer_sliding(tr) else "full")
        scaled = tr.new(scaled.shape, promote(scaled.dtype, mask.dtype), scaled.grad)  # + attention_mask
    probs = tr.new(scaled.shape, "fp32" if hf.softmax_fp32 else scaled.dtype, scaled.grad)
    del scaled
    tr.save(probs)
    if probs.dtype != q.dtype and not hf.seq2seq:  # .to(query.dtype) / .type(value.dtype): query is fp32
        probs = tr.new(probs.shape, q.dtype, grad)  # after rotary under autocast, so the dropout runs in fp32
    probs = dropout_op(tr, probs, b.dropout)
    if probs.dtype != low:  # autocast's cast for the matmul
        probs = tr.new(probs.shape, low, grad)
    # matmul's (B*H, Sk, Dh) operand: a view of a contiguous full-head v (the cache's copy) in the
    # compute dtype, else a copy (repeat_kv, a transposed projection, autocast's cast)
    v_c = _operand(tr, v, h, low)
    tr.save(probs, v_c)
    del v_c
    return tr.new(q.shape, low, grad)


def score_bias(tr: Trace, b, q: T, sk: int) -> T | None:
    """T5Attention's position_bias: the stack's relative bias for self-attention (`tr.score_bias`,
    act_seq2seq), and for cross-attention `torch.zeros((1, H, S, Sk), dtype=query.dtype)`, made by
    the decoder's first layer and passed on to the others (requires_grad under checkpointing)."""
    if tr.policy.hf.seq2seq != "t5":
        return None
    if not b.context_dim:
        return tr.score_bias
    key = ("zeros_bias", q.shape[1], q.shape[2], sk)
    if key not in tr.shared:
        tr.shared[key] = tr.new((1, q.shape[1], q.shape[2], sk), q.dtype, tr.policy.checkpointing == "full")
    return tr.shared[key]


def sdpa(tr: Trace, b, q: T, k: T, v: T) -> T:
    """sdpa_attention_forward. Without dropout: CPU flash attention saves q, k, v (autocast's low
    copies; G-head k, v unless a mask is passed, then repeat_kv'd), the output and logsumexp; with
    a sliding window the (B, 1, S, Sk) mask too. With dropout: the math path (`_math`)."""
    bsz, h, s, dh = q.shape
    sk = k.shape[2]
    bias = score_bias(tr, b, q, sk)
    if bias is not None:  # T5: create_position_bias_mask, then sdpa's math path (the mask needs grad)
        masks = _bias_mask(tr, b, bias)
        out = _math(tr, b, *(tr.low(t) for t in (q, k, v)))
        del masks
        return out
    q, k, v = (tr.low(t) for t in (q, k, v))
    if b.dropout > 0 or (tr.policy.hf.falcon and k.shape[1] != h):
        # Falcon passes multi-query k, v of one head as they are: CPU sdpa broadcasts them on its math path
        return _math(tr, b, q, k, v)
    grad = q.grad or k.grad or v.grad
    if _windowed(tr, b, sk):  # the bool mask, made once, becomes an additive one in q's dtype per call
        causal_mask(tr, bsz, s, sk, "sliding" if _layer_sliding(tr) else "full")
        # repeat_kv: a copy, except one kv head (multi-query) in the dtype it already had, whose
        # expand(.., H, ..).reshape is a stride-0 view (autocast then casts that view to H heads)
        k, v = (tr.new((bsz, h, sk, dh), t.dtype, t.grad)
                if t.shape[1] != h and (t.shape[1] != 1 or tr.policy.autocast) else t for t in (k, v))
        tr.save(tr.new((bsz, 1, s, sk), q.dtype, False))
    out = tr.new(q.shape, q.dtype, grad)
    tr.save(q, k, v, out, tr.new((bsz, h, s), "fp32", False))
    return out


def _bias_mask(tr: Trace, b, bias: T) -> list[T]:
    """sdpa_attention_forward's float mask from T5's position_bias (create_position_bias_mask): the
    decoder's self-attention torch.where(causal, bias, min) (saving the (1, 1, S, Sk) condition), the
    encoder's .contiguous() copy of the permuted bias, cross-attention's zeros as they are; autocast
    casts it to the low dtype for sdpa. Alive during the call."""
    made = []
    if b.causal:
        cond = tr.new((1, 1, *bias.shape[2:]), "bool", False)
        tr.save(cond)
        made.append(tr.new(bias.shape, bias.dtype, bias.grad))
    elif not b.context_dim:
        made.append(tr.new(bias.shape, bias.dtype, bias.grad))
    last = made[-1] if made else bias
    if tr.policy.autocast and last.dtype != tr.policy.autocast:
        made.append(tr.new(bias.shape, tr.policy.autocast, bias.grad))
    return made


def _math(tr: Trace, b, q: T, k: T, v: T) -> T:
    """aten::_scaled_dot_product_attention_math (torch 2.13, CPU): low q, k, v upcast to fp32;
    matmul(q * sf, k^T * sf) saves both; _safe_softmax saves its output; at::dropout saves the
    noise (input * bernoulli / (1 - p)); matmul(dropped, v) saves the result and a v copy."""
    bsz, h, s, dh = q.shape
    sk = k.shape[2]
    grad = q.grad or k.grad or v.grad
    acc = "fp32" if q.dtype in ("bf16", "fp16") else q.dtype
    # query_acc, key_acc, value_acc: fp32 copies of low inputs, alive until the function returns
    upcast = [tr.new(t.shape, acc, t.grad) for t in (q, k, v)] if acc != q.dtype else []
    # Falcon's one-head k, v: matmul broadcasts them, expand(B, H, ..).reshape(B * H, ..) copies unless
    # B is 1 (then a stride-0 view of k^T * sf, or of v's fp32 copy / v itself)
    view = tr.policy.hf.falcon and k.shape[1] == 1 and h > 1 and bsz == 1
    q_s = tr.new(q.shape, acc, q.grad)
    k_t = tr.new((bsz, 1 if view else h, dh, sk), acc, k.grad)  # GQA: expanded to H heads
    tr.save(q_s, k_t)
    del q_s, k_t
    probs = tr.new((bsz, h, s, sk), acc, grad)
    tr.save(probs)
    dropped = dropout_op(tr, probs, b.dropout)
    del probs
    # matmul(dropped, v) reshapes v (its fp32 copy, same strides) to (B*H, Sk, Dh): a view when v is
    # the cache's contiguous full-head copy
    contiguous = tr.policy.hf.cache and v.shape[1] == h
    v_c = (upcast[2] if upcast else v) if view or contiguous else tr.new((bsz, h, sk, dh), acc, v.grad)
    tr.save(dropped, v_c)
    del v_c
    out = tr.new(q.shape, acc, grad)
    if acc != q.dtype:  # returns (out.to(origin_dtype), attn.to(origin_dtype)); sdpa drops attn
        low_attn = tr.new((bsz, h, s, sk), q.dtype, False)
        del low_attn
    del upcast, dropped
    # its backward holds one (B, H, S, Sk) gradient and the fp32 gradients of q * sf and k^T * sf
    # next to the residual's (measured: tests/cost/test_hf.py); without dropout (Falcon) the
    # probabilities' gradient and _softmax_backward_data's output at once (measured: bench)
    scores = (1 if b.dropout > 0 else 2) * nbytes(bsz * h * s * sk, acc)
    tr.steps[-1].io = (scores, 2 * out.storage.nbytes)
    return tr.new(q.shape, q.dtype, grad) if acc != q.dtype else out  # .to(origin_dtype)


def python_gelu(tr: Trace, x: T) -> T:
    """NewGELUActivation: pow saves x, tanh its output, the last mul both factors (1 + tanh, 0.5 x)."""
    cube = tr.new(x.shape, x.dtype, x.grad)  # torch.pow(x, 3.0)
    inner = tr.new(x.shape, x.dtype, x.grad)  # c * (x + 0.044715 * x^3), the temporaries die in turn
    del cube
    th = tr.new(x.shape, x.dtype, x.grad)
    del inner
    one_plus = tr.new(x.shape, x.dtype, x.grad)
    half = tr.new(x.shape, x.dtype, x.grad)
    out = tr.new(x.shape, x.dtype, x.grad)
    if out.grad:
        tr.save(x, th, one_plus, half)
    return out


def before_layers(tr: Trace, attn, x: T) -> None:
    """The base model's forward makes the rotary tables and the mask before its first layer; with
    activation checkpointing every layer's checkpoint keeps them (they are its arguments)."""
    bsz, s = x.shape[0], x.shape[1]
    hf = tr.policy.hf
    made = []
    if hf.mla == "deepseek_v2":  # one complex64 table (act_hf_mla.freqs_cis)
        from layerwise.cost.act_hf_mla import freqs_cis

        made.append(freqs_cis(tr, s, attn.d_rope))
    elif hf.mla:  # DeepSeek-V3: cos and sin over the rotary dims
        tr.shared[("rope", s, attn.d_rope)] = [tr.new((1, s, attn.d_rope), tr.policy.dtype, False) for _ in range(2)]
        made += tr.shared[("rope", s, attn.d_rope)]
    elif attn.rope is not None:
        key = ("rope", s, attn.rope.rotated)
        tr.shared[key] = [tr.new((1, s, attn.rope.rotated), tr.policy.dtype, False) for _ in range(2)]
        made += tr.shared[key]
        if hf.rope_per_type and len(set(hf.sliding)) == 2:  # Gemma 3: the local layers' tables too
            tr.shared[("rope_local",)] = [tr.new((1, s, attn.rope.rotated), tr.policy.dtype, False) for _ in range(2)]
            made += tr.shared[("rope_local",)]
    if hf.sliding:  # Gemma 2/3: both masks made, whichever layers use them; sdpa: the window's only
        if tr.policy.attention == "eager":
            made.append(causal_mask(tr, bsz, s, s))
        if tr.policy.attention == "eager" or s >= hf.window:
            made.append(causal_mask(tr, bsz, s, s, "sliding"))
    elif hf.causal_mask and (tr.policy.attention == "eager" or (bool(attn.sliding_window) and s > attn.sliding_window)):
        made.append(causal_mask(tr, bsz, s, s))
    if tr.policy.checkpointing == "full":
        tr.save(*made)


def softcap_logits(tr: Trace, logits: T) -> T:
    """Gemma2ForCausalLM: logits / cap, tanh (saves its output), * cap, before the loss.
    MambaForCausalLM: `.float()` on the head's output, which then dies (not kept to the loss)."""
    if tr.policy.hf.float_logits and logits.dtype != "fp32":
        tr.begin(".float")
        return tr.new(logits.shape, "fp32", logits.grad)
    if not tr.policy.hf.logit_softcap:
        return logits
    tr.begin(".softcap")
    capped = tr.new(logits.shape, logits.dtype, logits.grad)
    del logits
    th = tr.new(capped.shape, capped.dtype, capped.grad)
    del capped
    if th.grad:
        tr.save(th)
    return tr.new(th.shape, th.dtype, th.grad)


def after_layers(tr: Trace) -> None:
    """The base model (an encoder-decoder: each stack) returns: its mask dies (the tables, T5's
    cross-attention zeros, live on where saved)."""
    for key in [k for k in tr.shared if k[0] in ("mask", "zeros_bias")]:
        del tr.shared[key]
