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


def resolve(name: str, input_shape: tuple[int, ...] | None = None) -> Model:
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
        return "model_type" in json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
        return False


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
    while block.children():
        block = block.children()[0][1]
    return block
