"""T5's relative position bias as a module: weight (n_buckets, n_heads) -> (1, H, S, Sk) scores
bias. The bucketing is transformers' T5Attention._relative_position_bucket (from Mesh TensorFlow)."""
from __future__ import annotations

import math

import torch
from torch import nn


def relative_bucket(rel: torch.Tensor, bidirectional: bool, n_buckets: int, max_distance: int) -> torch.Tensor:
    """rel = key position - query position (int64) -> bucket ids in [0, n_buckets)."""
    buckets = torch.zeros_like(rel)
    if bidirectional:
        n_buckets //= 2
        buckets = buckets + (rel > 0).long() * n_buckets
        rel = rel.abs()
    else:
        rel = -torch.clamp(rel, max=0)
    exact = n_buckets // 2
    large = exact + (torch.log(rel.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                     * (n_buckets - exact)).long()
    large = torch.clamp(large, max=n_buckets - 1)
    return buckets + torch.where(rel < exact, rel, large)


class RelativePositionBiasModule(nn.Module):
    def __init__(self, n_buckets: int, n_heads: int, max_distance: int, bidirectional: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_buckets, n_heads))
        nn.init.normal_(self.weight, std=1.0)  # T5's init: factor * d_model**-0.5 with its own scale; N(0, 1) here
        self.max_distance, self.bidirectional = max_distance, bidirectional

    def forward(self, q_len: int, k_len: int, offset: int = 0) -> torch.Tensor:  # -> (1, H, S, Sk)
        pos_q = torch.arange(offset, offset + q_len, device=self.weight.device)[:, None]
        pos_k = torch.arange(k_len, device=self.weight.device)[None, :]
        ids = relative_bucket(pos_k - pos_q, self.bidirectional, self.weight.shape[0], self.max_distance)
        return nn.functional.embedding(ids, self.weight).permute(2, 0, 1).unsqueeze(0)
