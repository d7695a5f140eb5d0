"""MODEL argument -> Model: a preset name, a spec file, or a Hugging Face config.json.

A spec file may hold a bare block (no input): `--input` then says what one sample looks like, and
the input kind follows from the first leaf (an embedding eats tokens) and the shape's rank.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from layerwise.spec.base import Block
from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import InputSpec, Model

_KIND_BY_RANK = {1: "features", 2: "sequence", 3: "image"}


def resolve(name: str, input_shape: tuple[int, ...] | None = None, seq: int | None = None) -> Model:
    """The model `name` names, its sample shape set by --input if given. `seq` (--seq) is passed so
    that the two ways of giving a sequence length are not both accepted with one silently winning."""
    spec = _resolve(name, input_shape)
    if input_shape is not None and seq is not None and spec.input.kind in ("tokens", "sequence"):
        raise LayerwiseError(f"--seq {seq} and --input {'x'.join(map(str, input_shape))} both give the sequence "
                             f"length of {name}; give one of them")
    return spec


def _resolve(name: str, input_shape: tuple[int, ...] | None) -> Model:
    from layerwise.commands._module import is_module_ref

    if is_module_ref(name):  # the commands that read modules handle them before calling resolve
        raise LayerwiseError(f"{name}: your own module has no spec, so only the measure reading applies: "
                             f"layerwise measure|summary|flops {name} --input SHAPE")
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or (path.suffix == ".json" and not _is_hf_config(path)):
        from layerwise.spec.io import load

        spec = load(path)
    else:
        from layerwise.presets import resolve_model

        spec = resolve_model(name)
    if isinstance(spec, Block):
        return _wrap(spec, name, input_shape)
    if input_shape is not None:
        spec = replace(spec, input=replace(spec.input, shape=tuple(input_shape)))
    return spec


def _is_hf_config(path: Path) -> bool:
    if not path.exists():
        return False
    import json

    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, RecursionError):
        return False
    return isinstance(data, dict) and "model_type" in data


def _wrap(block: Block, name: str, input_shape) -> Model:
    if input_shape is None:
        raise LayerwiseError(f"{name}: the file holds a bare block with no input; pass --input SHAPE "
                             f"(one sample, e.g. 3x32x32 or 128)")
    first = _first_leaf(block)
    if first.type_name == "embedding":
        inp = InputSpec(kind="tokens", shape=tuple(input_shape), vocab_size=first.vocab_size)
    else:
        kind = _KIND_BY_RANK.get(len(input_shape))
        if kind is None:
            raise LayerwiseError(f"--input {input_shape}: expected 1 to 3 sizes for one sample")
        inp = InputSpec(kind=kind, shape=tuple(input_shape))
    return Model(name=Path(name).stem, body=block, input=inp, task="none")


def _first_leaf(block: Block) -> Block:
    while block.child_groups():
        block = block.child_groups()[0][1]
    return block


def resolve_text(text: str, input_shape: tuple[int, ...] | None = None, where: str = "model") -> Model:
    """A preset name, or the TEXT of a spec (YAML or JSON) or of a Hugging Face config.json: what a
    web client sends. Never a path: nothing is opened. Parsed with json.loads / yaml.safe_load."""
    import json

    import yaml

    from layerwise.presets import PRESETS, get_preset

    name = text.strip()
    if name in PRESETS:
        spec = get_preset(name)
        return replace(spec, input=replace(spec.input, shape=tuple(input_shape))) if input_shape else spec
    if "\n" not in name and ":" not in name and not name.startswith("{"):
        try:
            get_preset(name[:100])  # not a preset: its error says so, with a did-you-mean
        except LayerwiseError as err:
            raise LayerwiseError(f"{where}: {err}; or paste a spec or config.json (paths are not opened)") from None
    try:
        data = json.loads(name) if name.startswith("{") else yaml.safe_load(name)
    except json.JSONDecodeError as err:
        raise LayerwiseError(f"{where}:{err.lineno}: invalid JSON: {err.msg}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise LayerwiseError(f"{where}{f':{mark.line + 1}' if mark else ''}: YAML syntax error: {problem}") from None
    if isinstance(data, dict) and "model_type" in data:
        from layerwise.presets.hf import from_hf_config

        label = data.get("_name_or_path") or data["model_type"]
        return from_hf_config(data, name=str(label), where=where)
    if not isinstance(data, dict) or "type" not in data:
        raise LayerwiseError(f"{where}: expected a preset name, a spec (a mapping with 'type') or a Hugging Face "
                             f"config (with 'model_type')")
    from layerwise.spec.errors import SpecError
    from layerwise.spec.io import from_data

    try:
        spec = from_data(data)
    except SpecError as err:
        raise LayerwiseError(f"{where}: {err}") from None
    if isinstance(spec, Block):
        return _wrap(spec, where, input_shape)
    if input_shape is not None:
        spec = replace(spec, input=replace(spec.input, shape=tuple(input_shape)))
    return spec
