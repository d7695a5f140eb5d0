"""Ground truth of saved activations: every tensor autograd saves passes through the pack hook of
`torch.autograd.graph.saved_tensors_hooks`; unique untyped storages, parameters and buffers
excluded, are what a block keeps for backward."""
from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def measured_saved(module: torch.nn.Module, x: torch.Tensor, *, autocast: str | None = None) -> int:
    own = {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in own and st.nbytes() > 0:
            seen[st.data_ptr()] = st.nbytes()
        return t

    ctx = torch.autocast("cpu", dtype=DTYPES[autocast]) if autocast else torch.autocast("cpu", enabled=False)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        out = module(x)
    del out
    return sum(seen.values())


def block_input(shape, *, tokens: int = 0, dtype: str = "fp32", grad: bool = True) -> torch.Tensor:
    """A block's input as a model gives it: token ids, or a float non-leaf that requires grad
    (a leaf would hit autocast's weight-cast cache, which only real parameters do)."""
    torch.manual_seed(0)
    if tokens:
        return torch.randint(0, tokens, shape)
    leaf = torch.randn(shape, dtype=DTYPES[dtype], requires_grad=grad)
    return leaf.clone() if grad else leaf
