"""A model of your own, in plain PyTorch: what `layerwise measure FILE.py:factory` reads.

    layerwise measure examples/my_model.py:build --input 3x224x224
    layerwise summary examples/my_model.py:build --input 3x224x224
    layerwise flops   examples/my_model.py:build --input 3x224x224 --batch 32

A small ConvNeXt-style classifier (Liu et al. 2022, "A ConvNet for the 2020s": a 4x4 patchify
stem, blocks of depthwise 7x7 conv -> LayerNorm -> 4x MLP with a residual, a 2x2 downsampling conv
between stages). No torchvision: layerwise imports only this file, and only because you named it.
"""
import torch
from torch import nn


class ChannelsLastNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x):  # (B, C, H, W)
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)  # spatial mixing
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))  # channel mixing

    def forward(self, x):  # (B, C, H, W)
        h = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, C): Linear acts on the last dim
        return x + self.mlp(self.norm(h)).permute(0, 3, 1, 2)


class MyNet(nn.Module):
    def __init__(self, dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), n_classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4), ChannelsLastNorm(dims[0]))
        stages = []
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            down = [] if i == 0 else [ChannelsLastNorm(dims[i - 1]), nn.Conv2d(dims[i - 1], dim, 2, stride=2)]
            stages.append(nn.Sequential(*down, *[Block(dim) for _ in range(depth)]))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, n_classes)
        h = self.stages(self.stem(x))
        return self.head(self.norm(h.mean(dim=(2, 3))))


def build() -> nn.Module:
    return MyNet()
