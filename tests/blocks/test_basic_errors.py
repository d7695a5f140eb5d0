"""Invalid basic-block specs and shapes raise SpecError with a message naming the field or shape."""
from __future__ import annotations

import pytest

from layerwise.blocks import (
    Activation, AdaptiveAvgPool2d, AvgPool1d, BatchNorm1d, BatchNorm2d, ClsToken, Conv1d, Conv2d, Dropout,
    Embedding, Flatten, LayerNorm, LearnedPositions, MaxPool1d, MaxPool2d, PatchEmbedding, RMSNorm,
    SelectToken, Sequential, SinusoidalPositions,
)
from layerwise.spec import io
from layerwise.spec.errors import SpecError

CONV = dict(c_in=4, c_out=8, kernel=3)

# (block class, fields, a fragment the message must contain)
BAD_FIELDS = [
    (Conv2d, {**CONV, "c_in": 0}, "conv2d.c_in must be a positive integer, got 0"),
    (Conv2d, {**CONV, "c_out": -8}, "conv2d.c_out must be a positive integer, got -8"),
    (Conv2d, {**CONV, "groups": 3}, "conv2d.c_in (4) must be divisible by groups (3)"),
    (Conv2d, {**CONV, "c_out": 6, "groups": 4}, "conv2d.c_out (6) must be divisible by groups (4)"),
    (Conv2d, {**CONV, "groups": 0}, "conv2d.groups must be a positive integer"),
    (Conv2d, {**CONV, "kernel": 0}, "conv2d.kernel must be a positive integer or a list of 2 of them, got 0"),
    (Conv2d, {**CONV, "kernel": (3, 3, 3)}, "conv2d.kernel must be a positive integer or a list of 2"),
    (Conv2d, {**CONV, "stride": (1, 0)}, "conv2d.stride must be"),
    (Conv2d, {**CONV, "padding": -1}, "conv2d.padding must be an integer >= 0"),
    (Conv2d, {**CONV, "dilation": 1.5}, "conv2d.dilation must be"),
    (Conv2d, {**CONV, "init": "xavierr"}, "did you mean 'xavier'?"),
    (Conv1d, {**CONV, "kernel": (3, 3)}, "conv1d.kernel must be a positive integer, got (3, 3)"),
    (MaxPool2d, {"kernel": 3, "padding": 2}, "maxpool2d.padding (2) must be at most half the kernel (3)"),
    (AvgPool1d, {"kernel": 0}, "avgpool1d.kernel must be a positive integer"),
    (MaxPool1d, {"kernel": 2, "stride": 0}, "maxpool1d.stride must be a positive integer"),
    (AdaptiveAvgPool2d, {"output_size": 0}, "adaptive_avgpool2d.output_size must be a positive integer"),
    (Flatten, {"start_dim": 0}, "flatten.start_dim must be a positive integer"),
    (Dropout, {"p": 1.5}, "dropout.p must be a probability in [0, 1], got 1.5"),
    (Dropout, {"p": True}, "dropout.p must be a finite number, got True (a bool)"),
    (BatchNorm2d, {"n_features": 0}, "batchnorm2d.n_features must be a positive integer"),
    (BatchNorm1d, {"n_features": 4, "eps": 0.0}, "batchnorm1d.eps must be a positive number"),
    (BatchNorm1d, {"n_features": 4, "momentum": 2}, "batchnorm1d.momentum must be in [0, 1] or null"),
    (LayerNorm, {"d_model": -1}, "layernorm.d_model must be a positive integer, got -1"),
    (RMSNorm, {"d_model": 8, "eps": -1e-6}, "rmsnorm.eps must be a positive number"),
    (Activation, {"kind": "rleu"}, "activation.kind must be one of"),
    (Activation, {"kind": "rleu"}, "did you mean 'relu'?"),
    (Activation, {"kind": "gelu_tan"}, "did you mean 'gelu_tanh'?"),
    (Activation, {"kind": "leaky_relu", "negative_slope": "big"}, "activation.negative_slope must be a finite number, got 'big'"),
    (Embedding, {"vocab_size": 0, "d_model": 4}, "embedding.vocab_size must be a positive integer"),
    (Embedding, {"vocab_size": 10, "d_model": 4, "padding_idx": 10}, "embedding.padding_idx must be an integer in [-10, 10)"),
    (LearnedPositions, {"max_seq": 0, "d_model": 4}, "learned_positions.max_seq must be a positive integer"),
    (SinusoidalPositions, {"max_seq": 8, "d_model": 5}, "sinusoidal_positions.d_model must be even"),
    (ClsToken, {"d_model": 0}, "cls_token.d_model must be a positive integer"),
    (PatchEmbedding, {"image_size": 30, "patch": 16, "c_in": 3, "d_model": 8}, "image_size 30x30 is not divisible by the patch 16x16"),
    (PatchEmbedding, {"image_size": 32, "patch": 16, "c_in": 3, "d_model": 8, "kind": "lin"}, "did you mean 'linear'?"),
    (PatchEmbedding, {"image_size": 32, "patch": 0, "c_in": 3, "d_model": 8}, "patch_embedding.patch must be a positive integer"),
    (SelectToken, {"index": "max"}, "select_token.index must be one of ['mean'], got 'max'"),
    (SelectToken, {"index": 1.0}, "select_token.index must be an integer or a string, got 1.0"),
]


@pytest.mark.parametrize("cls, kwargs, message", BAD_FIELDS, ids=lambda v: getattr(v, "type_name", None))
def test_bad_field_raises_spec_error_naming_it(cls, kwargs, message):
    with pytest.raises(SpecError) as err:
        cls(**kwargs)
    assert message in str(err.value)


# (spec, input shape, fragment of the shape error)
BAD_SHAPES = [
    (Conv2d(**CONV), (1, 3, 8, 8), "expected dim 1 (channels) 4, got 3"),
    (Conv2d(**CONV), (1, 4, 8), "conv2d expects (B, C, H, W), got shape (1, 4, 8)"),
    (Conv2d(c_in=4, c_out=8, kernel=5), (1, 4, 4, 9), "kernel 5 is larger than the padded input along spatial dim 0: 4 + 2*0 < 5"),
    (Conv1d(c_in=1, c_out=1, kernel=3, dilation=3), (1, 1, 6), "kernel 3 (dilated to 7) is larger"),
    (MaxPool1d(kernel=5), (1, 2, 3), "maxpool1d: kernel 5 is larger than the padded input"),
    (Flatten(start_dim=3), (2, 3, 4), "flatten.start_dim 3 needs an input of rank > 3"),
    (BatchNorm2d(n_features=4), (2, 4, 8), "batchnorm2d expects (B, C, H, W)"),
    (BatchNorm1d(n_features=4), (2, 5), "expected dim 1 (channels) 4, got 5"),
    (LayerNorm(d_model=8), (2, 3, 7), "expected last dim 8, got 7"),
    (Embedding(vocab_size=10, d_model=4), (2, 3, 4), "embedding expects token ids (B, S)"),
    (LearnedPositions(max_seq=4, d_model=8), (1, 5, 8), "sequence length 5 exceeds max_seq 4"),
    (ClsToken(d_model=8), (1, 5, 6), "expected last dim 8, got 6"),
    (PatchEmbedding(image_size=32, patch=16, c_in=3, d_model=8), (1, 3, 30, 32), "image 30x32 is not divisible by the patch 16x16"),
    (PatchEmbedding(image_size=32, patch=16, c_in=3, d_model=8), (1, 1, 32, 32), "expected dim 1 (channels) 3, got 1"),
    (SelectToken(index=3), (2, 3, 8), "select_token.index 3 is out of range for 3 tokens"),
]


@pytest.mark.parametrize("spec, shape, message", BAD_SHAPES, ids=lambda v: getattr(v, "type_name", None))
def test_bad_shape_raises_spec_error_naming_both(spec, shape, message):
    with pytest.raises(SpecError) as err:
        spec.out_shape(shape)
    assert message in str(err.value)


def test_mismatch_inside_sequential_names_the_child_path():
    net = Sequential(layers=(Conv2d(c_in=3, c_out=8, kernel=3), BatchNorm2d(n_features=8), Conv2d(**CONV)))
    with pytest.raises(SpecError) as err:
        net.out_shape((1, 3, 8, 8))
    assert str(err.value).startswith("2: expected dim 1 (channels) 4, got 8")
    nested = Sequential(layers=(Sequential(layers=(Flatten(), LayerNorm(d_model=10))),), names=("head",))
    with pytest.raises(SpecError) as err:
        nested.out_shape((2, 3, 3))
    assert str(err.value).startswith("head.1: expected last dim 10, got 9")


def test_bad_field_in_spec_data_names_the_block_path():
    data = {"type": "sequential", "layers": [{"type": "flatten"}, {"type": "activation", "kind": "gelu_tahn"}]}
    with pytest.raises(SpecError) as err:
        io.from_data(data)
    assert "layers.1" in str(err.value) and "did you mean 'gelu_tanh'?" in str(err.value)
