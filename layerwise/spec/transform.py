"""Tree transforms: replace children of a spec tree (freeze, LoRA, quantize act through these).

Specs are frozen values, so a transform rebuilds the path from the root to every replaced node.
"""
from __future__ import annotations

import fnmatch
from dataclasses import fields, replace
from typing import Callable

from layerwise.spec.base import Block
from layerwise.spec.errors import SpecError

Fn = Callable[[str, Block], Block]


def map_tree(block: Block, fn: Fn, path: str = "") -> Block:
    """Apply `fn(path, node)` bottom-up to every node; `fn` returns the node or its replacement."""
    changes = {}
    for f in fields(block):
        value = getattr(block, f.name)
        sub = f"{path}.{f.name}" if path else f.name
        if isinstance(value, Block):
            new = map_tree(value, fn, sub)
            if new is not value:
                changes[f.name] = new
        elif isinstance(value, tuple) and value and all(isinstance(v, Block) for v in value):
            names = _tuple_names(block, f.name, len(value))
            new_items = tuple(map_tree(v, fn, f"{path}.{n}" if path else n) for n, v in zip(names, value))
            if any(a is not b for a, b in zip(new_items, value)):
                changes[f.name] = new_items
    node = replace(block, **changes) if changes else block
    return fn(path, node)


def _tuple_names(block: Block, field_name: str, n: int) -> list[str]:
    """Child path names of a tuple field, as `children()` names them."""
    by_id = {}
    for name, child in block.children():
        by_id.setdefault(id(child), []).append(name)
    value = getattr(block, field_name)
    out = []
    for i, v in enumerate(value):
        names = by_id.get(id(v))
        out.append(names.pop(0) if names else f"{field_name}.{i}")
    return out


def matches(path: str, patterns) -> bool:
    """Glob match of a block path against any pattern ("blocks.*.attn.q_proj", "*.ffn.*")."""
    return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path.split(".")[-1], p) for p in patterns)


def freeze(block: Block, patterns=("*",)) -> Block:
    """Mark every node with a `trainable` flag whose spec path matches as frozen (trainable=False).

    Paths are the spec tree's: a decoder's layers share one `block` template, so
    "block.attn.q_proj" (or "q_proj") addresses that projection in every layer; a composite's own
    flag ("" for the root, "block" for the template) freezes what it derives (norms, embeddings).
    A pattern that matches nothing is an error naming the paths that can be frozen, never a no-op.
    """
    patterns = tuple(patterns)
    hit, seen = set(), []

    def fn(path: str, node: Block) -> Block:
        if not any(f.name == "trainable" for f in fields(node)):
            return node
        seen.append(path or "(root)")
        mine = [p for p in patterns if matches(path, (p,)) or (p in ("", "(root)") and not path)]
        hit.update(mine)
        if mine and node.trainable:
            return replace(node, trainable=False)
        return node

    out = map_tree(block, fn)
    missed = [p for p in patterns if p not in hit]
    if missed:
        shown = ", ".join(seen[:12]) + (", ..." if len(seen) > 12 else "")
        raise SpecError(f"freeze pattern(s) {missed} match no block; paths that can be frozen: {shown} "
                        f"(layers of a decoder/encoder/vit share one 'block' template)")
    return out
