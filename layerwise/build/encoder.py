"""Torch modules of the encoder spec: the token-type table and the BERT-style encoder."""
from __future__ import annotations

import torch
from torch import nn


class TokenTypeModule(nn.Module):
    """x + weight[0]: every token in segment 0; weight (type_vocab_size, d_model)."""

    def __init__(self, type_vocab_size: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(type_vocab_size, d_model))
        nn.init.normal_(self.weight, std=0.02)  # BERT's initializer_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, S, D)
        return x + self.weight[0]


class EncoderModule(nn.Module):
    """Children run in order: embed, pos, [token_type], embed_norm, [drop], blocks, [pooler] or
    [mlm_head, then the decoder: x @ embed.weight^T + mlm_bias, the embedding tensor itself]."""

    def __init__(self, children: dict[str, nn.Module], mlm_vocab: int = 0, trainable: bool = True):
        super().__init__()
        for name, module in children.items():
            self.add_module(name, module)
        self.mlm_bias = nn.Parameter(torch.zeros(mlm_vocab), requires_grad=trainable) if mlm_vocab else None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, S) -> (B, D), (B, S, D) or (B, S, V)
        x = ids
        for module in self.children():
            x = module(x)
        if self.mlm_bias is not None:
            x = nn.functional.linear(x, self.embed.weight, self.mlm_bias)
        return x
