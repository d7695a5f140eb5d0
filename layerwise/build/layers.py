"""Torch modules for the basic leaf blocks torch does not ship: positions, CLS token, patch
embedding, token selection. Parameter names are the ones docs/BLOCKS.md lists."""
from __future__ import annotations

import math

import torch
from torch import nn


class LearnedPositions(nn.Module):
    """x + weight[:S]; weight (max_seq, d_model)."""

    def __init__(self, max_seq: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_seq, d_model))
        nn.init.normal_(self.weight, std=0.02)  # GPT-2's position init

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:  # (B, S, D)
        return x + self.weight[start: start + x.shape[1]]  # start > 0: decoding after a KV-cached prefix


def sinusoid_table(seq: int, d_model: int, device=None, dtype=None) -> torch.Tensor:
    """(seq, d_model): sin on even columns, cos on odd (Vaswani et al. 2017, section 3.5)."""
    pos = torch.arange(seq, device=device, dtype=torch.float32)[:, None]  # (S, 1)
    freq = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.empty(seq, d_model, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table.to(dtype) if dtype is not None else table


class SinusoidalPositions(nn.Module):
    """x + sinusoid table. The table is recomputed per call rather than kept as a buffer, so the
    module has no buffers (docs/BLOCKS.md) and follows x's device and dtype."""

    def __init__(self, max_seq: int, d_model: int):
        super().__init__()
        self.max_seq, self.d_model = max_seq, d_model

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:  # (B, S, D)
        table = sinusoid_table(start + x.shape[1], self.d_model, device=x.device, dtype=x.dtype)
        return x + table[start:]


class ClsToken(nn.Module):
    """Prepends a learned token: (B, S, D) -> (B, S+1, D); weight (1, 1, D)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, 1, d_model))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.weight.expand(x.shape[0], -1, -1), x], dim=1)


class PatchEmbedding(nn.Module):
    """(B, C, H, W) -> (B, N, d_model), N = (H/ph)(W/pw), patches in row-major order.

    kind "conv": a Conv2d with kernel = stride = patch; "linear": the image cut into patches
    flattened as (C, ph, pw), then a Linear. Both give the same output for the same weights
    (the Linear's weight is the Conv2d's reshaped to (d_model, C*ph*pw)).
    """

    def __init__(self, c_in: int, d_model: int, patch: tuple[int, int], kind: str, bias: bool):
        super().__init__()
        self.patch, self.kind = patch, kind
        ph, pw = patch
        if kind == "conv":
            self.proj = nn.Conv2d(c_in, d_model, kernel_size=patch, stride=patch, bias=bias)
        else:
            self.proj = nn.Linear(c_in * ph * pw, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "conv":
            return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, H/ph, W/pw) -> (B, N, D)
        b, c, h, w = x.shape
        ph, pw = self.patch
        x = x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5)  # (B, H/ph, W/pw, C, ph, pw)
        return self.proj(x.reshape(b, (h // ph) * (w // pw), c * ph * pw))


class SelectToken(nn.Module):
    """(B, S, D) -> (B, D): one token (ViT's CLS) or the mean over tokens."""

    def __init__(self, index: int | str):
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1) if self.index == "mean" else x[:, self.index]

    def extra_repr(self) -> str:
        return f"index={self.index!r}"
