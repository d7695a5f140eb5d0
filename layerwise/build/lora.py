"""The LoRA module built from a `lora` spec: a frozen base Linear plus a trainable low-rank update."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from layerwise.build.init import init_weight


class LoRAModule(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.base = spec.base.build()  # requires_grad follows base.trainable (False after apply_lora)
        init_weight(self.base, spec.base.init, None)
        self.lora_a = spec.lora_a.build()
        self.lora_b = spec.lora_b.build()
        self.scaling = float(spec.scaling)
        self.p = float(spec.dropout)
        if spec.init_a == "gaussian":  # peft's init_lora_weights="gaussian"
            nn.init.normal_(self.lora_a.weight, std=1.0 / spec.rank)
        else:  # peft's default: nn.Linear's own kaiming_uniform(a=sqrt 5)
            nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)  # the update starts at 0: output == base output

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., d_in) -> (..., d_out)
        update = self.lora_b(self.lora_a(F.dropout(x, self.p, self.training)))
        return self.base(x) + update * self.scaling
