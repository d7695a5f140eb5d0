"""Known architectures by name, and the MODEL argument's resolution.

  get_preset("llama-2-7b", n_layers=2)   a preset's Model, with its family keywords overridden
  list_presets()                         (name, family, params, source) for every preset
  resolve_model(name_or_path)            a preset name, a spec file (.yaml/.yml/.json) or an HF config.json
Pure Python: nothing here imports torch.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, replace
from pathlib import Path

from layerwise.presets.data import PRESETS
from layerwise.presets.families import make
from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import Model

__all__ = ["PRESETS", "PresetInfo", "get_preset", "list_presets", "resolve_model"]


@dataclass(frozen=True)
class PresetInfo:
    name: str
    family: str
    params: int  # total parameters (trainable + frozen), unique (a tied head once)
    source: str


def _unknown(name: str) -> LayerwiseError:
    close = difflib.get_close_matches(name, sorted(PRESETS), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return LayerwiseError(f"unknown preset {name!r}{hint} (`layerwise presets` lists them)")


def get_preset(name: str, **overrides) -> Model:
    """The preset `name` as a Model; `overrides` replace its family keywords (n_layers=2, ...)."""
    if name not in PRESETS:
        raise _unknown(name)
    family, keywords, source = PRESETS[name]
    model = make(family, name, source, {**keywords, **overrides})
    return replace(model, defaults=tuple(sorted(overrides.items()))) if overrides else model


def list_presets() -> list[PresetInfo]:
    return [PresetInfo(name, family, get_preset(name).params().total, source)
            for name, (family, _, source) in PRESETS.items()]


def resolve_model(name_or_path: str) -> Model:
    """A preset name, a spec file (.yaml, .yml, .json) or a Hugging Face config.json (has "model_type").

    A spec file holding a bare block (no input) is an error: a Model needs to know what it eats.
    """
    text = str(name_or_path)
    if text in PRESETS:
        return get_preset(text)
    path = Path(text)
    if path.suffix in (".yaml", ".yml", ".json"):
        if not path.exists():
            raise LayerwiseError(f"{path}: no such file")
        if path.suffix == ".json" and _is_hf_config(path):
            from layerwise.presets.hf import load_hf_config

            return load_hf_config(path)
        from layerwise.spec.io import load

        spec = load(path)
        if not isinstance(spec, Model):
            raise LayerwiseError(f"{path}: the file holds a bare {spec.type_name!r} block with no input; wrap it in "
                                 f"a model (type: model, input: {{kind: ..., shape: [...]}}, body: ...) "
                                 f"or pass --input SHAPE on the command line")
        return spec
    if path.exists():
        raise LayerwiseError(f"{path}: model files are .yaml, .yml or .json (a spec or an HF config.json)")
    raise _unknown(text)


def _is_hf_config(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "model_type" in data
