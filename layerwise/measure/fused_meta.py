"""Meta kernels for the fused optimizer steps torch 2.13 ships without one (_fused_sgd_,
_fused_adagrad_, and the tensor-lr overloads of _fused_adam_/_fused_adamw_).

Without a Meta kernel FakeTensorMode runs an op through `run_fallback_kernel`: every fake argument
is made real (allocated, filled) and the CPU kernel runs. For a 7B model's fused SGD step that is
~14 GB of real tensors and tens of minutes per step, for an op that allocates nothing: each of these
updates its lists in place and returns `()` (native_functions.yaml), which is all a Meta kernel has to
say. The real kernels allocate no scratch either (aten/src/ATen/native/FusedSGD.cpp, FusedAdagrad.cpp,
FusedAdam.cpp work element by element), so the tracker's count is unchanged.
"""
from __future__ import annotations

import torch

_OPS = ("_fused_sgd_", "_fused_sgd_.tensor_lr", "_fused_adagrad_", "_fused_adagrad_.tensor_lr",
        "_fused_adam_.tensor_lr", "_fused_adamw_.tensor_lr")


def _in_place(*args, **kwargs) -> None:
    return None


def _register() -> torch.library.Library:
    lib = torch.library.Library("aten", "IMPL")  # its registrations last while the object does: kept in _LIB
    for name in _OPS:
        packet, _, overload = name.partition(".")
        op = getattr(getattr(torch.ops.aten, packet), overload or "default")
        if not torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "Meta"):  # a later torch's own wins
            lib.impl(name, _in_place, "Meta")
    return lib


_LIB = _register()
