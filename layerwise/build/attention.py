"""The attention module built from an `attention` spec, and the rotary embedding it uses.

The implementation (eager | sdpa) is a run-time setting of the module (`build.runtime.
set_attention_impl`), never part of the spec: both compute the same function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from layerwise.build.init import init_weight

IMPLS = ("eager", "sdpa")


class RotaryEmbedding(nn.Module):
    """Rotates (..., S, D) vectors by position; cos/sin computed per call (no buffers).

    `inv_freq`: D/2 floats (scaling already applied by the spec); `scale`: YaRN's cos/sin factor.
    """

    def __init__(self, inv_freq: list[float], scale: float = 1.0):
        super().__init__()
        self.inv_freq = tuple(float(f) for f in inv_freq)
        self.scale = float(scale)

    def tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (S, D) for float positions (S,). An outer product by broadcasting,
        not a matmul, so FlopCounterMode counts nothing here."""
        inv = torch.tensor(self.inv_freq, dtype=torch.float32, device=positions.device)
        angles = positions.float()[:, None] * inv[None, :]  # (S, D/2)
        angles = torch.cat((angles, angles), dim=-1)  # (S, D): the "rotate half" layout
        cos, sin = angles.cos(), angles.sin()
        if self.scale != 1.0:
            cos, sin = cos * self.scale, sin * self.scale
        return cos, sin

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        rot = 2 * len(self.inv_freq)
        if rot < x.shape[-1]:  # partial rotary (Phi-2, GPT-NeoX): the trailing dims pass through
            return torch.cat((self._rotate(x[..., :rot], cos, sin), x[..., rot:]), dim=-1)
        return self._rotate(x, cos, sin)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        if positions is None:
            positions = torch.arange(x.shape[-2], device=x.device)
        return self.rotate(x, *self.tables(positions))


def attention_mask(s: int, sk: int, causal: bool, window: int, device, offset: int = 0) -> torch.Tensor | None:
    """Boolean (S, Sk) mask, True = attend; None when everything is visible. Queries sit at
    positions offset..offset+S-1 (offset > 0 when decoding after a KV-cached prefix)."""
    if not causal and not window:
        return None
    i = torch.arange(offset, offset + s, device=device)[:, None]
    j = torch.arange(sk, device=device)[None, :]
    keep = torch.ones(s, sk, dtype=torch.bool, device=device)
    if causal:
        keep &= j <= i
    if window:
        keep &= (i - j).abs() < window
    return keep


class AttentionModule(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.n_heads, self.kv_heads, self.d_head = spec.n_heads, spec.kv_heads, spec.head_dim
        self.causal, self.window, self.p = spec.causal, spec.sliding_window, float(spec.dropout)
        self.scale, self.softcap = spec.score_scale, float(spec.softcap)
        self.sdpa_scale = spec.scale or None  # None: sdpa's own d_head ** -0.5
        self.cross = spec.context_dim > 0
        self.impl = "sdpa"  # set_attention_impl changes it
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            child = getattr(spec, name)
            module = child.build()
            if child.type_name == "linear":
                init_weight(module, child.init, None)
            setattr(self, name, module)
        self.q_norm = spec.q_norm.build() if spec.q_norm is not None else None
        self.k_norm = spec.k_norm.build() if spec.k_norm is not None else None
        self.rope = spec.rope.build() if spec.rope is not None else None
        self.kv = None  # (k_cache, v_cache, start) while a KV-cached decode runs; set by the LM

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """bias: (1, H, S, Sk) added to the scores (T5's relative positions; spec score_bias)."""
        b, s, _ = x.shape  # (B, S, d_model)
        if self.cross and context is None:
            raise ValueError("cross attention needs a context tensor (B, context_len, context_dim)")
        src = context if self.cross else x
        sk = src.shape[1]
        q = self.q_proj(x).view(b, s, self.n_heads, self.d_head)
        k = self.k_proj(src).view(b, sk, self.kv_heads, self.d_head)
        v = self.v_proj(src).view(b, sk, self.kv_heads, self.d_head)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, S, d_head)
        start = self.kv[2] if self.kv is not None else 0
        if self.rope is not None:
            cos, sin = self.rope.tables(torch.arange(start, start + s, device=x.device))
            q, k = self.rope.rotate(q, cos, sin), self.rope.rotate(k, cos, sin)
        if self.kv is not None and self.window and self.kv[0].shape[2] < start + s:  # a full rolling buffer
            y = self._rolling(q, k, v)
        elif self.kv is not None:
            y = self._cached(q, k, v, bias)
        elif bias is not None:
            y = self._eager_bias(q, k, v, bias) if self.impl == "eager" else self._sdpa_bias(q, k, v, bias)
        else:
            y = self._eager(q, k, v) if self.impl == "eager" else self._sdpa(q, k, v)  # (B, H, S, d_head)
        return self.o_proj(y.transpose(1, 2).reshape(b, s, self.n_heads * self.d_head))

    def _eager_bias(self, q, k, v, bias):
        """Eager attention with an additive score bias (no GQA: T5 has none)."""
        scores = self._capped((q @ k.transpose(-2, -1)) * self.scale) + bias  # (B, H, S, Sk)
        mask = attention_mask(q.shape[2], k.shape[2], self.causal, self.window, q.device)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = F.dropout(scores.softmax(dim=-1), self.p, self.training)
        return probs @ v

    def _sdpa_bias(self, q, k, v, bias):
        """sdpa with the bias as a float mask (causal: -inf above the diagonal, folded in)."""
        if self.softcap:
            return self._eager_bias(q, k, v, bias)
        mask = attention_mask(q.shape[2], k.shape[2], self.causal, self.window, q.device)
        if mask is not None:
            bias = bias.masked_fill(~mask, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.p if self.training else 0.0,
                                              scale=self.sdpa_scale)

    def _cached(self, q, k, v, bias=None):
        """Decode step: write this call's k, v (B, kv_heads, S, d_head) into the cache at `start`,
        attend over everything cached so far. Inference only (the cache is written in place)."""
        k_cache, v_cache, start = self.kv
        end = start + q.shape[2]
        k_cache[:, :, start:end] = k
        v_cache[:, :, start:end] = v
        k, v = k_cache[:, :, :end], v_cache[:, :, :end]
        if self.impl == "eager" and bias is None:  # --attention eager decodes eagerly too
            return self._eager(q, k, v, offset=start)
        mask = attention_mask(q.shape[2], end, self.causal, self.window, q.device, offset=start)
        if self.softcap:  # no sdpa kernel soft-caps the scores
            return self._eager(q, k, v, mask)
        if bias is not None:  # (1, H, S, end) for these query positions
            mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.kv_heads != self.n_heads,
                                              scale=self.sdpa_scale)

    def _rolling(self, q, k, v):
        """A sliding-window layer whose cache holds only the last `window` positions (init_kv_cache
        with rolling=True): position p lives in slot p % window. The prefill (start 0) attends over
        its own keys with the window mask, then keeps its last `window` keys; a decode step (one
        token) writes its slot and attends over the whole buffer, which holds exactly the positions
        p - window + 1 .. p its window lets it see (order does not matter to attention)."""
        k_cache, v_cache, start = self.kv
        size, s = k_cache.shape[2], q.shape[2]
        if size < self.window:
            raise ValueError(f"{start + s} positions exceed the KV cache of {size} (a rolling window cache "
                             f"holds the window, {self.window})")
        if start == 0:
            keep = torch.arange(s - size, s, device=q.device)  # the last `size` positions
            k_cache[:, :, keep % size], v_cache[:, :, keep % size] = k[:, :, -size:], v[:, :, -size:]
            return self._eager(q, k, v) if self.impl == "eager" or self.softcap else self._sdpa(q, k, v)
        if s != 1:
            raise ValueError(f"a rolling window cache takes a prefill at position 0 or one token at a time, "
                             f"got {s} tokens at position {start}")
        slot = start % size
        k_cache[:, :, slot:slot + 1], v_cache[:, :, slot:slot + 1] = k, v
        if self.softcap or self.impl == "eager":
            return self._eager(q, k_cache, v_cache, None)
        return F.scaled_dot_product_attention(q, k_cache, v_cache, enable_gqa=self.kv_heads != self.n_heads,
                                              scale=self.sdpa_scale)

    def _capped(self, scores):
        """Gemma 2's soft-capping: softcap * tanh(scores / softcap), bounded in (-softcap, softcap)."""
        if not self.softcap:
            return scores
        return torch.tanh(scores / self.softcap) * self.softcap

    def _eager(self, q, k, v, mask=False, offset: int = 0):
        """mask: a boolean (S, Sk) one (True = attend), None (none), or False: the layer's own for
        queries from position `offset` (a KV-cached decode step's)."""
        group = self.n_heads // self.kv_heads
        if group > 1:  # GQA/MQA: each kv head serves `group` query heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = self._capped((q @ k.transpose(-2, -1)) * self.scale)  # (B, H, S, Sk)
        if mask is False:
            mask = attention_mask(q.shape[2], k.shape[2], self.causal, self.window, q.device, offset=offset)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = F.dropout(scores.softmax(dim=-1), self.p, self.training)
        return probs @ v

    def _sdpa(self, q, k, v):
        """A sliding window goes in as an explicit boolean mask, which CPU sdpa turns into an
        additive one in q's dtype (and saves for backward). Soft-capped scores run eager."""
        if self.softcap:
            return self._eager(q, k, v)
        p = self.p if self.training else 0.0
        gqa, scale = self.kv_heads != self.n_heads, self.sdpa_scale
        if self.causal and not self.window:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, enable_gqa=gqa, scale=scale)
        mask = attention_mask(q.shape[2], k.shape[2], self.causal, self.window, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, enable_gqa=gqa, scale=scale)
