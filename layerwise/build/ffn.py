"""The feed-forward module built from an `ffn` spec (also each expert of a `moe`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from layerwise.build.init import init_weight

def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """CLIP's GELU approximation, as transformers' QuickGELUActivation computes it."""
    return x * torch.sigmoid(1.702 * x)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quick_gelu(x)


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


def build_linear(spec, activation: str | None) -> nn.Module:
    """A projection child: Linear initialised for the activation after it, or a LoRA as is."""
    module = spec.build()
    if spec.type_name == "linear":
        init_weight(module, spec.init, activation)
    return module


class FFNModule(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.act = ACTIVATIONS[spec.activation]
        self.p = float(spec.dropout)
        self.up_proj = build_linear(spec.up_proj, None if spec.gated else spec.activation)
        self.gate_proj = build_linear(spec.gate_proj, spec.activation) if spec.gated else None
        self.down_proj = build_linear(spec.down_proj, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., d_model)
        if self.gate_proj is not None:
            h = self.act(self.gate_proj(x)) * self.up_proj(x)  # (..., d_ff)
        else:
            h = self.act(self.up_proj(x))
        return self.down_proj(F.dropout(h, self.p, self.training))
