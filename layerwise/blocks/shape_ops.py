"""Blocks that move or mask values without learning anything: flatten, dropout."""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.spec.base import Block, Shape, register
from layerwise.spec.counts import FlopCtx, Flops
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod


@register("flatten")
@dataclass(frozen=True, kw_only=True)
class Flatten(Block):
    """(B, d1, ..., dn) -> (B, d1 * ... * dn) from `start_dim` on (a view: no FLOPs)."""

    start_dim: int = 1  # >= 1: dim 0 is the batch and is never merged

    def __post_init__(self):
        self._positive("start_dim")

    def out_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) <= self.start_dim:
            raise SpecError(
                f"flatten.start_dim {self.start_dim} needs an input of rank > {self.start_dim}, "
                f"got shape {tuple(in_shape)}"
            )
        return (*in_shape[: self.start_dim], prod(in_shape[self.start_dim :]))

    def build(self):
        from torch import nn

        return nn.Flatten(start_dim=self.start_dim)


@register("dropout")
@dataclass(frozen=True, kw_only=True)
class Dropout(Block):
    """Zeroes each element with probability p in training and scales the rest by 1/(1-p).

    FLOPs (training): 2 per element forward (multiply by the mask, then by the scale; drawing the
    random mask is not counted), 2 per element backward if the input needs grad. p == 0 costs
    nothing: torch returns the input unchanged.
    """

    p: float

    def __post_init__(self):
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)) or not 0.0 <= self.p <= 1.0:
            raise SpecError(f"dropout.p must be a probability in [0, 1], got {self.p!r}")

    def out_shape(self, in_shape: Shape) -> Shape:
        return tuple(in_shape)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        if self.p == 0:
            return Flops()
        n = 2 * prod(in_shape)
        return Flops(fwd_other=n, bwd_other=n if ctx.input_grad else 0)

    def build(self):
        from torch import nn

        return nn.Dropout(p=float(self.p))
