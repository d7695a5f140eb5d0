"""Linear: y = x W^T + b over the last dimension."""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.spec.base import Block, Shape, expect_last, register
from layerwise.spec.counts import FlopCtx, Flops, Params
from layerwise.spec.shapes import prod

INITS = ("auto", "xavier", "kaiming", "normal", "torch")


@register("linear")
@dataclass(frozen=True, kw_only=True)
class Linear(Block):
    d_in: int
    d_out: int
    bias: bool = True
    init: str = "auto"  # "auto": by the activation that follows (Xavier, or Kaiming for ReLU-family)
    trainable: bool = True  # False: frozen (fine-tuning, LoRA base); set by freeze(), not by hand

    def __post_init__(self):
        self._positive("d_in", "d_out")
        self._one_of("init", INITS)

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_last(self, in_shape, self.d_in)
        return (*in_shape[:-1], self.d_out)

    def own_params(self) -> Params:
        n = self.d_in * self.d_out + (self.d_out if self.bias else 0)
        return Params(trainable=n) if self.trainable else Params(frozen=n)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        rows = prod(in_shape[:-1])
        mm = 2 * rows * self.d_in * self.d_out  # (rows, d_in) @ (d_in, d_out)
        bias = rows * self.d_out if self.bias else 0  # addmm's bias add: not counted as matmul
        bwd_mm = (mm if ctx.input_grad else 0) + (mm if self.trainable else 0)  # grad_input, grad_weight
        bwd_bias = bias if (self.bias and self.trainable) else 0  # grad_bias = sum over rows
        return Flops(fwd_matmul=mm, fwd_other=bias, bwd_matmul=bwd_mm, bwd_other=bwd_bias)

    def build(self):
        from torch import nn

        module = nn.Linear(self.d_in, self.d_out, bias=self.bias)
        module.requires_grad_(self.trainable)
        return module
