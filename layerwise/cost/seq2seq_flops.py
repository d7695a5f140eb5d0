"""Forward FLOPs of an encoder-decoder's greedy decode steps with both KV caches
(layerwise.build.seq2seq): after the prefill (the encoder over the S-long source, its memory
projected into every layer's cross cache, the decoder over its S-long input), step i runs only the
decoder on one token per sequence. Its self-attention scores the token against the S + i + 1
cached keys; its cross-attention against the S memory positions, whose keys/values are not
projected again. Pure Python."""
from __future__ import annotations

from layerwise.spec.counts import FlopCtx, Flops


def _fwd(f: Flops) -> Flops:
    return Flops(fwd_matmul=f.fwd_matmul, fwd_other=f.fwd_other)


def seq2seq_decode_flops(body, batch: int, prompt: int, n: int, workload) -> Flops:
    ctx = FlopCtx(input_grad=False, attention=workload.attention, device=workload.device)
    kids = dict(body.children())
    one, hidden = (batch, 1), (batch, 1, body.d_model)
    dec = body.dec_block.with_memory(prompt)
    cross, own = dec.cross_attn, dec.self_attn
    memory = (batch, prompt, cross.context_dim)
    per_layer = _fwd(dec.flops(hidden, ctx))  # the cross core over `prompt` keys; self core over 1 key
    projected = _fwd(cross.k_proj.flops(memory, ctx) + cross.v_proj.flops(memory, ctx))  # cached: not redone
    step = Flops(fwd_matmul=body.dec_layers * (per_layer.fwd_matmul - projected.fwd_matmul),
                 fwd_other=body.dec_layers * (per_layer.fwd_other - projected.fwd_other))
    step = step + _fwd(kids.get("tgt_embed", kids["embed"]).flops(one, ctx))
    for name in ("dec_pos", "pos", "dec_embed_norm", "drop", "dec_norm"):
        if name in kids:
            step = step + _fwd(kids[name].flops(hidden, ctx))
    head = kids.get("lm_head") or body._head()
    step = step + _fwd(head.flops(hidden, ctx))
    # the self-attention core: sum over steps of S + i + 1 keys, in place of the one key counted above
    keys = n * prompt + n * (n + 1) // 2
    core = own.core_flops(batch, 1, keys, False, False, False, "sdpa")
    one_key = own.core_flops(batch, 1, 1, False, False, False, "sdpa")
    return Flops(fwd_matmul=n * step.fwd_matmul + body.dec_layers * (core.fwd_matmul - n * one_key.fwd_matmul),
                 fwd_other=n * step.fwd_other + body.dec_layers * (core.fwd_other - n * one_key.fwd_other))
