"""Spec files: YAML/JSON <-> spec trees. `load(dump(spec)) == spec`.

A block is a mapping with a `type` (a registered name) and its fields; lists become tuples. Only
`yaml.safe_load` is used. Errors name the block path and, for YAML files, the line.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import MISSING, fields
from pathlib import Path

import yaml

from layerwise.spec.base import Block, block_class
from layerwise.spec.errors import LayerwiseError, SpecError
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
    """Plain data -> Model or Block. Errors carry the path of the offending block."""
    if not isinstance(data, dict) or "type" not in data:
        raise SpecError(f"expected a mapping with a 'type' key, got {_short(data)}", path)
    if data["type"] == "model":
        return _model(data, path)
    try:
        cls = block_class(data["type"])
    except SpecError as err:
        raise SpecError(err.message, path) from None
    kwargs = {k: _value(v, (*path, k)) for k, v in data.items() if k != "type"}
    return _construct(cls, kwargs, path)


def _model(data: dict, path) -> Model:
    kwargs = dict(data)
    kwargs.pop("type")
    if "input" not in kwargs or "body" not in kwargs:
        raise SpecError("a model needs 'input' and 'body'", path)
    kwargs["input"] = _construct(InputSpec, {k: _value(v, ()) for k, v in kwargs["input"].items()}, (*path, "input"))
    kwargs["body"] = from_data(kwargs["body"], (*path, "body") if path else ())
    kwargs.setdefault("name", "model")
    return _construct(Model, kwargs, path)


def _value(v, path):
    if isinstance(v, dict) and "type" in v:
        return from_data(v, path)
    if isinstance(v, list):
        return tuple(_value(x, (*path[:-1], f"{path[-1]}.{i}") if path else (str(i),)) for i, x in enumerate(v))
    return v


def _construct(cls, kwargs: dict, path):
    known = {f.name for f in fields(cls) if f.init}
    for key in kwargs:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            name = getattr(cls, "type_name", cls.__name__)
            raise SpecError(f"{name} has no field {key!r}{hint} (fields: {', '.join(sorted(known))})", path)
    required = [f.name for f in fields(cls) if f.init and f.default is MISSING and f.default_factory is MISSING]
    missing = [r for r in required if r not in kwargs]
    if missing:
        name = getattr(cls, "type_name", cls.__name__)
        raise SpecError(f"{name} is missing required field(s) {missing}", path)
    _check_flags_and_counts(cls, kwargs, path)
    try:
        return cls(**kwargs)
    except SpecError as err:
        raise SpecError(err.message, (*path, *err.path)) from None
    except (TypeError, ValueError) as err:
        raise SpecError(str(err), path) from None


def _check_flags_and_counts(cls, kwargs: dict, path) -> None:
    """A field declared `bool` takes only true/false (YAML reads `"no"` as a string, which Python
    would take as True); one declared `int` takes no booleans. Driven by the dataclass fields."""
    for f in fields(cls):
        if f.name not in kwargs:
            continue
        value, declared = kwargs[f.name], f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if declared == "bool" and not isinstance(value, bool):
            raise SpecError(f"{f.name}: expected true or false, got {value!r}", path)
        if declared == "int" and isinstance(value, bool):
            raise SpecError(f"{f.name}: expected an integer, got {value!r}", path)


def _short(data) -> str:
    text = repr(data)
    return text if len(text) < 60 else text[:57] + "..."


# ---- files --------------------------------------------------------------------------------------
def load(path: str | Path):
    """Read a spec file (.yaml, .yml or .json) into a Model or Block."""
    path = Path(path)
    if not path.exists():
        raise LayerwiseError(f"{path}: no such file")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise LayerwiseError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
        lines = {}
    elif path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise LayerwiseError(f"{path}{line}: YAML syntax error: {problem}") from None
        lines = _yaml_lines(text)
    else:
        raise LayerwiseError(f"{path}: spec files are .yaml, .yml or .json, got {path.suffix or 'no suffix'!r}")
    try:
        return from_data(data)
    except SpecError as err:
        line = lines.get(err.path)
        where = f"{path}:{line}" if line else str(path)
        raise SpecError(f"{where}: {err}") from None


def _yaml_lines(text: str) -> dict[tuple[str, ...], int]:
    """Block path -> 1-based line where that mapping starts, so errors can name the line."""
    out: dict[tuple[str, ...], int] = {}

    def visit(node, path):
        if isinstance(node, yaml.MappingNode):
            out.setdefault(path, node.start_mark.line + 1)
            for key, value in node.value:
                visit(value, (*path, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                visit(item, (*path[:-1], f"{path[-1]}.{i}") if path else (str(i),))

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
