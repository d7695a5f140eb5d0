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

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, S) int -> (B, S, vocab_size)
        x = self.embed(ids)  # (B, S, D)
        for name in ("pos", "drop"):
            if hasattr(self, name):
                x = getattr(self, name)(x)
        x = self.blocks(x)
        if hasattr(self, "final_norm"):
            x = self.final_norm(x)
        return F.linear(x, self.embed.weight) if self.tied else self.lm_head(x)
