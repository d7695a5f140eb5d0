"""Small exact-integer helpers for shapes."""
from __future__ import annotations


def prod(xs) -> int:
    """Product of a shape's dims as an exact int (1 for an empty shape)."""
    out = 1
    for x in xs:
        out *= int(x)
    return out


def numel(shape) -> int:
    return prod(shape)
