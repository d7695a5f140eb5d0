"""Torch module of the decoder_lm spec: children embed, [pos], [drop], blocks, [final_norm],
[lm_head]. Without lm_head the head is tied: logits = h @ embed.weight^T with the very same tensor,
so `named_parameters()` lists it once and its gradient sums both uses."""
from __future__ import annotations

import struct

import torch
from torch import nn
from torch.nn import functional as F


def rounded(value: float, dtype: torch.dtype) -> float:
    """`value` rounded to `dtype` (as torch.tensor(value, dtype=dtype).item(), in pure Python so it
    also runs under fake tensors and on the meta device): fp32 and fp16 through struct, bf16 as
    fp32's upper 16 bits rounded to nearest even."""
    if dtype == torch.float16:
        return struct.unpack("<e", struct.pack("<e", value))[0]
    (bits,) = struct.unpack("<I", struct.pack("<f", value))
    if dtype == torch.bfloat16:
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return struct.unpack("<f", struct.pack("<I", bits))[0] if dtype in (torch.float32, torch.bfloat16) else value


class DecoderLMModule(nn.Module):
    def __init__(self, children: dict[str, nn.Module], tied: bool, embed_scale: float = 0.0,
                 logit_softcap: float = 0.0):
        super().__init__()
        for name, module in children.items():
            self.add_module(name, module)
        self.tied = tied
        self.embed_scale, self.logit_softcap = embed_scale, logit_softcap

    def head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.tied else self.lm_head.weight

    def attentions(self) -> list[nn.Module]:
        """Each block's cached layer, in layer order: its self-attention, or Mamba's mixer (whose
        cache is its conv and scan states)."""
        return [block.attn if hasattr(block, "attn") else block.mixer for block in self.blocks]

    def init_kv_cache(self, batch: int, max_len: int, dtype: torch.dtype, rolling: bool = True) -> list[torch.Tensor]:
        """[k_0, v_0, k_1, v_1, ...], each (batch, n_kv_heads, length, d_head): what a decode keeps
        per layer. length = max_len, except on a sliding-window layer with `rolling`: the window
        (a rolling buffer, build/attention.py `_rolling`; HF's DynamicSlidingWindowLayer keeps
        window - 1 and appends the current token). Without `rolling` every layer keeps max_len
        positions in order, so a decode can step back (speculative decoding's rewinds)."""
        device = self.embed.weight.device
        out = []
        for attn in self.attentions():
            if hasattr(attn, "init_state"):  # Mamba: (conv state, scan state) instead of K and V
                out += attn.init_state(batch, dtype, device)
                continue
            if hasattr(attn, "cache_shapes"):  # MLA: its latents and rotary keys (build/mla.py)
                out += [torch.zeros(shape, dtype=dtype, device=device) for shape in attn.cache_shapes(batch, max_len)]
                continue
            length = min(max_len, attn.window) if rolling and attn.window else max_len
            shape = (batch, attn.kv_heads, length, attn.d_head)
            out += [torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)]
        return out

    def forward(self, ids: torch.Tensor, kv_cache: list[torch.Tensor] | None = None,
                start_pos: int = 0) -> torch.Tensor:  # (B, S) int -> (B, S, vocab_size)
        """With `kv_cache` (from init_kv_cache), `ids` are the tokens at positions start_pos.. and
        their keys/values are written into the cache: a prefill (start_pos 0) or a decode step."""
        x = self.embed(ids)  # (B, S, D)
        if self.embed_scale:  # Gemma: sqrt(d_model), rounded to the weights' dtype as HF does
            x = x * rounded(self.embed_scale, x.dtype)
        if hasattr(self, "pos"):
            x = self.pos(x, start_pos) if kv_cache is not None else self.pos(x)
        if hasattr(self, "drop"):
            x = self.drop(x)
        if kv_cache is None:
            x = self.blocks(x)
        else:
            x = self._cached_blocks(x, kv_cache, start_pos)
        if hasattr(self, "final_norm"):
            x = self.final_norm(x)
        logits = F.linear(x, self.embed.weight) if self.tied else self.lm_head(x)
        if self.logit_softcap:  # Gemma 2: logits bounded in (-cap, cap)
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return logits

    def _cached_blocks(self, x, kv_cache, start_pos: int):
        attns = self.attentions()
        try:
            for i, (block, attn) in enumerate(zip(self.blocks, attns)):
                attn.kv = (kv_cache[2 * i], kv_cache[2 * i + 1], start_pos)
                x = block(x)
        finally:
            for attn in attns:
                attn.kv = None
        return x
