"""The multi-head latent attention module built from an `mla` spec (layerwise.blocks.mla).

Its KV cache (set by the LM as `kv = (latent_cache, rope_cache, start)` while a decode runs) holds,
per token, the normed latent (kv_rank) and the rotated shared key (d_rope): `cache_shapes`.
Keys and values are decompressed from the cache on every call (kv_b_proj over all cached tokens),
as transformers' DeepseekV2/V3Attention does since its cache stores the latents too.
The rotary dims use the "rotate half" layout; DeepSeek checkpoints store them interleaved
(pairs x0, x1), which is the same function after permuting those output rows of q_b_proj and
kv_a_proj_with_mqa (tests/presets/test_hf_deepseek.py copies transformers' weights that way).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from layerwise.build.attention import attention_mask
from layerwise.build.init import init_weight

_LINEARS = ("q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")


class MLAModule(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.n_heads, self.kv_rank = spec.n_heads, spec.kv_rank
        self.d_nope, self.d_rope, self.d_v = spec.d_nope, spec.d_rope, spec.d_v
        self.scale, self.p = spec.softmax_scale, float(spec.dropout)
        self.impl = "sdpa"  # build.runtime.set_attention_impl changes it
        for name in (*_LINEARS, "q_a_layernorm", "kv_a_layernorm"):
            child = getattr(spec, name)
            if child is None:
                continue
            module = child.build()
            if name in _LINEARS and child.type_name == "linear":
                init_weight(module, child.init, None)
            setattr(self, name, module)
        self.rope = spec.rope.build()
        self.kv = None  # (latent_cache, rope_cache, start) while a KV-cached decode runs

    def cache_shapes(self, batch: int, max_len: int) -> list[tuple[int, ...]]:
        """The two tensors a decode keeps for this layer: latents and rotated shared keys."""
        return [(batch, 1, max_len, self.kv_rank), (batch, 1, max_len, self.d_rope)]

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "q_proj"):
            return self.q_proj(x)
        return self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape  # (B, S, d_model)
        h, dn, dr = self.n_heads, self.d_nope, self.d_rope
        q = self._query(x).view(b, s, h, dn + dr).transpose(1, 2)  # (B, H, S, dn + dr)
        q_nope, q_rope = q.split([dn, dr], dim=-1)
        c, k_rope = self.kv_a_proj_with_mqa(x).split([self.kv_rank, dr], dim=-1)  # (B, S, r), (B, S, dr)
        c = self.kv_a_layernorm(c).view(b, 1, s, self.kv_rank)
        k_rope = k_rope.view(b, 1, s, dr)  # one rotary key shared by every head
        start = self.kv[2] if self.kv is not None else 0
        cos, sin = self.rope.tables(torch.arange(start, start + s, device=x.device))
        q_rope, k_rope = self.rope.rotate(q_rope, cos, sin), self.rope.rotate(k_rope, cos, sin)
        if self.kv is not None:  # write this call's latents, read every cached one
            c_cache, r_cache, _ = self.kv
            end = start + s
            c_cache[:, :, start:end] = c
            r_cache[:, :, start:end] = k_rope
            c, k_rope = c_cache[:, :, :end], r_cache[:, :, :end]
        sk = c.shape[2]
        kv = self.kv_b_proj(c).view(b, sk, h, dn + self.d_v).transpose(1, 2)  # (B, H, Sk, dn + dv)
        k_nope, v = kv.split([dn, self.d_v], dim=-1)
        q = torch.cat((q_nope, q_rope), dim=-1)
        k = torch.cat((k_nope, k_rope.expand(b, h, sk, dr)), dim=-1)  # (B, H, Sk, dn + dr)
        y = self._eager(q, k, v, start) if self.impl == "eager" else self._sdpa(q, k, v, start)  # (B, H, S, dv)
        return self.o_proj(y.transpose(1, 2).reshape(b, s, h * self.d_v))

    def _eager(self, q, k, v, start: int):
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, S, Sk)
        mask = attention_mask(q.shape[2], k.shape[2], True, 0, q.device, offset=start)
        scores = scores.masked_fill(~mask, float("-inf"))
        probs = F.dropout(scores.softmax(dim=-1), self.p, self.training)
        return probs @ v

    def _sdpa(self, q, k, v, start: int):
        p = self.p if self.training else 0.0
        if start == 0 and q.shape[2] == k.shape[2]:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, scale=self.scale)
        mask = attention_mask(q.shape[2], k.shape[2], True, 0, q.device, offset=start)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=self.scale)
