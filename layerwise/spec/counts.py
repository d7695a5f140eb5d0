"""Typed, exact-integer results shared by every reading: parameter counts and FLOPs."""
from __future__ import annotations

from dataclasses import dataclass, fields


def _add(a, b):
    return type(a)(**{f.name: getattr(a, f.name) + getattr(b, f.name) for f in fields(a)})


def _scale(a, k: int):
    return type(a)(**{f.name: getattr(a, f.name) * k for f in fields(a)})


@dataclass(frozen=True)
class Params:
    """Parameter counts of a block. Buffers (BatchNorm running stats) are not parameters."""

    trainable: int = 0
    frozen: int = 0
    buffers: int = 0

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    def freeze(self) -> "Params":
        return Params(trainable=0, frozen=self.total, buffers=self.buffers)

    __add__ = _add
    __mul__ = _scale


@dataclass(frozen=True)
class Flops:
    """FLOPs of one block for one forward (and its backward); 1 multiply-add = 2 FLOPs.

    `*_matmul` is what `torch.utils.flop_counter.FlopCounterMode` counts (mm, bmm, addmm, conv,
    attention); `*_other` is everything else (norms, softmax, activations, elementwise, pooling),
    counted with the per-element costs stated next to each block.
    `causal_skippable` is the part of `fwd_matmul` spent on the masked-out half of causal attention
    scores/values: kernels compute it, a causal-aware count would not.
    """

    fwd_matmul: int = 0
    fwd_other: int = 0
    bwd_matmul: int = 0
    bwd_other: int = 0
    causal_skippable: int = 0

    @property
    def forward(self) -> int:
        return self.fwd_matmul + self.fwd_other

    @property
    def backward(self) -> int:
        return self.bwd_matmul + self.bwd_other

    @property
    def total(self) -> int:
        return self.forward + self.backward

    __add__ = _add
    __mul__ = _scale


@dataclass(frozen=True)
class FlopCtx:
    """What a block's FLOPs depend on besides its input shape."""

    input_grad: bool = True  # the input requires grad, so backward also computes grad_input
    attention: str = "sdpa"  # eager | sdpa: PyTorch's sdpa backward recomputes the scores (5 bmms vs 4)
    device: str = "cpu"  # cpu | cuda: on CPU, sdpa with dropout in training falls back to its math path
