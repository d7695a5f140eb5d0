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
    from layerwise.build.mla import MLAModule

    n = 0
    for sub in module.modules():
        if isinstance(sub, (AttentionModule, MLAModule)):
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


def router_loss(module: nn.Module):
    """The sum of the MoE layers' router losses of the last forward (aux + z, weighted), or None
    when no layer has one: what the training loss adds."""
    from layerwise.build.moe import MoEModule

    total = None
    for sub in module.modules():
        if isinstance(sub, MoEModule) and sub.router_loss is not None:
            total = sub.router_loss if total is None else total + sub.router_loss
    return total


def record_routing(module: nn.Module, on: bool = True) -> int:
    """Make every MoE layer keep its last forward's per-expert counts (`routing_stats`)."""
    from layerwise.build.moe import MoEModule

    layers = [sub for sub in module.modules() if isinstance(sub, MoEModule)]
    for sub in layers:
        sub.record_stats, sub.stats = on, None
    return len(layers)


def routing_stats(module: nn.Module) -> dict | None:
    """Pairs routed to each expert (summed over the MoE layers, before capacity), the pairs
    dropped over capacity, and the overflow rate (dropped / routed), from the last forward of a
    module with `record_routing` on; None without MoE layers or before a forward."""
    from layerwise.build.moe import MoEModule

    stats = [sub.stats for sub in module.modules() if isinstance(sub, MoEModule) and sub.stats is not None]
    if not stats:
        return None
    counts = [sum(int(c) for c in col) for col in zip(*(s[0].tolist() for s in stats))]
    dropped = sum(int(s[1]) for s in stats)
    routed = sum(counts)
    return {"expert_counts": counts, "dropped": dropped, "overflow_rate": dropped / routed if routed else 0.0}
