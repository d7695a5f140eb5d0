"""RNN/LSTM/GRU against torch: params and names, shapes, and matmul FLOPs under FlopCounterMode
(oneDNN off, as count_flops runs it), forward and backward."""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerwise.blocks.rnn import RNN
from layerwise.measure.flops import count_flops
from layerwise.spec.counts import FlopCtx

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def rnn_cases(draw):
    n_layers = draw(st.integers(1, 3))
    spec = RNN(kind=draw(st.sampled_from(["rnn", "lstm", "gru"])), d_in=draw(st.integers(1, 6)),
               d_hidden=draw(st.integers(1, 6)), n_layers=n_layers, bidirectional=draw(st.booleans()),
               bias=draw(st.booleans()), output=draw(st.sampled_from(["sequence", "last"])),
               dropout=0.2 if n_layers > 1 and draw(st.booleans()) else 0.0, trainable=draw(st.booleans()))
    input_grad = draw(st.booleans()) or not spec.trainable  # something must need grad
    return spec, (draw(st.integers(1, 3)), draw(st.integers(1, 5)), spec.d_in), input_grad


@SETTINGS
@given(rnn_cases())
def test_rnn_matches_module(case):
    spec, shape, input_grad = case
    module = spec.build()
    params = list(module.parameters())
    assert sum(p.numel() for p in params if p.requires_grad) == spec.params().trainable
    assert sum(p.numel() for p in params if not p.requires_grad) == spec.params().frozen
    x = torch.randn(*shape, requires_grad=input_grad)
    measured = count_flops(module, x)
    analytic = spec.flops(shape, FlopCtx(input_grad=input_grad))
    assert (measured.forward, measured.backward) == (analytic.fwd_matmul, analytic.bwd_matmul)
    assert tuple(module(x).shape) == spec.out_shape(shape)


def test_parameter_names_are_torchs():
    names = {n for n, _ in RNN(kind="lstm", d_in=3, d_hidden=4, n_layers=2, bidirectional=True).build().named_parameters()}
    assert "rnn.weight_ih_l0" in names and "rnn.bias_hh_l1_reverse" in names and len(names) == 16


def test_lstm_params_textbook():
    """4 gates, each (d_in + H) * H weights + 2 * H biases (torch keeps bias_ih and bias_hh)."""
    assert RNN(kind="lstm", d_in=10, d_hidden=20).params().total == 4 * (10 * 20 + 20 * 20 + 2 * 20)


def test_last_output_is_the_final_hidden_state():
    spec = RNN(kind="gru", d_in=3, d_hidden=4, bidirectional=True, output="last")
    module = spec.build()
    x = torch.randn(2, 5, 3)
    seq = module.rnn(x)[0]  # (B, S, 2H)
    want = torch.cat([seq[:, -1, :4], seq[:, 0, 4:]], dim=-1)  # forward ends at S-1, reverse at 0
    torch.testing.assert_close(module(x), want)
