"""Torch module of the transformer block spec (layerwise.blocks.transformer): pre-norm, post-norm
and parallel wirings over child modules named attn_norm, attn, [attn_dropout], [ffn_norm], ffn,
[ffn_dropout], and Gemma's [attn_post_norm], [ffn_post_norm]."""
from __future__ import annotations

import torch
from torch import nn


class TransformerBlockModule(nn.Module):
    def __init__(self, children: dict[str, nn.Module], norm_position: str, parallel: bool):
        super().__init__()
        for name, module in children.items():
            self.add_module(name, module)
        self.norm_position, self.parallel = norm_position, parallel

    def _drop(self, name: str, x: torch.Tensor) -> torch.Tensor:
        drop = getattr(self, name, None)
        return drop(x) if drop is not None else x

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:  # (B, S, D) -> (B, S, D)
        if bias is not None:  # a score bias for the attention (T5's relative positions): pre-norm only
            x = x + self._drop("attn_dropout", self.attn(self.attn_norm(x), bias=bias))
            return x + self._drop("ffn_dropout", self.ffn(self.ffn_norm(x)))
        if self.parallel:
            h = self.attn_norm(x)
            g = self.ffn_norm(x) if hasattr(self, "ffn_norm") else h  # NeoX: its own norm
            return x + self._drop("attn_dropout", self.attn(h)) + self._drop("ffn_dropout", self.ffn(g))
        if self.norm_position == "post":  # BERT
            x = self.attn_norm(x + self._drop("attn_dropout", self.attn(x)))
            return self.ffn_norm(x + self._drop("ffn_dropout", self.ffn(x)))
        x = x + self._drop("attn_dropout", self._post("attn_post_norm", self.attn(self.attn_norm(x))))
        return x + self._drop("ffn_dropout", self._post("ffn_post_norm", self.ffn(self.ffn_norm(x))))

    def _post(self, name: str, x: torch.Tensor) -> torch.Tensor:
        norm = getattr(self, name, None)  # Gemma 2/3's sandwich norms
        return norm(x) if norm is not None else x
