"""Convolutions: conv1d over (B, C, L), conv2d over (B, C, H, W).

FLOPs are what `FlopCounterMode` counts (torch/utils/flop_counter.py, `conv_flop_count` and
`conv_backward_flop`), with O = output positions and K = kernel positions:
  forward     2 * B * c_out * (c_in / groups) * K * O
  grad_input  the same (a transposed conv of grad_out with the weight), only if the input needs grad
  grad_weight 2 * B * c_out * c_in * K * O, only if trainable. torch's formula ignores `groups` here,
              so it reports `groups` x the forward (an overcount of the real work for grouped and
              depthwise convs); we match the counter, which is our ground truth.
The bias add is not a matmul: B * c_out * O FLOPs forward, the same for grad_bias (a sum).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from layerwise.blocks._sizes import check_window, normalize_lists, sizes, window_out
from layerwise.spec.base import Block, Shape, expect_rank, register
from layerwise.spec.counts import FlopCtx, Flops, Params
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod

INITS = ("auto", "xavier", "kaiming", "normal", "torch")
_SIZE_FIELDS = ("kernel", "stride", "padding", "dilation")


@dataclass(frozen=True, kw_only=True)
class _ConvNd(Block):
    nd: ClassVar[int] = 0

    c_in: int
    c_out: int
    kernel: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: int | tuple[int, ...] = 0  # zeros on each side
    dilation: int | tuple[int, ...] = 1
    groups: int = 1  # c_in and c_out split into `groups` independent convs (c_in: depthwise)
    bias: bool = True
    init: str = "auto"  # "auto": by the activation that follows (Kaiming for ReLU-family, else Xavier)
    trainable: bool = True

    def __post_init__(self):
        normalize_lists(self, *_SIZE_FIELDS)
        self._positive("c_in", "c_out", "groups")
        for name in _SIZE_FIELDS:
            sizes(self, name, self.nd, minimum=0 if name == "padding" else 1)
        for name in ("c_in", "c_out"):
            if getattr(self, name) % self.groups:
                raise SpecError(
                    f"{self.type_name}.{name} ({getattr(self, name)}) must be divisible by groups ({self.groups})"
                )
        self._one_of("init", INITS)

    def _sizes(self):
        return tuple(sizes(self, name, self.nd, minimum=0 if name == "padding" else 1) for name in _SIZE_FIELDS)

    def out_shape(self, in_shape: Shape) -> Shape:
        what = "(B, C, L)" if self.nd == 1 else "(B, C, H, W)"
        expect_rank(self, in_shape, self.nd + 2, what)
        if in_shape[1] != self.c_in:
            raise SpecError(f"expected dim 1 (channels) {self.c_in}, got {in_shape[1]} (input shape {tuple(in_shape)})")
        kernel, stride, padding, dilation = self._sizes()
        spatial = in_shape[2:]
        check_window(self, in_shape, spatial, kernel, padding, dilation)
        out = tuple(window_out(*args) for args in zip(spatial, kernel, stride, padding, dilation))
        return (in_shape[0], self.c_out, *out)

    def own_params(self) -> Params:
        kernel = self._sizes()[0]
        n = self.c_out * (self.c_in // self.groups) * prod(kernel) + (self.c_out if self.bias else 0)
        return Params(trainable=n) if self.trainable else Params(frozen=n)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        out = self.out_shape(in_shape)
        batch, positions, taps = in_shape[0], prod(out[2:]), prod(self._sizes()[0])
        fwd = 2 * batch * self.c_out * (self.c_in // self.groups) * taps * positions
        grad_input = fwd if ctx.input_grad else 0
        grad_weight = fwd * self.groups if self.trainable else 0  # see the module docstring
        bias = batch * self.c_out * positions if self.bias else 0
        bwd_bias = bias if self.trainable else 0
        return Flops(fwd_matmul=fwd, fwd_other=bias, bwd_matmul=grad_input + grad_weight, bwd_other=bwd_bias)

    def build(self):
        from torch import nn

        kernel, stride, padding, dilation = self._sizes()
        cls = nn.Conv1d if self.nd == 1 else nn.Conv2d
        module = cls(
            self.c_in, self.c_out, kernel, stride=stride, padding=padding, dilation=dilation,
            groups=self.groups, bias=self.bias,
        )
        module.requires_grad_(self.trainable)
        return module


@register("conv1d")
@dataclass(frozen=True, kw_only=True)
class Conv1d(_ConvNd):
    nd: ClassVar[int] = 1


@register("conv2d")
@dataclass(frozen=True, kw_only=True)
class Conv2d(_ConvNd):
    nd: ClassVar[int] = 2
