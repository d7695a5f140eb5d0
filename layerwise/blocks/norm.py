"""Normalisation: batchnorm1d/2d (per channel, over batch and positions), layernorm and rmsnorm
(per row, over the last dim).

No matmul FLOPs (FlopCounterMode counts none). Other FLOPs per normalised element, in training
(per-row / per-channel scalars such as the rsqrt are ignored: they are 1/D of the work):
  statistics     mean and variance: 3 (add to the sum, square, add to the sum of squares)
                 rmsnorm: 2 (square, add)
  normalise      2 (subtract the mean, multiply by rstd); rmsnorm 1 (multiply by rrms)
  affine         1 for the weight, 1 for the bias
Backward, per element:
  grad_input     if the input needs grad: 6 (two reductions of g*w and g*w*x_hat, then combine);
                 rmsnorm 5 (one reduction, then combine)
  grad_weight    if trainable: 2 (g * x_hat, summed); grad_bias: 1 (sum)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from layerwise.spec.base import Block, Shape, expect_last, expect_rank, register
from layerwise.spec.counts import FlopCtx, Flops, Params
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod


def _norm_flops(elements: int, ctx: FlopCtx, *, stats: int, normalise: int, grad_in: int,
                weight: bool, bias: bool, trainable: bool) -> Flops:
    fwd = elements * (stats + normalise + int(weight) + int(bias))
    bwd_in = elements * grad_in if ctx.input_grad else 0
    bwd_params = elements * (2 * int(weight) + int(bias)) if trainable else 0
    return Flops(fwd_other=fwd, bwd_other=bwd_in + bwd_params)


def _positive_float(block: Block, name: str) -> None:
    value = getattr(block, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise SpecError(f"{block.type_name}.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class _BatchNormNd(Block):
    counts_in_depth = False  # scales and shifts only (see Block.counts_in_depth)
    nd: ClassVar[int] = 0

    n_features: int  # channels (dim 1)
    eps: float = 1e-5
    momentum: float | None = 0.1  # running-stat update rate; None: cumulative average
    affine: bool = True  # learn a per-channel weight and bias
    trainable: bool = True

    def __post_init__(self):
        self._positive("n_features")
        _positive_float(self, "eps")
        m = self.momentum
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m <= 1):
            raise SpecError(f"{self.type_name}.momentum must be in [0, 1] or null, got {m!r}")

    def out_shape(self, in_shape: Shape) -> Shape:
        ranks, what = ((2, 3), "(B, C) or (B, C, L)") if self.nd == 1 else ((4,), "(B, C, H, W)")
        expect_rank(self, in_shape, ranks, what)
        if in_shape[1] != self.n_features:
            raise SpecError(
                f"expected dim 1 (channels) {self.n_features}, got {in_shape[1]} (input shape {tuple(in_shape)})"
            )
        return tuple(in_shape)

    def own_params(self) -> Params:
        n = 2 * self.n_features if self.affine else 0
        buffers = 2 * self.n_features + 1  # running_mean, running_var, num_batches_tracked (a scalar)
        return Params(trainable=n, buffers=buffers) if self.trainable else Params(frozen=n, buffers=buffers)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        return _norm_flops(prod(in_shape), ctx, stats=3, normalise=2, grad_in=6, weight=self.affine,
                           bias=self.affine, trainable=self.trainable)

    def build(self):
        from torch import nn

        cls = nn.BatchNorm1d if self.nd == 1 else nn.BatchNorm2d
        module = cls(self.n_features, eps=self.eps, momentum=self.momentum, affine=self.affine)
        module.requires_grad_(self.trainable)
        return module


@register("batchnorm1d")
@dataclass(frozen=True, kw_only=True)
class BatchNorm1d(_BatchNormNd):
    nd: ClassVar[int] = 1


@register("batchnorm2d")
@dataclass(frozen=True, kw_only=True)
class BatchNorm2d(_BatchNormNd):
    nd: ClassVar[int] = 2


@register("layernorm")
@dataclass(frozen=True, kw_only=True)
class LayerNorm(Block):
    counts_in_depth = False  # scales and shifts only (see Block.counts_in_depth)
    d_model: int
    eps: float = 1e-5
    bias: bool = True  # False: weight only (PaLM, OLMo)
    trainable: bool = True

    def __post_init__(self):
        self._positive("d_model")
        _positive_float(self, "eps")

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_last(self, in_shape, self.d_model)
        return tuple(in_shape)

    def own_params(self) -> Params:
        n = self.d_model * (2 if self.bias else 1)
        return Params(trainable=n) if self.trainable else Params(frozen=n)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        return _norm_flops(prod(in_shape), ctx, stats=3, normalise=2, grad_in=6, weight=True,
                           bias=self.bias, trainable=self.trainable)

    def build(self):
        from torch import nn

        module = nn.LayerNorm(self.d_model, eps=self.eps, bias=self.bias)
        module.requires_grad_(self.trainable)
        return module


@register("rmsnorm")
@dataclass(frozen=True, kw_only=True)
class RMSNorm(Block):
    """x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich 2019; LLaMA, T5)."""
    counts_in_depth = False  # scales and shifts only (see Block.counts_in_depth)

    d_model: int
    eps: float = 1e-6
    trainable: bool = True

    def __post_init__(self):
        self._positive("d_model")
        _positive_float(self, "eps")

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_last(self, in_shape, self.d_model)
        return tuple(in_shape)

    def own_params(self) -> Params:
        return Params(trainable=self.d_model) if self.trainable else Params(frozen=self.d_model)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        return _norm_flops(prod(in_shape), ctx, stats=2, normalise=1, grad_in=5, weight=True,
                           bias=False, trainable=self.trainable)

    def build(self):
        from torch import nn

        module = nn.RMSNorm(self.d_model, eps=self.eps)
        module.requires_grad_(self.trainable)
        return module


def check_train_batch(model, in_shape: Shape, flag: str = "--batch") -> None:
    """In training BatchNorm normalises each channel over the batch (and positions); with one value
    per channel there is no variance and torch stops ("Expected more than 1 value per channel").
    Raise WorkloadError naming the block and the fix instead, before anything is built."""
    from layerwise.spec.base import walk
    from layerwise.spec.errors import WorkloadError

    if in_shape[0] != 1 or not _has_batchnorm(model.body, set()):  # only batch 1 can give one value
        return
    for info in walk(model.body, in_shape):
        if isinstance(info.block, _BatchNormNd) and prod(info.in_shape) // info.in_shape[1] == 1:
            raise WorkloadError(f"block {info.path or '(root)'} ({info.block.type_name}): in training BatchNorm needs "
                                f"more than one value per channel, and batch 1 gives it one; use {flag} 2 or more "
                                f"(or --mode infer)")


def _has_batchnorm(block: Block, seen: set) -> bool:
    if id(block) in seen:
        return False
    seen.add(id(block))
    return isinstance(block, _BatchNormNd) or any(_has_batchnorm(c, seen) for _, c in block.child_groups())
