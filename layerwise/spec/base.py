"""The block spec protocol: a frozen value that knows its shapes, parameters, FLOPs and module.

Shapes always include the batch dimension: tokens (B, S), sequences (B, S, D), images (B, C, H, W).
A leaf block overrides `out_shape`, `own_params`, `own_flops` and `build`. A composite overrides
`trace` (its children with the shape each one receives, in execution order) and `out_shape`; its
parameters and FLOPs are the sum of its children's plus its own (a CLS token, a residual add).
Nothing here imports torch: `build()` imports it locally, so the cost reading never loads it.
"""
from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import ClassVar, Iterator

from layerwise.spec.counts import FlopCtx, Flops, Params
from layerwise.spec.errors import SpecError
from layerwise.spec.fieldtypes import hints, mismatch

Shape = tuple[int, ...]

REGISTRY: dict[str, type["Block"]] = {}

# ---- memoisation ----------------------------------------------------------------------------------
# Specs are frozen values, so a reading of one (its params, depth, output shape, FLOPs for an input
# shape and context) is a function of the value: computed once per distinct (block, arguments) and
# reused. A model of 80 equal layers, or a planner trying thousands of set-ups, costs one layer's work.
_MEMO: dict = {}
_MEMO_LIMIT = 200_000  # entries; cleared when full (a long fuzz run must not grow without bound)
# and traces (a ResNet's derived blocks made once per distinct block and shape). Not `children`:
# tree transforms (spec/transform.py) match children to fields by identity.
MEMOISED = ("params", "active_params", "depth", "out_shape", "flops", "trace", "runs")


def memoised(fn):
    """`fn(self, *args)` cached by (fn, self, args); unhashable arguments skip the cache."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kw):
        try:
            key = (fn, self, args, tuple(sorted(kw.items())))
            hit = _MEMO.get(key, _MISS)
        except TypeError:  # a list or dict inside a spec built from Python: computed, not cached
            return fn(self, *args, **kw)
        if hit is _MISS:
            hit = fn(self, *args, **kw)
            if len(_MEMO) >= _MEMO_LIMIT:
                _MEMO.clear()
            _MEMO[key] = hit
        return hit

    wrapper.memoised = True
    return wrapper


_MISS = object()


def _cached_hash(cls) -> None:
    """A frozen dataclass rehashes its whole subtree on every hash; keep the first result."""
    plain = cls.__dict__.get("__hash__")
    if plain is None or getattr(plain, "cached", False):
        return

    def __hash__(self):
        h = self.__dict__.get("_hash")
        if h is None:
            h = plain(self)
            object.__setattr__(self, "_hash", h)
        return h

    __hash__.cached = True
    cls.__hash__ = __hash__


def _checked_init(cls) -> None:
    """Every keyword given to the constructor is checked against its field's declared type first
    (spec/fieldtypes.py), whoever builds the block: a spec file, an HF config, a preset override.
    Lists become tuples, so the frozen spec stays hashable and equal to what a spec file loads."""
    init = cls.__init__

    def __init__(self, **kw):
        for name, value in kw.items():
            if isinstance(value, list) and "tuple" in str(hints(cls).get(name, "")):
                kw[name] = value = tuple(value)
            problem = mismatch(cls, name, value)
            if problem:
                raise SpecError(problem)
        init(self, **kw)

    __init__.__wrapped__ = init
    cls.__init__ = __init__


def register(type_name: str):
    """Class decorator: make a block type reachable by name from YAML, JSON and the CLI, check
    its constructor's keywords against the field types, memoise its readings (MEMOISED) and hash."""

    def deco(cls):
        if type_name in REGISTRY:
            raise RuntimeError(f"block type {type_name!r} registered twice")
        cls.type_name = type_name
        REGISTRY[type_name] = cls
        for name in MEMOISED:  # defined here or in an unregistered base (ResNet's _ResBlock)
            fn = getattr(cls, name, None)
            if callable(fn) and not getattr(fn, "memoised", False):
                setattr(cls, name, memoised(fn))
        _cached_hash(cls)
        _checked_init(cls)
        return cls

    return deco


class Names(Sequence):
    """The names `prefix + str(i)` for i in [start, stop), without listing them (a Repeat of a
    million layers names its copies "0".."999999")."""

    def __init__(self, prefix: str, start: int, stop: int):
        self.prefix, self.start, self.stop = prefix, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i):
        if isinstance(i, slice):
            r = range(self.start, self.stop)[i]
            if r.step != 1:
                return tuple(f"{self.prefix}{k}" for k in r)
            return Names(self.prefix, r.start, r.stop)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        return f"{self.prefix}{self.start + i}"


def collapse(items) -> tuple:
    """Consecutive equal entries (a child and, for runs, its input shape) merged: each item is
    (name, *rest) and comes out as (names, *rest), `names` holding every merged copy's name."""
    out: list = []
    for name, *rest in items:
        rest = tuple(rest)
        if out and out[-1][1] == rest:  # tuples compare items by identity first
            out[-1][0].append(name)
        else:
            out.append(([name], rest))
    return tuple((tuple(names), *rest) for names, rest in out)


@memoised
def leaf_count(block: "Block") -> int:
    """Leaf blocks in the tree, every copy counted (80 layers of 12 leaves: 960), in time linear in
    the distinct blocks: how many moments a per-op reading (the memory timeline) would list."""
    groups = block.child_groups()
    return sum(len(names) * leaf_count(child) for names, child in groups) if groups else 1


def block_class(type_name: str) -> type["Block"]:
    """The block class registered as `type_name`, or a SpecError with a 'did you mean'."""
    import layerwise.blocks  # noqa: F401  (registers every block type)

    if type_name not in REGISTRY:
        close = difflib.get_close_matches(str(type_name), sorted(REGISTRY), n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise SpecError(f"unknown block type {type_name!r}{hint}")
    return REGISTRY[type_name]


@dataclass(frozen=True, kw_only=True)
class Block:
    """Base of every block spec. Subclasses are frozen keyword-only dataclasses."""

    type_name: ClassVar[str] = "block"
    # Normalisation layers only scale and shift; like the "18" in ResNet-18 (17 convs + 1 fc), depth
    # counts the layers that mix features, so norms set this False.
    counts_in_depth: ClassVar[bool] = True

    # ---- shapes -----------------------------------------------------------------------------
    @memoised
    def out_shape(self, in_shape: Shape) -> Shape:
        """Output shape for `in_shape`; raises SpecError naming both shapes on a mismatch."""
        shape = in_shape
        for names, child, child_in in self.runs(in_shape):
            shape = child_out(names[0], child, child_in)
        return shape

    @memoised
    def runs(self, in_shape: Shape) -> tuple[tuple[Sequence[str], "Block", Shape], ...]:
        """`trace` with consecutive equal copies (same child, same input shape) merged into one
        entry (names, child, child's input shape): the readings compute a copy once and multiply.
        A merged run's copies each keep the shape (the first copy's output is the next's input)."""
        return collapse(self.trace(in_shape))

    @memoised
    def trace(self, in_shape: Shape) -> tuple[tuple[str, "Block", Shape], ...]:
        """Composites: (name, child, child's input shape) in execution order. Leaves: ()."""
        return ()

    def children(self) -> tuple[tuple[str, "Block"], ...]:
        """Named child specs, shape-independent. Default: every Block-valued field."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Block):
                out.append((f.name, value))
            elif isinstance(value, tuple) and value and all(isinstance(v, Block) for v in value):
                out.extend((f"{f.name}.{i}", v) for i, v in enumerate(value))
        return tuple(out)

    def child_groups(self) -> tuple[tuple[Sequence[str], "Block"], ...]:
        """`children` with consecutive equal children merged: (names, child)."""
        return collapse(self.children())

    # ---- parameters -------------------------------------------------------------------------
    def own_params(self) -> Params:
        """Parameters and buffers held by this block itself, not by its children."""
        return Params()

    @memoised
    def params(self) -> Params:
        total = self.own_params()
        for names, child in self.child_groups():
            total = total + child.params() * len(names)
        return total

    @memoised
    def active_params(self) -> Params:
        """Parameters used per token (MoE: only top_k experts). Equal to params() elsewhere."""
        total = self.own_params()
        for names, child in self.child_groups():
            total = total + child.active_params() * len(names)
        return total

    @memoised
    def depth(self) -> int:
        """Parameterised layers (norms excluded) on the longest input-to-output path. Children in
        sequence add; composites with parallel branches override this and take the longest."""
        own = 1 if self.counts_in_depth and self.own_params().total > 0 else 0
        return own + sum(c.depth() * len(names) for names, c in self.child_groups())

    # ---- FLOPs ------------------------------------------------------------------------------
    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        """FLOPs of this block's own work (a leaf's op, a composite's residual add)."""
        return Flops()

    @memoised
    def flops(self, in_shape: Shape, ctx: FlopCtx = FlopCtx()) -> Flops:
        """Forward and backward FLOPs for one call on `in_shape`.

        `ctx.input_grad`: whether the input requires grad (backward then computes grad_input too).
        A child's input requires grad if ours does or an earlier child has trainable parameters.
        A run of equal copies is counted as its first copy plus the others times their number.
        """
        total = self.own_flops(in_shape, ctx)
        grad = ctx.input_grad
        for names, child, child_in in self.runs(in_shape):
            first = child.flops(child_in, replace(ctx, input_grad=grad))
            after = grad or child.params().trainable > 0
            total = total + first
            if len(names) > 1:
                rest = first if after == grad else child.flops(child_in, replace(ctx, input_grad=after))
                total = total + rest * (len(names) - 1)
            grad = after
        return total

    # ---- build ------------------------------------------------------------------------------
    def build(self):
        """The torch.nn.Module; its parameter names follow this spec's child paths."""
        raise NotImplementedError(f"{type(self).__name__}.build")

    # ---- helpers for subclasses -------------------------------------------------------------
    def _positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SpecError(f"{self.type_name}.{name} must be a positive integer, got {value!r}")

    def _non_negative(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SpecError(f"{self.type_name}.{name} must be a non-negative integer, got {value!r}")

    def _one_of(self, name: str, allowed) -> None:
        value = getattr(self, name)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"{self.type_name}.{name} must be one of {sorted(map(str, allowed))}, got {value!r}{hint}")


def expect_rank(block: Block, in_shape: Shape, rank: int | tuple[int, ...], what: str) -> None:
    ranks = (rank,) if isinstance(rank, int) else rank
    if len(in_shape) not in ranks:
        raise SpecError(f"{block.type_name} expects {what}, got shape {tuple(in_shape)}")


def expect_last(block: Block, in_shape: Shape, size: int, axis: int = -1) -> None:
    if not in_shape or in_shape[axis] != size:
        name = "last dim" if axis == -1 else f"dim {axis}"
        got = in_shape[axis] if in_shape and len(in_shape) >= abs(axis) else None
        raise SpecError(f"expected {name} {size}, got {got} (input shape {tuple(in_shape)})")


@dataclass(frozen=True)
class LayerInfo:
    """One node of the spec tree as traced on a given input shape. `count` > 1: a row standing for
    that many equal copies (named `path`, e.g. "blocks.1-999999"), whose subtree is not listed."""

    path: str
    block: Block
    in_shape: Shape
    out_shape: Shape
    level: int
    count: int = 1

def child_out(name: str, child: Block, in_shape: Shape) -> Shape:
    """`child.out_shape(in_shape)`, with the child's name prepended to any SpecError's path.

    Composites call this in `trace`/`out_shape`, so an error raised deep in the tree arrives at the
    root as "blocks.3.ffn.up: expected last dim 768, got 512".
    """
    try:
        return tuple(child.out_shape(tuple(in_shape)))
    except SpecError as err:
        raise err.with_prefix(name) from None


def chain_trace(children, in_shape: Shape) -> tuple[tuple[str, Block, Shape], ...]:
    """`trace` of children that run one after another: each gets the previous one's output."""
    out, shape = [], tuple(in_shape)
    for name, child in children:
        out.append((name, child, shape))
        shape = child_out(name, child, shape)
    return tuple(out)


def walk(block: Block, in_shape: Shape, path: str = "", level: int = 0,
         collapse_over: int | None = None) -> Iterator[LayerInfo]:
    """Every node of the tree in execution order, with the shapes it sees.

    The root's `out_shape` runs first and checks the whole tree, so a mismatch is raised before
    anything is yielded, with the full block path. `collapse_over`: a run of more equal copies than
    this is listed as its first copy (with its subtree) and one row for all the others.
    """
    out = block.out_shape(tuple(in_shape))
    yield LayerInfo(path, block, tuple(in_shape), tuple(out), level)
    for names, child, child_in in block.runs(in_shape):
        listed = names if collapse_over is None or len(names) <= collapse_over else names[:1]
        for name in listed:
            yield from walk(child, child_in, f"{path}.{name}" if path else name, level + 1, collapse_over)
        if len(listed) < len(names):
            rest = f"{names[1]}-{names[-1].rsplit('.', 1)[-1]}" if len(names) > 2 else names[1]
            yield LayerInfo(f"{path}.{rest}" if path else rest, child, tuple(child_in),
                            child.out_shape(tuple(child_in)), level + 1, len(names) - 1)
