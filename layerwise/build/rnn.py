"""The recurrent module built from an `rnn` spec: torch's RNN/LSTM/GRU under the name `rnn`
(parameters rnn.weight_ih_l0, ...), plus the choice of output."""
from __future__ import annotations

import torch
from torch import nn

_CLASSES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RNNModule(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.rnn = _CLASSES[spec.kind](spec.d_in, spec.d_hidden, num_layers=spec.n_layers, bias=spec.bias,
                                       batch_first=True, dropout=float(spec.dropout),
                                       bidirectional=spec.bidirectional)
        self.rnn.requires_grad_(spec.trainable)
        self.last = spec.output == "last"
        self.dirs = 2 if spec.bidirectional else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, S, d_in)
        out, state = self.rnn(x)  # out (B, S, H * dirs); h_n (layers * dirs, B, H)
        if not self.last:
            return out
        h_n = state[0] if isinstance(state, tuple) else state  # LSTM: (h_n, c_n)
        return torch.cat(list(h_n[-self.dirs:]), dim=-1)  # the last layer's directions: (B, H * dirs)
