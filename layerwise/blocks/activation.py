"""Elementwise activations (and softmax over the last dim). No parameters, no matmul FLOPs."""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.spec.base import Block, Shape, register
from layerwise.spec.counts import FlopCtx, Flops
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod

# kind -> (forward, backward) FLOPs per element; exp, erf, tanh count as 1 each.
# Backward only if the input needs grad.
COSTS = {
    "relu": (1, 1),  # max(x, 0); grad: mask
    "leaky_relu": (2, 2),  # compare, multiply; grad: compare, multiply
    "gelu": (5, 8),  # x * 0.5 * (1 + erf(x / sqrt 2)); grad: 0.5 (1 + erf) + x * pdf(x)
    "gelu_tanh": (9, 12),  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); grad through tanh
    "silu": (5, 5),  # x * sigmoid(x); grad: s (1 + x (1 - s))
    "quick_gelu": (6, 6),  # x * sigmoid(1.702 x) (CLIP): scale, sigmoid, multiply; grad: the product rule
    "sigmoid": (4, 3),  # 1 / (1 + exp(-x)); grad: g * s * (1 - s)
    "tanh": (1, 3),  # grad: g * (1 - y^2)
    "softmax": (5, 4),  # max, subtract, exp, sum, divide; grad: y * (g - sum(g * y))
}
KINDS = tuple(COSTS)


@register("activation")
@dataclass(frozen=True, kw_only=True)
class Activation(Block):
    kind: str
    negative_slope: float = 0.01  # leaky_relu only

    def __post_init__(self):
        self._one_of("kind", KINDS)
        s = self.negative_slope
        if isinstance(s, bool) or not isinstance(s, (int, float)):
            raise SpecError(f"activation.negative_slope must be a number, got {s!r}")

    def out_shape(self, in_shape: Shape) -> Shape:
        if self.kind == "softmax" and not in_shape:
            raise SpecError("activation softmax needs at least one dim, got shape ()")
        return tuple(in_shape)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        fwd, bwd = COSTS[self.kind]
        n = prod(in_shape)
        return Flops(fwd_other=fwd * n, bwd_other=bwd * n if ctx.input_grad else 0)

    def build(self):
        from torch import nn

        if self.kind == "leaky_relu":
            return nn.LeakyReLU(float(self.negative_slope))
        if self.kind == "softmax":
            return nn.Softmax(dim=-1)
        if self.kind == "quick_gelu":
            from layerwise.build.ffn import QuickGELU

            return QuickGELU()
        return {
            "relu": nn.ReLU,
            "gelu": nn.GELU,
            "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
            "silu": nn.SiLU,
            "sigmoid": nn.Sigmoid,
            "tanh": nn.Tanh,
        }[self.kind]()
