"""A tiny live-storage counter for the optimizer tests (H3's layerwise/measure/tracker.py is the
project's full tracker; this one only counts storages created while it is active)."""
from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class NewStoragePeak(TorchDispatchMode):
    """Peak bytes of storages allocated inside the mode and still alive (freed via weakref)."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()
        self._pre: set[int] = set()

    def ignore(self, tensors) -> None:
        """Storages that existed before (params, grads, state): never counted."""
        for t in tensors:
            self._pre.add(t.untyped_storage()._cdata)

    def _free(self, key: int, n: int) -> None:
        self._seen.discard(key)
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                key = st._cdata
                if key in self._seen or key in self._pre:
                    continue
                self._seen.add(key)
                n = st.nbytes()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(st, self._free, key, n)
        return out
