"""Run-time settings of a built module tree that a workload chooses (never part of the spec)."""
from __future__ import annotations

from torch import nn

from layerwise.build.attention import IMPLS, AttentionModule
from layerwise.spec.errors import WorkloadError


def set_attention_impl(module: nn.Module, impl: str) -> int:
    """Make every attention module under `module` use `impl` ("eager" | "sdpa").

    Returns how many attention modules were switched (0 for a model without attention)."""
    if impl not in IMPLS:
        raise WorkloadError(f"--attention must be one of {list(IMPLS)}, got {impl!r}")
    n = 0
    for sub in module.modules():
        if isinstance(sub, AttentionModule):
            sub.impl = impl
            n += 1
    return n


def set_moe_routing(module: nn.Module, routing: str) -> int:
    """Make every MoE module under `module` route "learned" (top-k of the router) or "balanced"
    (data-independent, equal shares: for fake-tensor / meta runs). Returns how many were set."""
    from layerwise.build.moe import ROUTINGS, MoEModule

    if routing not in ROUTINGS:
        raise WorkloadError(f"MoE routing must be one of {list(ROUTINGS)}, got {routing!r}")
    n = 0
    for sub in module.modules():
        if isinstance(sub, MoEModule):
            sub.routing = routing
            n += 1
    return n
