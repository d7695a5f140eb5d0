"""Torch module of the decoder_lm spec: children embed, [pos], [drop], blocks, [final_norm],
[lm_head]. Without lm_head the head is tied: logits = h @ embed.weight^T with the very same tensor,
so `named_parameters()` lists it once and its gradient sums both uses."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DecoderLMModule(nn.Module):
    def __init__(self, children: dict[str, nn.Module], tied: bool):
        super().__init__()
        for name, module in children.items():
            self.add_module(name, module)
        self.tied = tied

    def head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.tied else self.lm_head.weight

    def attentions(self) -> list[nn.Module]:
        """Each block's self-attention module, in layer order."""
        return [block.attn for block in self.blocks]

    def init_kv_cache(self, batch: int, max_len: int, dtype: torch.dtype) -> list[torch.Tensor]:
        """[k_0, v_0, k_1, v_1, ...], each (batch, n_kv_heads, max_len, d_head): what a decode keeps
        per layer. (A sliding window could cap max_len at the window with a rolling buffer; this
        cache does not.)"""
        device = self.embed.weight.device
        out = []
        for attn in self.attentions():
            shape = (batch, attn.kv_heads, max_len, attn.d_head)
            out += [torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)]
        return out

    def forward(self, ids: torch.Tensor, kv_cache: list[torch.Tensor] | None = None,
                start_pos: int = 0) -> torch.Tensor:  # (B, S) int -> (B, S, vocab_size)
        """With `kv_cache` (from init_kv_cache), `ids` are the tokens at positions start_pos.. and
        their keys/values are written into the cache: a prefill (start_pos 0) or a decode step."""
        x = self.embed(ids)  # (B, S, D)
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
        return F.linear(x, self.embed.weight) if self.tied else self.lm_head(x)

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
