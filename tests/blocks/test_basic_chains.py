"""Basic blocks chained in a Sequential: which inputs need grad follows from the earlier blocks
(an image never needs grad; a frozen first conv computes no grad_input, and neither does anything
before the first trainable block), and the sum matches FlopCounterMode on the built stack."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layerwise.blocks import (
    Activation, AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Embedding, Flatten, LayerNorm, LearnedPositions,
    Linear, MaxPool2d, SelectToken, Sequential,
)
from layerwise.measure.flops import count_flops
from layerwise.spec.counts import FlopCtx


def _check(net, x):
    module = net.build().train()
    params = {id(p): p for p in module.parameters()}.values()
    assert net.params().trainable == sum(p.numel() for p in params if p.requires_grad)
    needs_grad = net.params().trainable > 0
    counted = count_flops(module, x, backward=needs_grad)
    flops = net.flops(tuple(x.shape), FlopCtx(input_grad=False))
    assert (flops.fwd_matmul, flops.bwd_matmul) == (counted.forward, counted.backward)
    assert tuple(module(x).shape) == net.out_shape(tuple(x.shape))


@settings(max_examples=15, deadline=None)
@given(train=st.lists(st.booleans(), min_size=4, max_size=4), groups=st.sampled_from([1, 2, 4]))
def test_small_cnn(train, groups):
    net = Sequential(layers=(
        Conv2d(c_in=3, c_out=8, kernel=3, padding=1, trainable=train[0]),
        BatchNorm2d(n_features=8, trainable=train[1]),
        Activation(kind="relu"),
        MaxPool2d(kernel=2),
        Conv2d(c_in=8, c_out=8, kernel=3, stride=2, groups=groups, bias=False, trainable=train[2]),
        AdaptiveAvgPool2d(output_size=1),
        Flatten(),
        Dropout(p=0.1),
        Linear(d_in=8, d_out=5, trainable=train[3]),
    ))
    _check(net, torch.randn(2, 3, 9, 9))


@settings(max_examples=10, deadline=None)
@given(train=st.lists(st.booleans(), min_size=4, max_size=4), index=st.sampled_from([0, -1, "mean"]))
def test_small_token_classifier(train, index):
    net = Sequential(layers=(
        Embedding(vocab_size=11, d_model=8, trainable=train[0]),
        LearnedPositions(max_seq=6, d_model=8, trainable=train[1]),
        LayerNorm(d_model=8, trainable=train[2]),
        SelectToken(index=index),
        Linear(d_in=8, d_out=3, trainable=train[3]),
    ))
    _check(net, torch.randint(0, 11, (2, 5)))
