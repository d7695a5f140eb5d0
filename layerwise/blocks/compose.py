"""Composition: sequential stacks, repeats of one block, residual branches.

Paths: a Sequential's children are named by position ("0", "1", ...) or by `names`; a Repeat's
copies are "0".."n-1"; a Residual's branch is "branch". Built modules use the same names.
"""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.spec.base import Block, Names, Shape, chain_trace, child_out, register
from layerwise.spec.counts import FlopCtx, Flops
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod


@register("sequential")
@dataclass(frozen=True, kw_only=True)
class Sequential(Block):
    layers: tuple[Block, ...]
    names: tuple[str, ...] = ()  # optional child names (default: positions "0", "1", ...)

    def __post_init__(self):
        if not self.layers:
            raise SpecError("sequential.layers must hold at least one block")
        if self.names and len(self.names) != len(self.layers):
            raise SpecError(f"sequential.names has {len(self.names)} names for {len(self.layers)} layers")
        if len(set(self.names)) != len(self.names):
            raise SpecError(f"sequential.names must be unique, got {list(self.names)}")
        bad = [n for n in self.names if not n or "." in n]
        if bad:
            raise SpecError(f"sequential.names must be non-empty and contain no '.', got {bad}")

    def _names(self) -> tuple[str, ...]:
        return self.names or tuple(str(i) for i in range(len(self.layers)))

    def children(self):
        return tuple(zip(self._names(), self.layers))

    def trace(self, in_shape: Shape):
        return chain_trace(self.children(), in_shape)

    def build(self):
        from torch import nn

        from layerwise.build.init import init_sequence

        module = nn.Sequential()
        for name, layer in self.children():
            module.add_module(name, layer.build())
        init_sequence(self.layers, list(module))
        return module


@register("repeat")
@dataclass(frozen=True, kw_only=True)
class Repeat(Block):
    """`n_layers` independent copies of one block (a transformer's or a ResNet stage's stack).

    With `other`, two kinds alternate: copy i is `block` when (i + 1) % every == 0, else `other`
    (Gemma 2: every 2nd layer global attention, the rest sliding-window; Gemma 3: every 6th).
    With `first`, the first `n_first` copies are that block (DeepSeek's first_k_dense_replace dense
    layers, then MoE layers). The copies keep one numbering ("0".."n_layers-1", as transformers'
    `layers.i`), and every reading that treats a Repeat's copies as the layer stack (checkpointing,
    FSDP units, KV caches) sees all of them."""

    block: Block
    n_layers: int
    other: Block | None = None  # the block of the layers between every `every`-th one
    every: int = 0  # with `other`: copy i is `block` iff (i + 1) % every == 0
    first: Block | None = None  # the first n_first copies are this block instead
    n_first: int = 0

    def __post_init__(self):
        self._positive("n_layers")
        self._non_negative("every", "n_first")
        if (self.other is None) != (self.every == 0):
            raise SpecError("repeat.other and repeat.every go together (every >= 1 with another block)")
        if self.n_first > self.n_layers:
            raise SpecError(f"repeat.n_first ({self.n_first}) exceeds n_layers ({self.n_layers})")
        if (self.first is None) != (self.n_first == 0):
            raise SpecError("repeat.first and repeat.n_first > 0 go together")

    def block_at(self, i: int) -> Block:
        if i < self.n_first:
            return self.first
        if self.other is None or (i + 1) % self.every == 0:
            return self.block
        return self.other

    def children(self):
        return tuple((str(i), self.block_at(i)) for i in range(self.n_layers))

    def child_groups(self):
        if self.other is not None:
            return super().child_groups()
        head = ((Names("", 0, self.n_first), self.first),) if self.n_first else ()
        rest = ((Names("", self.n_first, self.n_layers), self.block),) if self.n_layers > self.n_first else ()
        return head + rest

    def runs(self, in_shape: Shape):
        """Copies are traced one by one only until one keeps its input shape: from there on every
        copy of the same block sees the same shape, so the rest is one run (n_layers = 10**6
        costs one layer)."""
        if self.other is not None:
            return super().runs(in_shape)
        out, shape = [], tuple(in_shape)
        for lo, hi, block in ((0, self.n_first, self.first), (self.n_first, self.n_layers, self.block)):
            for i in range(lo, hi):
                nxt = child_out(str(i), block, shape)
                if tuple(nxt) == shape:
                    out.append((Names("", i, hi), block, shape))
                    break
                out.append(((str(i),), block, shape))
                shape = tuple(nxt)
        return tuple(out)

    def trace(self, in_shape: Shape):
        if self.other is not None:  # two kinds of layers: each must keep the shape
            shape = tuple(in_shape)
            for name, child in (("0", self.block_at(0)), (str(self.every - 1), self.block)):
                if tuple(child_out(name, child, shape)) != shape:
                    raise SpecError(f"repeat with alternating blocks: {name} must keep the shape {shape}")
            return tuple((name, child, shape) for name, child in self.children())
        return tuple((name, child, shape) for names, child, shape in self.runs(in_shape) for name in names)

    def build(self):
        from torch import nn

        return nn.Sequential(*[self.block_at(i).build() for i in range(self.n_layers)])


@register("residual")
@dataclass(frozen=True, kw_only=True)
class Residual(Block):
    """y = x + branch(x); the branch must keep the shape."""

    branch: Block

    def children(self):
        return (("branch", self.branch),)

    def trace(self, in_shape: Shape):
        return (("branch", self.branch, tuple(in_shape)),)

    def out_shape(self, in_shape: Shape) -> Shape:
        out = child_out("branch", self.branch, in_shape)
        if tuple(out) != tuple(in_shape):
            raise SpecError(f"residual branch must keep the shape: input {tuple(in_shape)}, branch output {out}")
        return tuple(in_shape)

    def depth(self) -> int:
        return self.branch.depth()  # the skip path has depth 0; the longest path is the branch

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        return Flops(fwd_other=prod(in_shape))  # the add; its backward only passes the gradient on

    def build(self):
        from layerwise.build.modules import ResidualModule

        return ResidualModule(self.branch.build())
