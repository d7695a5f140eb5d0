"""Pooling: max and average over sliding windows, adaptive average to a fixed output size.

No parameters, no matmul FLOPs (FlopCounterMode counts none). Other FLOPs, per output element
with a window of K input elements:
  max      forward K (comparisons); backward 1 (routes the gradient to the argmax)
  average  forward K (K-1 adds and a divide); backward K (divide and spread over the window)
Backward FLOPs only when the input needs grad (there is nothing else to differentiate).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from layerwise.blocks._sizes import adaptive_bins, check_window, normalize_lists, sizes, window_out
from layerwise.spec.base import Block, Shape, expect_rank, register
from layerwise.spec.counts import FlopCtx, Flops
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod


def _spatial_what(nd: int) -> str:
    return "(B, C, L)" if nd == 1 else "(B, C, H, W)"


@dataclass(frozen=True, kw_only=True)
class _PoolNd(Block):
    nd: ClassVar[int] = 0
    op: ClassVar[str] = ""

    kernel: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None = None  # None: = kernel (non-overlapping windows)
    padding: int | tuple[int, ...] = 0

    def __post_init__(self):
        normalize_lists(self, "kernel", "stride", "padding")
        kernel, _, padding = self._sizes()
        # torch: "pad should be at most half of (effective) kernel size"
        for k, p in zip(kernel, padding):
            if p > k // 2:
                raise SpecError(f"{self.type_name}.padding ({p}) must be at most half the kernel ({k})")

    def _sizes(self):
        kernel = sizes(self, "kernel", self.nd)
        stride = kernel if self.stride is None else sizes(self, "stride", self.nd)
        return kernel, stride, sizes(self, "padding", self.nd, minimum=0)

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_rank(self, in_shape, self.nd + 2, _spatial_what(self.nd))
        kernel, stride, padding = self._sizes()
        spatial = in_shape[2:]
        check_window(self, in_shape, spatial, kernel, padding, (1,) * self.nd)
        out = tuple(window_out(*args) for args in zip(spatial, kernel, stride, padding))
        return (*in_shape[:2], *out)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        outputs = prod(self.out_shape(in_shape))
        window = prod(self._sizes()[0])
        fwd = outputs * window
        bwd = (outputs if self.op == "max" else outputs * window) if ctx.input_grad else 0
        return Flops(fwd_other=fwd, bwd_other=bwd)

    def build(self):
        from torch import nn

        kernel, stride, padding = self._sizes()
        cls = {
            ("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d, ("avg", 1): nn.AvgPool1d, ("avg", 2): nn.AvgPool2d,
        }[(self.op, self.nd)]
        return cls(kernel, stride=stride, padding=padding)


@register("maxpool1d")
@dataclass(frozen=True, kw_only=True)
class MaxPool1d(_PoolNd):
    nd: ClassVar[int] = 1
    op: ClassVar[str] = "max"


@register("maxpool2d")
@dataclass(frozen=True, kw_only=True)
class MaxPool2d(_PoolNd):
    nd: ClassVar[int] = 2
    op: ClassVar[str] = "max"


@register("avgpool1d")
@dataclass(frozen=True, kw_only=True)
class AvgPool1d(_PoolNd):
    nd: ClassVar[int] = 1
    op: ClassVar[str] = "avg"


@register("avgpool2d")
@dataclass(frozen=True, kw_only=True)
class AvgPool2d(_PoolNd):
    nd: ClassVar[int] = 2
    op: ClassVar[str] = "avg"


@dataclass(frozen=True, kw_only=True)
class _AdaptiveAvgPoolNd(Block):
    """Average over bins chosen so the output has exactly `output_size` positions per dim
    (global average pooling: output_size=1)."""

    nd: ClassVar[int] = 0

    output_size: int | tuple[int, ...]

    def __post_init__(self):
        normalize_lists(self, "output_size")
        sizes(self, "output_size", self.nd)

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_rank(self, in_shape, self.nd + 2, _spatial_what(self.nd))
        return (*in_shape[:2], *sizes(self, "output_size", self.nd))

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        # Each output sums its bin and divides: one FLOP per bin element, as for avgpool.
        out = sizes(self, "output_size", self.nd)
        per_channel = prod(adaptive_bins(length, o) for length, o in zip(in_shape[2:], out))
        fwd = prod(in_shape[:2]) * per_channel
        return Flops(fwd_other=fwd, bwd_other=fwd if ctx.input_grad else 0)

    def build(self):
        from torch import nn

        out = sizes(self, "output_size", self.nd)
        return nn.AdaptiveAvgPool1d(out) if self.nd == 1 else nn.AdaptiveAvgPool2d(out)


@register("adaptive_avgpool1d")
@dataclass(frozen=True, kw_only=True)
class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    nd: ClassVar[int] = 1


@register("adaptive_avgpool2d")
@dataclass(frozen=True, kw_only=True)
class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    nd: ClassVar[int] = 2
