"""Iterative prune-then-fine-tune: reach a target sparsity in `steps` equal stages, fine-tuning after
each, which loses less accuracy than cutting everything at once (Han et al. 2015, "Learning both
Weights and Connections", sec. 3.3)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from layerwise.compress.structured import check_amount, prune_structured
from layerwise.compress.unstructured import make_permanent, permanent_copy, prune_magnitude
from layerwise.spec.base import Block
from layerwise.spec.errors import LayerwiseError

KINDS = ("structured", "global", "layer")


@dataclass(frozen=True)
class Stage:
    index: int  # 1..steps
    sparsity: float  # of the original units (structured) or weights (magnitude) removed so far
    body: Block
    module: nn.Module


def stage_amounts(sparsity: float, steps: int) -> list[tuple[float, float]]:
    """(cumulative target, fraction of the CURRENT units to remove) for each stage."""
    out = []
    for i in range(1, steps + 1):
        done, goal = sparsity * (i - 1) / steps, sparsity * i / steps
        out.append((goal, 1 - (1 - goal) / (1 - done)))
    return out


def iterative_prune(body: Block, module: nn.Module, in_shape, sparsity: float, *, steps: int = 1,
                    kind: str = "structured", finetune: Callable[[nn.Module], None] | None = None) -> list[Stage]:
    """Prune in `steps` stages towards `sparsity`, calling finetune(module) after each stage.
    Magnitude pruning keeps its masks while fine-tuning (pruned weights stay zero); each Stage holds
    a snapshot with the masks folded in, and the last one is the module itself."""
    check_amount(sparsity)
    if kind not in KINDS:
        raise LayerwiseError(f"prune: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not isinstance(steps, int) or steps < 1:
        raise LayerwiseError(f"prune: steps must be a positive integer, got {steps!r}")
    stages = []
    for i, (goal, amount) in enumerate(stage_amounts(sparsity, steps), start=1):
        if kind == "structured":
            step = prune_structured(body, module, in_shape, amount)
            body, module = step.body, step.module
        else:
            module = prune_magnitude(module, amount, scope=kind, permanent=False)  # of the weights alive
        if finetune is not None:
            finetune(module)
        last = i == steps
        snapshot = module if structured_or_last(kind, last) else permanent_copy(module)
        if last and kind != "structured":
            make_permanent(module)
        stages.append(Stage(i, goal, body, snapshot))
    return stages


def structured_or_last(kind: str, last: bool) -> bool:
    """Structured stages make a new module each time; magnitude stages share one, so snapshot."""
    return kind == "structured" or last
