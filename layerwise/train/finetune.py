"""Fine-tuning: freeze by path glob, LoRA adapters, merging adapters back, starting weights.

All of it acts on the spec (layerwise.spec.transform.freeze, layerwise.spec.lora.apply_lora), so the
run's spec.yaml says exactly what was trained; weights follow by name.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from layerwise.spec.base import Block
from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import Model
from layerwise.spec.transform import freeze, map_tree
from layerwise.train.config import TrainConfig
from layerwise.train.optim import spec_nodes


def transform(model: Model, cfg: TrainConfig) -> Model:
    """The model actually trained: frozen paths, then LoRA on the target linears (base frozen)."""
    body = model.body
    if cfg.freeze:
        body = freeze(body, tuple(cfg.freeze))
    if cfg.lora_rank:
        from layerwise.spec.lora import apply_lora

        body = apply_lora(body, rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=tuple(cfg.lora_targets))
    return replace(model, body=body)


def lora_paths(body: Block) -> list[str]:
    return [p for p, n in spec_nodes(body).items() if n.type_name == "lora"]


def merged_spec(model: Model) -> Model:
    """LoRA nodes replaced by their base Linear (trainable again, as a plain layer)."""

    def fn(path: str, node: Block) -> Block:
        return replace(node.base, trainable=True) if node.type_name == "lora" else node

    return replace(model, body=map_tree(model.body, fn))


def merge_lora_state(body: Block, state: dict) -> dict:
    """W = W_base + (alpha / rank) * B @ A for every LoRA path; adapter tensors dropped.
    Shapes: A (rank, d_in), B (d_out, rank), W (d_out, d_in)."""
    nodes = spec_nodes(body)
    out = dict(state)
    for path in lora_paths(body):
        spec = nodes[path]
        pre = f"{path}." if path else ""
        a, b = out.pop(f"{pre}lora_a.weight"), out.pop(f"{pre}lora_b.weight")
        w = out.pop(f"{pre}base.weight")
        out[f"{pre}weight"] = (w.float() + spec.scaling * (b.float() @ a.float())).to(w.dtype)
        if f"{pre}base.bias" in out:
            out[f"{pre}bias"] = out.pop(f"{pre}base.bias")
    return out


def load_initial(module: torch.nn.Module, body: Block, source: str) -> None:
    """Start from the weights of a run dir (its best checkpoint) or a .safetensors file. Names of the
    un-adapted model are mapped onto LoRA bases (`x.weight` -> `x.base.weight`)."""
    from layerwise.train.checkpoint import read_checkpoint

    path = Path(source)
    if path.is_dir() and (path / "checkpoints").exists():
        folder = path / "checkpoints" / ("best" if (path / "checkpoints" / "best").exists() else "last")
        tensors, _ = read_checkpoint(folder)
    elif path.suffix == ".safetensors" and path.exists():
        from layerwise.train import integrity
        from layerwise.train.checkpoint import read_tensors

        if (path.parent / integrity.MANIFEST).exists():  # an artefact of a run: check it
            integrity.verify(path)
        tensors = read_tensors(path)
    else:
        raise LayerwiseError(f"init_from {source!r}: expected a run directory or a .safetensors file")
    lora = set(lora_paths(body))
    own = module.state_dict()
    renamed = {}
    for k, v in tensors.items():
        parent, _, leaf = k.rpartition(".")
        if parent in lora or (parent == "" and "" in lora):
            k = f"{parent}.base.{leaf}" if parent else f"base.{leaf}"
        renamed[k] = v
    unknown = [k for k in renamed if k not in own]
    if unknown:
        raise LayerwiseError(f"init_from {source!r}: tensors the model does not have: {unknown[:5]}")
    for k, v in renamed.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise LayerwiseError(f"init_from {source!r}: {k} has shape {tuple(v.shape)}, the model needs {tuple(own[k].shape)}")
    module.load_state_dict(renamed, strict=False)
