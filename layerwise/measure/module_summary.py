"""`summary` and `flops` of any nn.Module: the built module read directly, under fake tensors.

summary: every submodule's output shape (forward hooks), its parameters (a tied tensor once, for
the first module that owns it), the split by the class that holds them, and the depth: the most
parameterised layers (a matmul, convolution or embedding reading a weight of 2+ dimensions) on
one path of the backward graph, so norms (1-D weights) and residual skips add 0, as for specs.
flops: FlopCounterMode per module, forward and forward+backward (backward = the difference).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from layerwise.cost.summary import LayerRow, Summary
from layerwise.spec.counts import Params

# Autograd nodes that only re-view a weight on its way to AccumulateGrad (nn.Linear's weight.t()).
_VIEW_NODES = ("TBackward0", "ViewBackward0", "PermuteBackward0", "TransposeBackward0", "ExpandBackward0",
               "ToCopyBackward0", "UnsafeViewBackward0")


def summarize_module(name: str, module: nn.Module, x: torch.Tensor, run: Callable) -> Summary:
    """`run(module, x)` is the forward (under the caller's fake mode and autocast)."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [sub.register_forward_hook(_shape_hook(path, shapes))
               for path, sub in module.named_modules() if path]
    try:
        out = run(module, x)
    finally:
        for h in handles:
            h.remove()
    out = out[0] if isinstance(out, (tuple, list)) else out
    owner = _owners(module)
    rows, by_type = [], defaultdict(int)
    for path, sub in module.named_modules():
        own = [p for p in sub.parameters(recurse=False) if owner[id(p)] == path]
        if own:
            by_type[type(sub).__name__] += sum(p.numel() for p in own)
        if path:
            mine = [p for p in sub.parameters() if owner[id(p)].startswith(path)]
            rows.append(LayerRow(path, type(sub).__name__, path.count(".") + 1, shapes.get(path, ()),
                                 sum(p.numel() for p in mine), sum(p.numel() for p in mine if p.requires_grad),
                                 sum(p.numel() for p in own)))
    params = list(module.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    counts = Params(trainable=trainable, frozen=sum(p.numel() for p in params) - trainable,
                    buffers=sum(b.numel() for b in module.buffers()))
    return Summary(model=name, input_shape=tuple(x.shape), output_shape=tuple(out.shape), params=counts,
                   active_params=counts, depth=graph_depth(out), layers=tuple(rows),
                   by_type=dict(sorted(by_type.items(), key=lambda kv: -kv[1])))


def _shape_hook(path: str, shapes: dict):
    def hook(_module, _args, out) -> None:
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        if isinstance(first, torch.Tensor) and path not in shapes:
            shapes[path] = tuple(first.shape)
    return hook


def _owners(module: nn.Module) -> dict[int, str]:
    """id(parameter) -> path of the first module holding it (tied weights belong to one)."""
    owner: dict[int, str] = {}
    for path, sub in module.named_modules():
        for p in sub.parameters(recurse=False):
            owner.setdefault(id(p), path)
    return owner


def graph_depth(out: torch.Tensor) -> int:
    """Most parameterised nodes on one path from the output back to the inputs."""
    if out.grad_fn is None:
        return 0
    memo: dict[object, int] = {}
    order, stack = [], [(out.grad_fn, False)]
    while stack:  # iterative post-order: deep graphs would overflow Python's recursion
        node, done = stack.pop()
        if node is None or (node in memo and not done):
            continue
        if done:
            below = [memo.get(n, 0) for n, _ in node.next_functions if n is not None]
            memo[node] = max(below, default=0) + _reads_weight(node)
            continue
        memo[node] = 0
        stack.append((node, True))
        stack.extend((n, False) for n, _ in node.next_functions if n is not None and n not in memo)
    return memo[out.grad_fn]


def _reads_weight(node) -> int:
    """1 if one of the node's inputs is a parameter of 2+ dimensions (through view nodes)."""
    for nxt, _ in node.next_functions:
        while nxt is not None and type(nxt).__name__ in _VIEW_NODES:
            nxt = nxt.next_functions[0][0] if nxt.next_functions else None
        if nxt is not None and hasattr(nxt, "variable") and nxt.variable.dim() >= 2:
            return int(type(node).__name__ not in _VIEW_NODES)
    return 0


def module_flops(module: nn.Module, x: torch.Tensor, run: Callable, loss: Callable, train: bool) -> dict:
    """{"forward", "backward", "per_module": {path: (forward, backward)}} from FlopCounterMode."""
    with FlopCounterMode(display=False) as fwd_counter:
        run(module, x)
    forward = _by_path(fwd_counter, module)
    total = forward
    if train:
        with FlopCounterMode(display=False) as all_counter:
            loss(run(module, x)).backward()
        total = _by_path(all_counter, module)
    per = {path: (forward.get(path, 0), total.get(path, 0) - forward.get(path, 0)) for path in total}
    f_all, t_all = forward.get("", 0), total.get("", 0)
    return {"forward": f_all, "backward": t_all - f_all, "per_module": per}


def _by_path(counter: FlopCounterMode, module: nn.Module) -> dict[str, int]:
    """FlopCounterMode names modules `Root.child.grandchild` (Global for everything); -> paths."""
    root = type(module).__name__
    out = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            out[""] = sum(ops.values())
        elif key.startswith(root + "."):
            out[key[len(root) + 1:]] = sum(ops.values())
    return out
