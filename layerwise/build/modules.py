"""Small torch modules that the block specs build and torch does not ship."""
from __future__ import annotations

import torch
from torch import nn


class ResidualModule(nn.Module):
    """y = x + branch(x)."""

    def __init__(self, branch: nn.Module):
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)
