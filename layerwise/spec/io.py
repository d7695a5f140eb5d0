"""Spec files: YAML/JSON <-> spec trees. `load(dump(spec)) == spec`.

A block is a mapping with a `type` (a registered name) and its fields; lists become tuples. Only
`yaml.safe_load` is used. Errors name the block path and, for YAML files, the line.
"""
from __future__ import annotations

import difflib
import json
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

import yaml

from layerwise.spec.base import Block, block_class
from layerwise.spec.errors import LayerwiseError, SpecError
from layerwise.spec.fieldtypes import conforms, describe, hints, shown
from layerwise.spec.model import InputSpec, Model


# ---- to plain data ------------------------------------------------------------------------------
def to_data(value):
    """A spec tree as plain dicts/lists (fields equal to their default are left out)."""
    if isinstance(value, Model):
        out = {"type": "model", "name": value.name, "task": value.task, "input": _fields_data(value.input)}
        if value.source:
            out["source"] = value.source
        out["body"] = to_data(value.body)
        return out
    if isinstance(value, Block):
        return {"type": value.type_name, **_fields_data(value)}
    if isinstance(value, tuple):
        return [to_data(v) for v in value]
    return value


def _fields_data(obj) -> dict:
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.default is not MISSING and value == f.default:
            continue
        out[f.name] = to_data(value)
    return out


# ---- from plain data ----------------------------------------------------------------------------
def from_data(data, path: tuple[str, ...] = ()):
    """Plain data -> Model or Block. Every value is checked against its field's declared type
    before any block is made (spec/fieldtypes.py); errors carry the path of the offending key."""
    check_data(data, path)
    return _build(data, path, {})


def check_data(data, path: tuple[str, ...] = (), seen: set | None = None) -> None:
    """Raise SpecError at the first value in the tree that does not fit its field's type.
    A mapping reached twice (a YAML alias) is checked once."""
    seen = set() if seen is None else seen
    if id(data) in seen:
        return
    cls = _class_of(data, path)
    _check_keys(cls, data, path)
    for key, value in data.items():
        if key != "type":
            _check_value(value, hints(cls)[key], (*path, key), seen)
    seen.add(id(data))


def _class_of(data, path) -> type:
    if not isinstance(data, dict) or "type" not in data:
        raise SpecError(f"expected a block: a mapping with a 'type' key, got {shown(data)}", path)
    if not isinstance(data["type"], str):
        raise SpecError(f"'type' must be a block type name (a string), got {shown(data['type'])}", path)
    if data["type"] == "model":
        return Model
    try:
        return block_class(data["type"])
    except SpecError as err:
        raise SpecError(err.message, path) from None


def _check_keys(cls, data: dict, path) -> None:
    known = hints(cls)
    name = getattr(cls, "type_name", cls.__name__)
    for key in data:
        if key == "type" and cls is not InputSpec:
            continue
        if not isinstance(key, str) or key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"{name} has no field {key!r}{hint} (fields: {', '.join(sorted(known))})", path)
    required = [f.name for f in fields(cls) if f.init and f.default is MISSING and f.default_factory is MISSING]
    missing = [r for r in required if r not in data and not (cls is Model and r == "name")]  # name: "model"
    if missing:
        raise SpecError(f"{name} is missing required field(s) {missing}", path)


def _check_value(value, hint, path, seen: set) -> None:
    """`value` (plain data) against `hint`: a mapping where a block or InputSpec is declared is
    checked field by field, a list where a tuple is declared item by item."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if isinstance(value, dict):
        for h in options:
            if isinstance(h, type) and issubclass(h, Block):
                check_data(value, path, seen)
                got = block_class(value["type"])
                if not issubclass(got, h):
                    raise SpecError(f"expected {describe(hint)}, got a {value['type']!r} block", path)
                return
            if h is InputSpec:
                _check_keys(InputSpec, value, path)
                for key, item in value.items():
                    _check_value(item, hints(InputSpec)[key], (*path, key), seen)
                return
    elif isinstance(value, list):
        for h in options:
            if typing.get_origin(h) is tuple:
                args = typing.get_args(h)
                if len(args) == 2 and args[1] is Ellipsis:
                    args = (args[0],) * len(value)
                if len(args) != len(value):
                    break
                for i, (item, item_hint) in enumerate(zip(value, args)):
                    _check_value(item, item_hint, (*path[:-1], f"{path[-1]}.{i}") if path else (str(i),), seen)
                return
    elif conforms(value, hint):
        return
    raise SpecError(f"expected {describe(hint)}, got {shown(value)}", path)


def _build(data, path, built: dict):
    """Checked plain data -> blocks; a mapping reached twice (a YAML alias) is built once."""
    if id(data) in built:
        return built[id(data)]
    if data["type"] == "model":
        return _model(data, path, built)
    cls = block_class(data["type"])
    kwargs = {k: _value(v, (*path, k), built) for k, v in data.items() if k != "type"}
    built[id(data)] = out = _construct(cls, kwargs, path)
    return out


def _model(data: dict, path, built: dict) -> Model:
    kwargs = dict(data)
    kwargs.pop("type")
    if "input" not in kwargs or "body" not in kwargs:
        raise SpecError("a model needs 'input' and 'body'", path)
    kwargs["input"] = _construct(InputSpec, {k: _value(v, (), built) for k, v in kwargs["input"].items()},
                                 (*path, "input"))
    kwargs["body"] = _build(kwargs["body"], (*path, "body"), built)
    kwargs.setdefault("name", "model")
    return _construct(Model, kwargs, path)


def _value(v, path, built: dict):
    if isinstance(v, dict) and "type" in v:
        return _build(v, path, built)
    if isinstance(v, list):
        return tuple(_value(x, (*path[:-1], f"{path[-1]}.{i}") if path else (str(i),), built) for i, x in enumerate(v))
    return v


def _construct(cls, kwargs: dict, path):
    try:
        return cls(**kwargs)
    except SpecError as err:
        raise SpecError(err.message, (*path, *err.path)) from None
    except (TypeError, ValueError) as err:
        raise SpecError(str(err), path) from None


# ---- files --------------------------------------------------------------------------------------
def load(path: str | Path):
    """Read a spec file (.yaml, .yml or .json) into a Model or Block."""
    path = Path(path)
    if not path.exists():
        raise LayerwiseError(f"{path}: no such file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise LayerwiseError(f"{path}: cannot read the spec: {err}") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise LayerwiseError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
        except RecursionError:
            raise LayerwiseError(f"{path}: nested too deeply to read") from None
        lines = {}
    elif path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise LayerwiseError(f"{path}{line}: YAML syntax error: {problem}") from None
        lines = yaml_lines(text)
    else:
        raise LayerwiseError(f"{path}: spec files are .yaml, .yml or .json, got {path.suffix or 'no suffix'!r}")
    try:
        return from_data(data)
    except SpecError as err:
        line = next((lines[err.path[:k]] for k in range(len(err.path), 0, -1) if err.path[:k] in lines), None)
        where = f"{path}:{line}" if line else str(path)
        raise SpecError(f"{where}: {err}") from None


def yaml_lines(text: str) -> dict[tuple[str, ...], int]:
    """Block path -> 1-based line where that mapping starts, so errors can name the line."""
    out: dict[tuple[str, ...], int] = {}

    def visit(node, path):
        if isinstance(node, yaml.MappingNode):
            out.setdefault(path, node.start_mark.line + 1)
            for key, value in node.value:
                out.setdefault((*path, key.value), key.start_mark.line + 1)
                visit(value, (*path, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                item_path = (*path[:-1], f"{path[-1]}.{i}") if path else (str(i),)
                out.setdefault(item_path, item.start_mark.line + 1)
                visit(item, item_path)

    try:
        visit(yaml.compose(text, Loader=yaml.SafeLoader), ())
    except yaml.YAMLError:
        pass
    return out


def dump(spec, path: str | Path | None = None) -> str:
    """The spec as YAML (or JSON for a .json path); written to `path` if given."""
    as_json = path is not None and Path(path).suffix == ".json"
    text = dump_text(spec, "json" if as_json else "yaml")
    if path is not None:
        Path(path).write_text(text)
    return text


def dump_text(spec, fmt: str = "yaml") -> str:
    """The spec as YAML or JSON text. A model's YAML starts with a comment naming its source, so a
    file written from a preset still says where its numbers come from after it is edited."""
    data = to_data(spec)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    head = ""
    if isinstance(spec, Model):
        source = " ".join(spec.source.split()) if spec.source else ""
        head = f"# {spec.name}" + (f": {source}" if source else "") + "\n"
        head += "# edit and load back: layerwise summary|memory|measure THIS_FILE.yaml\n"
    return head + yaml.safe_dump(data, sort_keys=False)
