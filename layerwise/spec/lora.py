"""apply_lora: replace matching Linear children of a spec tree by LoRA wrappers (a tree transform).

`apply_lora(spec, rank=8, targets=("q_proj", "v_proj"))` wraps every Linear whose path (or last
path component) matches a target glob, with its base frozen; with `freeze_base_model` everything
else is frozen too, so only the adapters train (Hu et al. 2021; peft's default targets for Llama).
"""
from __future__ import annotations

from dataclasses import replace

from layerwise.spec.base import Block
from layerwise.spec.errors import SpecError
from layerwise.spec.transform import freeze, map_tree, matches

_ADAPTER_PARTS = ("base", "lora_a", "lora_b")  # a LoRA's own children are never wrapped again


def apply_lora(spec, rank: int, alpha: float = 16.0, targets=("q_proj", "v_proj"), dropout: float = 0.0,
               init_a: str = "gaussian", freeze_base_model: bool = True):
    """The spec (a Block, or a Model whose body is transformed) with LoRA on the targets.

    Raises SpecError when no Linear matches `targets`, naming the targets."""
    from layerwise.spec.model import Model

    if isinstance(spec, Model):
        return replace(spec, body=apply_lora(spec.body, rank, alpha, targets, dropout, init_a, freeze_base_model))
    if not isinstance(spec, Block):
        raise SpecError(f"apply_lora needs a block or a model, got {type(spec).__name__}")
    if isinstance(targets, str):
        targets = (targets,)
    from layerwise.blocks.linear import Linear
    from layerwise.blocks.lora import LoRA

    tree = freeze(spec) if freeze_base_model else spec
    hits = []

    def wrap(path: str, node: Block) -> Block:
        if not isinstance(node, Linear) or not path or path.split(".")[-1] in _ADAPTER_PARTS:
            return node
        if not matches(path, targets):
            return node
        hits.append(path)
        try:
            return LoRA(base=replace(node, trainable=False), rank=rank, alpha=alpha, dropout=dropout, init_a=init_a)
        except SpecError as err:
            raise err.with_prefix(path) from None

    out = map_tree(tree, wrap)
    if not hits:
        raise SpecError(f"apply_lora: no linear layer matches targets {list(targets)}")
    return out
