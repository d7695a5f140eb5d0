"""Torch modules of the ResNet specs: one residual block (main path + optional downsample, then
ReLU) and the whole network (stem, stages.N, head)."""
from __future__ import annotations

import torch
from torch import nn

from layerwise.build.init import init_weight


class ResBlockModule(nn.Module):
    def __init__(self, children: dict[str, nn.Module], main: list[str]):
        super().__init__()
        for name, module in children.items():
            self.add_module(name, module)
        self.main = main
        for name in main:  # every conv here is followed (after its BN) by a ReLU
            if isinstance(children[name], nn.Conv2d):
                init_weight(children[name], "auto", "relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c_in, H, W) -> (B, c_out, H/s, W/s)
        h = x
        for name in self.main:
            h = getattr(self, name)(h)
        skip = self.downsample(x) if hasattr(self, "downsample") else x
        return self.relu(h + skip)


class ResNetModule(nn.Module):
    def __init__(self, children: dict[str, nn.Module]):
        super().__init__()
        self.stem = children["stem"]
        self.stages = nn.Sequential(*[m for name, m in children.items() if name.startswith("stages.")])
        self.head = children["head"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, n_classes)
        return self.head(self.stages(self.stem(x)))
