"""`--device cuda` without a GPU: the fake step runs on the CPU, and this torch-function mode makes
the CPU calls keep what CUDA's kernels keep (the cost reading's CUDA convention, cost/act_leaves.py
dropout_op and layernorm_op, cost/act_seq.py _sdpa).

- Dropout: ATen's `dropout` takes `native_dropout` (a 1-byte bool mask saved for backward) only for
  CUDA tensors (`is_fused_kernel_acceptable` in aten/src/ATen/native/Dropout.cpp); on the CPU it
  multiplies by a mask in the activation's dtype. Here F.dropout calls `torch.native_dropout`.
- Attention dropout under sdpa: CUDA's flash and memory-efficient kernels apply dropout inside the
  kernel (a seed and offset, no mask, no s x s probabilities); CPU's sdpa falls back to its math
  path when dropout_p > 0. Here sdpa runs with dropout_p = 0, i.e. CPU's flash kernel, which saves
  the same tensors (q, k, v, output, logsumexp) as CUDA's.
- Autocast: CUDA's autocast runs layer_norm in fp32 (its "fp32" op list); CPU's runs it in the
  input's dtype. Here layer_norm under autocast gets fp32 inputs and returns fp32.

Not emulated: the rest of CUDA's autocast lists (softmax, log_softmax, cross_entropy ... in fp32;
the cost reading does not model those either), cuBLAS workspaces, CUDA's RNG state tensors.
"""
from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


_ACTIVE = [0]  # steps under the conventions now (a count, not a thread-local: backward may run elsewhere)


class CudaConventions(TorchFunctionMode):
    """CPU calls rewritten to keep CUDA's saved tensors (see the module docstring)."""

    def __enter__(self):
        _ACTIVE[0] += 1
        return super().__enter__()

    def __exit__(self, *exc):
        _ACTIVE[0] -= 1
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.dropout:
            return _dropout(*args, **kwargs)
        if func is F.scaled_dot_product_attention:
            kwargs = {**kwargs, "dropout_p": 0.0}
            if len(args) > 4:  # dropout_p given by position (q, k, v, attn_mask, dropout_p, ...)
                args = (*args[:4], 0.0, *args[5:])
            return func(*args, **kwargs)
        if func is F.layer_norm and torch.is_autocast_enabled("cpu"):
            return _layer_norm_fp32(*args, **kwargs)
        return func(*args, **kwargs)


def _dropout(input, p=0.5, training=True, inplace=False):
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0
    return torch.native_dropout(input, p, True)[0]


def _layer_norm_fp32(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    with torch.autocast("cpu", enabled=False):
        return F.layer_norm(input.float(), normalized_shape, None if weight is None else weight.float(),
                            None if bias is None else bias.float(), eps)


def in_recompute(fn):
    """`fn` under the conventions while an emulating step runs: torch.utils.checkpoint recomputes
    the forward inside backward, where the mode entered around the step is not in force."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with cuda_conventions(_ACTIVE[0] > 0):
            return fn(*args, **kwargs)

    return run


def cuda_conventions(emulated: bool):
    """The mode while a fake `--device cuda` step runs on the CPU; nothing otherwise."""
    return CudaConventions() if emulated else contextlib.nullcontext()
