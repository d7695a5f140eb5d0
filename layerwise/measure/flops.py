"""FLOPs as PyTorch counts them: `torch.utils.flop_counter.FlopCounterMode`, with the CPU gaps closed.

On CPU, FlopCounterMode misses `aten._scaled_dot_product_flash_attention_for_cpu` (and its backward);
we register the same formulas torch uses for the CUDA flash kernels. RNNs run through oneDNN's
`mkldnn_rnn_layer`, which it does not count either, so RNN modules are run with oneDNN disabled
(the plain aten path decomposes into counted matmuls).
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils import flop_counter as fc

aten = torch.ops.aten


def _register_cpu_attention() -> None:
    fwd = aten._scaled_dot_product_flash_attention_for_cpu
    bwd = aten._scaled_dot_product_flash_attention_for_cpu_backward
    if fwd in fc.flop_registry:  # a newer torch may count it already
        return

    @fc.register_flop_formula(fwd)
    def _fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

    @fc.register_flop_formula(bwd)
    def _bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_register_cpu_attention()


@dataclass(frozen=True)
class CountedFlops:
    forward: int
    backward: int

    @property
    def total(self) -> int:
        return self.forward + self.backward


@contextmanager
def counting_context():
    """oneDNN off, so RNNs decompose into matmuls the counter sees."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def count_flops(module: torch.nn.Module, *inputs, backward: bool = True, loss_fn=None) -> CountedFlops:
    """Matmul-class FLOPs of one forward (and its backward) of `module(*inputs)`.

    The backward starts from `loss_fn(output)` (default: the sum of the output), whose own cost
    is not a matmul and so not counted.
    """
    with counting_context():
        with fc.FlopCounterMode(display=False) as counter:
            out = module(*inputs)
        forward = counter.get_total_flops()
        if not backward:
            return CountedFlops(forward, 0)
        loss = loss_fn(out) if loss_fn is not None else _sum(out)
        with fc.FlopCounterMode(display=False) as counter:
            loss.backward()
        return CountedFlops(forward, counter.get_total_flops())


def _sum(out):
    if isinstance(out, (tuple, list)):
        return sum(o.float().sum() for o in out if torch.is_tensor(o) and o.requires_grad)
    return out.float().sum()
