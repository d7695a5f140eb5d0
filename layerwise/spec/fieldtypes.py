"""Field types, checked where values enter: one mechanism, driven by each dataclass's type hints.

Every spec value that comes from outside Python (YAML, JSON, an HF config, a preset override) is
checked against the declared type of its field before the block is made, so a block never sees a
string where it counts, a bool where it multiplies, or a mapping where it expects a block:

    int     an integer, not a bool, within int64 (torch's size type: larger sizes cannot exist)
    float   a finite number (an integer is accepted)
    bool    true or false (never 0/1 or "no")
    str     a string
    X | Y   either; None where the hint allows it
    tuple[X, ...] / tuple[X, Y]   a list (or tuple) of X / of exactly an X and a Y
    a class (Block, Linear, Rope, InputSpec)   an instance of it

A new field is covered by declaring its type; nothing is listed here per block.
"""
from __future__ import annotations

import functools
import math
import types
import typing
from dataclasses import fields

from layerwise.spec.errors import SpecError

INT64 = 2**63  # |int| < INT64


@functools.cache
def hints(cls) -> dict[str, object]:
    """{field name: resolved type hint} of a dataclass (cached per class)."""
    resolved = typing.get_type_hints(cls)
    return {f.name: resolved[f.name] for f in fields(cls) if f.init}


def conforms(value, hint) -> bool:
    """Whether `value` is of the declared type `hint` (lists stand for tuples)."""
    if hint is typing.Any or hint is object:
        return True
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and -INT64 < value < INT64
    if hint is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and (isinstance(value, int) or math.isfinite(value)) and -INT64 < value < INT64)
    if hint is str:
        return isinstance(value, str)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, h) for h in typing.get_args(hint))
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(v, args[0]) for v in value)
        return len(value) == len(args) and all(conforms(v, h) for v, h in zip(value, args))
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a hint this checker does not know (none today): not refused


def describe(hint) -> str:
    """What a hint asks for, in words ("an integer or a list of integers")."""
    if hint is type(None) or hint is None:
        return "null"
    words = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    if hint in words:
        return words[hint]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(h) for h in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)}: " + ", ".join(describe(h) for h in args)
    if isinstance(hint, type):
        name = getattr(hint, "type_name", None)
        if name == "block":
            return "a block (a mapping with a 'type')"
        return f"a {name} block" if name else f"a mapping ({hint.__name__})"
    return str(hint)


def _plural(hint) -> str:
    name = getattr(hint, "type_name", None) if isinstance(hint, type) else None
    if name:
        return "blocks (mappings with a 'type')" if name == "block" else f"{name} blocks"
    text = describe(hint)
    for a in ("an ", "a "):
        if text.startswith(a):
            return text[len(a):] + "s"
    return text


def shown(value) -> str:
    """A value as the error shows it: short, with its kind ('12' (a string))."""
    kinds = {bool: "a bool", int: "an integer", float: "a number", str: "a string", list: "a list", tuple: "a list",
             dict: "a mapping", type(None): "null"}
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    kind = kinds.get(type(value), getattr(value, "type_name", None) and f"a {value.type_name} block")
    if type(value) in (int, float) and not -INT64 < value < INT64:
        kind = "beyond int64, the largest size torch can hold"
    return f"{text} ({kind})" if kind else text


def mismatch(cls, name: str, value) -> str | None:
    """None if `value` fits field `name` of `cls`, else what was expected and what came."""
    hint = hints(cls).get(name)
    if hint is None or conforms(value, hint):
        return None
    where = getattr(cls, "type_name", None) or cls.__name__
    return f"{where}.{name} must be {describe(hint)}, got {shown(value)}"


def check_fields(obj) -> None:
    """Every field of a made dataclass against its type (InputSpec and Model, made in Python)."""
    for name in hints(type(obj)):
        problem = mismatch(type(obj), name, getattr(obj, name))
        if problem:
            raise SpecError(problem)
