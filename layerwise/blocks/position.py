"""Absolute position encodings added to a (B, S, D) sequence: learned rows or fixed sinusoids.
(Rotary positions live inside attention: see the `rope` block.)"""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.spec.base import Block, Shape, expect_last, expect_rank, register
from layerwise.spec.counts import FlopCtx, Flops, Params
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod


def _check_seq(block: Block, in_shape: Shape) -> None:
    expect_rank(block, in_shape, 3, "(B, S, D)")
    expect_last(block, in_shape, block.d_model)
    if in_shape[1] > block.max_seq:
        raise SpecError(
            f"{block.type_name}: sequence length {in_shape[1]} exceeds max_seq {block.max_seq} "
            f"(input shape {tuple(in_shape)})"
        )


@register("learned_positions")
@dataclass(frozen=True, kw_only=True)
class LearnedPositions(Block):
    """x + weight[:S] (GPT-2, BERT, ViT); weight (max_seq, d_model).

    FLOPs: the add, 1 per element forward. Backward, if trainable: the rows' gradient sums the
    batch, 1 per element; the input's gradient passes through unchanged.
    """

    max_seq: int
    d_model: int
    trainable: bool = True

    def __post_init__(self):
        self._positive("max_seq", "d_model")

    def out_shape(self, in_shape: Shape) -> Shape:
        _check_seq(self, in_shape)
        return tuple(in_shape)

    def own_params(self) -> Params:
        n = self.max_seq * self.d_model
        return Params(trainable=n) if self.trainable else Params(frozen=n)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        n = prod(in_shape)
        return Flops(fwd_other=n, bwd_other=n if self.trainable else 0)

    def build(self):
        from layerwise.build.layers import LearnedPositions as Module

        module = Module(self.max_seq, self.d_model)
        module.requires_grad_(self.trainable)
        return module


@register("sinusoidal_positions")
@dataclass(frozen=True, kw_only=True)
class SinusoidalPositions(Block):
    """x + the fixed sin/cos table of Vaswani et al. 2017 (section 3.5); no parameters, no buffers.

    FLOPs: the add, 1 per element, plus building the (S, D) table each call, 1 per entry (a sin or
    cos; the angle products are folded in). Backward passes the gradient through (0).
    """

    max_seq: int
    d_model: int  # even: sin and cos columns come in pairs

    def __post_init__(self):
        self._positive("max_seq", "d_model")
        if self.d_model % 2:
            raise SpecError(f"sinusoidal_positions.d_model must be even (sin/cos pairs), got {self.d_model}")

    def out_shape(self, in_shape: Shape) -> Shape:
        _check_seq(self, in_shape)
        return tuple(in_shape)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        return Flops(fwd_other=prod(in_shape) + in_shape[1] * in_shape[2])

    def build(self):
        from layerwise.build.layers import SinusoidalPositions as Module

        return Module(self.max_seq, self.d_model)
