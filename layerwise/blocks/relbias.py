"""T5's relative position bias (Raffel et al. 2019, arXiv 1910.10683 section 2.1; HF T5Attention.
compute_bias): a (n_buckets, n_heads) table; each (query i, key j) pair reads the row of the bucket
of j - i (exact for small distances, logarithmic up to max_distance; bidirectional in the encoder,
only j <= i in the decoder). One table per stack, computed once per call and added to every
layer's attention scores. Input shape (S, Sk) (query and key lengths), output (1, n_heads, S, Sk).

FLOPs: the lookup computes nothing; backward (if trainable) scatters S*Sk*n_heads gradients into
the table (index_put accumulate, 1 per element)."""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.spec.base import Block, Shape, register
from layerwise.spec.counts import FlopCtx, Flops, Params
from layerwise.spec.errors import SpecError


@register("relative_position_bias")
@dataclass(frozen=True, kw_only=True)
class RelativePositionBias(Block):
    n_buckets: int
    n_heads: int
    max_distance: int = 128
    bidirectional: bool = True  # encoder: keys on both sides; decoder: only earlier keys
    trainable: bool = True

    def __post_init__(self):
        self._positive("n_buckets", "n_heads", "max_distance")
        if self.n_buckets < 4:
            raise SpecError(f"relative_position_bias.n_buckets must be at least 4, got {self.n_buckets}")

    def own_params(self) -> Params:
        n = self.n_buckets * self.n_heads
        return Params(trainable=n) if self.trainable else Params(frozen=n)

    def out_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 2:
            raise SpecError(f"relative_position_bias expects (query length, key length), got {tuple(in_shape)}")
        return (1, self.n_heads, *in_shape)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        return Flops(bwd_other=in_shape[0] * in_shape[1] * self.n_heads if self.trainable else 0)

    def build(self):
        from layerwise.build.relbias import RelativePositionBiasModule

        module = RelativePositionBiasModule(self.n_buckets, self.n_heads, self.max_distance, self.bidirectional)
        module.requires_grad_(self.trainable)
        return module
