"""--capacity-factor: set the expert capacity of every MoE layer of MODEL (no torch here)."""
from __future__ import annotations

from dataclasses import replace

import typer

from layerwise.spec.errors import LayerwiseError


def capacity_option():
    return typer.Option(None, "--capacity-factor", help="MoE: expert capacity = F * top_k * tokens / n_experts "
                                                        "(GShard; overflow is dropped); 0: dropless")


def with_capacity(model, capacity_factor: float | None):
    """The model with every `moe` block's capacity_factor set; refused for a model without one."""
    if capacity_factor is None:
        return model
    from layerwise.spec.transform import map_tree

    if capacity_factor < 0:
        raise LayerwiseError(f"--capacity-factor must be >= 0, got {capacity_factor}")
    seen = []

    def fn(path, node):
        if node.type_name != "moe":
            return node
        seen.append(path)
        return replace(node, capacity_factor=float(capacity_factor))

    body = map_tree(model.body, fn)
    if not seen:
        raise LayerwiseError(f"--capacity-factor: {model.name} has no MoE layer")
    return replace(model, body=body)
