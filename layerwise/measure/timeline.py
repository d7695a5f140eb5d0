"""Which block is running, for the measure reading's memory timeline.

Forward pre/post hooks on every submodule keep a stack of module paths (the `named_modules()`
names, so the cost reading's block paths match). A block's post hook tags the autograd nodes its
forward created (walking back from its outputs' grad_fn to nodes already tagged) with its path, so
during backward the op being run is named by the node the engine is executing
(`torch._C._current_autograd_node()`). The hooks hold no tensors: they cannot move the peak.
"""
from __future__ import annotations

import torch
from torch import nn

_KEY = "layerwise_path"


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


class ModulePaths:
    """`with ModulePaths(module) as paths: ... paths.current()` -> the running block's path."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.stack: list[str] = []
        self.handles = []

    def __enter__(self) -> "ModulePaths":
        for name, mod in self.module.named_modules():
            if name:
                self.handles.append(mod.register_forward_pre_hook(self._enter(name)))
                self.handles.append(mod.register_forward_hook(self._leave(name), always_call=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _enter(self, name: str):
        def hook(_mod, _args):
            self.stack.append(name)
        return hook

    def _leave(self, name: str):
        def hook(_mod, _args, out):
            if self.stack and self.stack[-1] == name:
                self.stack.pop()
            _tag(out, name)
        return hook

    def current(self) -> str:
        if self.stack:
            return self.stack[-1]
        node = torch._C._current_autograd_node()
        return node.metadata.get(_KEY, "") if node is not None else ""


def _tag(out, name: str) -> None:
    todo = [t.grad_fn for t in _tensors(out) if t.grad_fn is not None]
    while todo:
        node = todo.pop()
        if node is None or _KEY in node.metadata:
            continue
        node.metadata[_KEY] = name
        todo.extend(fn for fn, _ in node.next_functions)
