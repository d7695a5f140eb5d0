"""Recurrent layers: Elman RNN (tanh), LSTM, GRU, as torch.nn.RNN/LSTM/GRU with batch_first.

x (B, S, d_in) -> output "sequence": (B, S, d_hidden * dirs), or "last": (B, d_hidden * dirs),
the final hidden state of the last layer (both directions concatenated when bidirectional).
Parameters, per layer l and direction, with G gates (rnn 1, lstm 4, gru 3) and d_l = d_in for
l = 0 else d_hidden * dirs: weight_ih (G*H, d_l), weight_hh (G*H, H), bias_ih and bias_hh (G*H).

Matmul FLOPs (as FlopCounterMode counts PyTorch's aten path with oneDNN off), per layer-direction:
  forward     2*B*S*G*H*(d_l + H): input and hidden projections at every step
  backward    grad weights (if trainable) 2*B*S*G*H*(d_l + H); the recurrence's grad_hidden
              2*B*(S-1)*G*H*H (the zero initial state needs none); grad_input 2*B*S*G*H*d_l
              (layer 0 only if the input needs grad)
Other, per hidden unit per step (stated; backward the same): rnn 2 (add, tanh); lstm 22 (4 adds,
3 sigmoids at 4, 2 tanh at 1, cell update 3, output 1); gru 17 (2 adds, 2 sigmoids at 4, tanh
input 3, blend 4).
"""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.spec.base import Block, Shape, expect_last, expect_rank, register
from layerwise.spec.counts import FlopCtx, Flops, Params
from layerwise.spec.errors import SpecError

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
OTHER_PER_UNIT = {"rnn": 2, "lstm": 22, "gru": 17}
OUTPUTS = ("sequence", "last")


# torch's RNN modules name, hold and run every layer apart: the readings list them one by one
MAX_LAYERS = 1024


@register("rnn")
@dataclass(frozen=True, kw_only=True)
class RNN(Block):
    kind: str  # rnn | lstm | gru
    d_in: int
    d_hidden: int
    n_layers: int = 1
    bidirectional: bool = False
    bias: bool = True
    output: str = "sequence"  # sequence | last (the final hidden state, for classification)
    dropout: float = 0.0  # between stacked layers (torch applies none after the last)
    trainable: bool = True

    def __post_init__(self):
        self._one_of("kind", tuple(GATES))
        self._positive("d_in", "d_hidden", "n_layers")
        if self.n_layers > MAX_LAYERS:
            raise SpecError(f"rnn.n_layers {self.n_layers}: torch's nn.{self.kind.upper()} holds and runs its layers "
                            f"one by one (weight_ih_l0, weight_ih_l1, ...); at most {MAX_LAYERS}")
        self._one_of("output", OUTPUTS)
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise SpecError(f"rnn.dropout must be in [0, 1), got {p!r}")
        if p > 0 and self.n_layers == 1:
            raise SpecError("rnn.dropout acts between stacked layers; it needs n_layers > 1")

    @property
    def dirs(self) -> int:
        return 2 if self.bidirectional else 1

    def _layer_inputs(self) -> list[int]:
        return [self.d_in if l == 0 else self.d_hidden * self.dirs for l in range(self.n_layers)]

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_rank(self, in_shape, 3, "(B, S, d_in)")
        expect_last(self, in_shape, self.d_in)
        b, s, _ = in_shape
        width = self.d_hidden * self.dirs
        return (b, s, width) if self.output == "sequence" else (b, width)

    def own_params(self) -> Params:
        g, h = GATES[self.kind], self.d_hidden
        per_dir = sum(g * h * (d + h) + (2 * g * h if self.bias else 0) for d in self._layer_inputs())
        n = per_dir * self.dirs
        return Params(trainable=n) if self.trainable else Params(frozen=n)

    def depth(self) -> int:
        return self.n_layers

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        b, s, _ = in_shape
        g, h = GATES[self.kind], self.d_hidden
        flows = ctx.input_grad or self.trainable  # does any gradient run through the layers?
        fwd = bwd = 0
        for l, d in enumerate(self._layer_inputs()):
            step = 2 * b * g * h  # one (token, output unit) row of a gate matmul, per input dim
            fwd += step * s * (d + h)
            bwd += step * s * (d + h) if self.trainable else 0  # grad_weight_ih, grad_weight_hh
            bwd += step * (s - 1) * h if flows else 0  # grad of h_{t-1} through weight_hh
            bwd += step * s * d if (l > 0 and flows) or ctx.input_grad else 0  # grad of the layer input
        other = OTHER_PER_UNIT[self.kind] * b * s * h * self.n_layers * self.dirs
        return Flops(fwd_matmul=fwd * self.dirs, bwd_matmul=bwd * self.dirs, fwd_other=other,
                     bwd_other=other if flows else 0)

    def build(self):
        from layerwise.build.rnn import RNNModule

        return RNNModule(self)
