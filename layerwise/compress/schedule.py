"""Iterative prune-then-fine-tune: reach a target sparsity in `steps` equal stages, fine-tuning after
each, which loses less accuracy than cutting everything at once (Han et al. 2015, "Learning both
Weights and Connections", sec. 3.3)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from layerwise.compress.structured import check_amount, prune_structured
from layerwise.compress.unstructured import prune_magnitude
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
    """Prune in `steps` stages towards `sparsity`, calling finetune(module) after each stage."""
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
            module = prune_magnitude(module, goal, scope=kind)  # global magnitude over the current zeros
        if finetune is not None:
            finetune(module)
        stages.append(Stage(i, goal, body, module))
    return stages
