"""Which module holds the memory: the bytes autograd saves for backward, by top-level submodule.

One extra forward (outside the measured step, so it cannot move the peak) runs with
`torch.autograd.graph.saved_tensors_hooks`: every tensor autograd saves is charged to the
top-level child holding the innermost module running when it was saved (forward pre/post hooks
on every submodule keep the stack, so the items of an uncalled ModuleList count for it). A storage counts once, for its first saver; parameters and buffers are weights, not
activations, and are left out; whatever is saved outside every child (the loss, say) is charged
to "(outside)". A checkpointed block saves only what torch.utils.checkpoint keeps (its inputs).
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Callable

import torch
from torch import nn

OUTSIDE = "(outside)"


def saved_by_module(module: nn.Module, forward: Callable[[], torch.Tensor]) -> dict[str, int]:
    """Saved bytes per top-level child of `module` (in definition order) during `forward()`."""
    names = [name for name, _ in module.named_children()]
    totals = dict.fromkeys([*names, OUTSIDE], 0)
    weights = {id(t.untyped_storage()) for t in (*module.parameters(), *module.buffers())}
    seen: set[int] = set()
    stack: list[str] = []

    def pack(t: torch.Tensor):
        if t.layout == torch.strided:
            st = t.untyped_storage()
            if id(st) not in weights and id(st) not in seen:
                seen.add(id(st))
                totals[stack[-1] if stack else OUTSIDE] += st.nbytes()
        return t.detach()  # the tensor itself would make a reference cycle for saved outputs

    def enter(name: str):
        return lambda _module, _args: stack.append(name)  # returns None: the input is unchanged

    def leave(_module, _args, _out) -> None:  # must return None, or the output would be replaced
        stack.pop()

    with ExitStack() as hooks:
        for path, sub in module.named_modules():  # every module: a ModuleList child is never called
            if not path:
                continue
            pre = sub.register_forward_pre_hook(enter(path.split(".", 1)[0]))
            post = sub.register_forward_hook(leave)
            hooks.callback(pre.remove)
            hooks.callback(post.remove)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = forward()
        del loss  # the graph (and what it saved) goes with it
    return totals
