"""Unstructured magnitude pruning (torch.nn.utils.prune), global or per layer, and the per-layer
sparsity table. Zeros stay in dense tensors: the file and FLOPs do not shrink (structured pruning
does that); this is the accuracy-vs-sparsity reading."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from layerwise.compress.structured import check_amount
from layerwise.spec.errors import LayerwiseError

_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class LayerSparsity:
    path: str  # the weight's name, e.g. "blocks.0.ffn.up_proj.weight"
    numel: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


def prune_magnitude(module: nn.Module, amount: float, scope: str = "global", permanent: bool = True) -> nn.Module:
    """Zero the smallest-|w| fraction `amount` of Linear/Conv weights, over all of them together
    (scope="global") or in each layer (scope="layer").

    permanent=False keeps torch's mask (weight = weight_orig * weight_mask), so fine-tuning cannot
    regrow pruned weights; pruning again then removes `amount` of the weights still alive (torch's
    PruningContainer). make_permanent() folds the masks in at the end."""
    check_amount(amount)
    if scope not in ("global", "layer"):
        raise LayerwiseError(f"prune: scope must be global or layer, got {scope!r}")
    targets = [(m, "weight") for m in module.modules() if isinstance(m, _PRUNABLE)]
    if not targets:
        raise LayerwiseError("prune: the model has no Linear or Conv weight to prune")
    if scope == "global":
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(amount))
    else:
        for m, name in targets:
            prune.l1_unstructured(m, name, amount=float(amount))
    if permanent:
        make_permanent(module)
    return module


def make_permanent(module: nn.Module) -> nn.Module:
    """Fold every pruning mask into its weight (plain `weight` parameters again)."""
    for m in module.modules():
        if isinstance(m, _PRUNABLE) and prune.is_pruned(m) and hasattr(m, "weight_mask"):
            prune.remove(m, "weight")
    return module


def permanent_copy(module: nn.Module) -> nn.Module:
    """A copy with the masks folded in (to save or measure mid-schedule)."""
    import copy

    with torch.no_grad():  # after a training step `weight` is a non-leaf (orig * mask): recompute it detached
        for m in module.modules():
            if isinstance(m, _PRUNABLE) and hasattr(m, "weight_mask"):
                m.weight = m.weight_orig * m.weight_mask
    return make_permanent(copy.deepcopy(module))


def sparsity_table(module: nn.Module) -> list[LayerSparsity]:
    """Zeros per Linear/Conv weight, keyed by parameter name."""
    rows = []
    for path, m in module.named_modules():
        if isinstance(m, _PRUNABLE):
            w = m.weight.detach()
            rows.append(LayerSparsity(f"{path}.weight" if path else "weight", w.numel(), int((w == 0).sum())))
    return rows
