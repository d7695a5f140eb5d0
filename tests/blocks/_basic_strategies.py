"""Hypothesis strategies: a random valid (spec, input shape) for every basic leaf block type.

Sizes stay tiny so each example builds and runs in milliseconds. Every strategy draws the
input shape together with the spec, so window sizes always fit (invalid ones are tested apart).
"""
from __future__ import annotations

from hypothesis import strategies as st

from layerwise.blocks import (
    Activation, AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, BatchNorm1d, BatchNorm2d,
    ClsToken, Conv1d, Conv2d, Dropout, Embedding, Flatten, LayerNorm, LearnedPositions, MaxPool1d,
    MaxPool2d, PatchEmbedding, RMSNorm, SelectToken, SinusoidalPositions,
)
from layerwise.blocks.activation import KINDS

small = st.integers(1, 5)
batch = st.integers(2, 3)  # >= 2: batchnorm in training needs more than one value per channel


def int_or_tuple(values, n: int):
    """An int, or (for n > 1) a tuple of n ints, both forms the spec fields accept."""
    return st.one_of(values, st.tuples(*[values] * n)) if n > 1 else values


def per_dim(value, n):
    return value if isinstance(value, tuple) else (value,) * n


@st.composite
def conv(draw, nd):
    g = draw(st.integers(1, 3))
    kernel = draw(int_or_tuple(st.integers(1, 4), nd))
    dilation = draw(int_or_tuple(st.integers(1, 2), nd))
    padding = draw(int_or_tuple(st.integers(0, 2), nd))
    spec = (Conv1d if nd == 1 else Conv2d)(
        c_in=g * draw(st.integers(1, 3)), c_out=g * draw(st.integers(1, 3)), kernel=kernel,
        stride=draw(int_or_tuple(st.integers(1, 3), nd)), padding=padding, dilation=dilation, groups=g,
        bias=draw(st.booleans()), trainable=draw(st.booleans()),
    )
    spatial = []
    for k, d, p in zip(per_dim(kernel, nd), per_dim(dilation, nd), per_dim(padding, nd)):
        spatial.append(max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 4)))
    return spec, (draw(batch), spec.c_in, *spatial)


@st.composite
def pool(draw, cls, nd):
    kernel = draw(int_or_tuple(st.integers(1, 4), nd))
    padding = tuple(draw(st.integers(0, k // 2)) for k in per_dim(kernel, nd))
    stride = draw(st.one_of(st.none(), int_or_tuple(st.integers(1, 3), nd)))
    spec = cls(kernel=kernel, stride=stride, padding=padding if nd > 1 else padding[0])
    spatial = [max(1, k - 2 * p) + draw(st.integers(0, 4)) for k, p in zip(per_dim(kernel, nd), padding)]
    return spec, (draw(batch), draw(small), *spatial)


@st.composite
def adaptive(draw, cls, nd):
    spec = cls(output_size=draw(int_or_tuple(st.integers(1, 4), nd)))
    return spec, (draw(batch), draw(small), *[draw(st.integers(1, 9)) for _ in range(nd)])


@st.composite
def flatten(draw):
    shape = (draw(batch), *[draw(small) for _ in range(draw(st.integers(1, 3)))])
    return Flatten(start_dim=draw(st.integers(1, len(shape) - 1))), shape


@st.composite
def dropout(draw):
    return Dropout(p=draw(st.sampled_from([0.0, 0.1, 0.5]))), (draw(batch), draw(small), draw(small))


@st.composite
def batchnorm(draw, nd):
    c = draw(small)
    spec = (BatchNorm1d if nd == 1 else BatchNorm2d)(
        n_features=c, eps=draw(st.sampled_from([1e-5, 1e-3])), momentum=draw(st.sampled_from([0.1, 0.5, None])),
        affine=draw(st.booleans()), trainable=draw(st.booleans()),
    )
    if nd == 1:
        tail = draw(st.sampled_from([(), (draw(small),)]))
        return spec, (draw(batch), c, *tail)
    return spec, (draw(batch), c, draw(small), draw(small))


@st.composite
def row_norm(draw, cls):
    d = draw(st.integers(1, 8))
    kwargs = {"bias": draw(st.booleans())} if cls is LayerNorm else {}
    spec = cls(d_model=d, trainable=draw(st.booleans()), **kwargs)
    return spec, draw(st.sampled_from([(draw(batch), d), (draw(batch), draw(small), d)]))


@st.composite
def activation(draw):
    spec = Activation(kind=draw(st.sampled_from(KINDS)), negative_slope=draw(st.sampled_from([0.01, 0.2])))
    return spec, (draw(batch), draw(small), draw(small))


@st.composite
def embedding(draw):
    vocab = draw(st.integers(1, 20))
    pad = draw(st.one_of(st.none(), st.integers(-vocab, vocab - 1)))
    spec = Embedding(vocab_size=vocab, d_model=draw(st.integers(1, 8)), padding_idx=pad, trainable=draw(st.booleans()))
    return spec, (draw(batch), draw(small))


@st.composite
def positions(draw, cls):
    d = 2 * draw(st.integers(1, 4))
    max_seq = draw(st.integers(1, 8))
    kwargs = {"trainable": draw(st.booleans())} if cls is LearnedPositions else {}
    return cls(max_seq=max_seq, d_model=d, **kwargs), (draw(batch), draw(st.integers(1, max_seq)), d)


@st.composite
def cls_token(draw):
    d = draw(st.integers(1, 8))
    return ClsToken(d_model=d, trainable=draw(st.booleans())), (draw(batch), draw(small), d)


@st.composite
def patch_embedding(draw):
    patch = draw(int_or_tuple(st.integers(1, 4), 2))
    ph, pw = per_dim(patch, 2)
    gh, gw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    image = (gh * ph, gw * pw)
    spec = PatchEmbedding(
        image_size=image if image[0] != image[1] or draw(st.booleans()) else image[0], patch=patch,
        c_in=draw(st.integers(1, 3)), d_model=draw(st.integers(1, 6)), kind=draw(st.sampled_from(["conv", "linear"])),
        bias=draw(st.booleans()), trainable=draw(st.booleans()),
    )
    return spec, (draw(batch), spec.c_in, *image)


@st.composite
def select_token(draw):
    seq = draw(small)
    index = draw(st.one_of(st.just("mean"), st.integers(-seq, seq - 1)))
    return SelectToken(index=index), (draw(batch), seq, draw(small))


# type name -> strategy of (spec, input shape); test_basic_readings checks this covers every type.
CASES = {
    "embedding": embedding(),
    "learned_positions": positions(LearnedPositions),
    "sinusoidal_positions": positions(SinusoidalPositions),
    "cls_token": cls_token(),
    "patch_embedding": patch_embedding(),
    "select_token": select_token(),
    "conv1d": conv(1),
    "conv2d": conv(2),
    "maxpool1d": pool(MaxPool1d, 1),
    "maxpool2d": pool(MaxPool2d, 2),
    "avgpool1d": pool(AvgPool1d, 1),
    "avgpool2d": pool(AvgPool2d, 2),
    "adaptive_avgpool1d": adaptive(AdaptiveAvgPool1d, 1),
    "adaptive_avgpool2d": adaptive(AdaptiveAvgPool2d, 2),
    "flatten": flatten(),
    "dropout": dropout(),
    "batchnorm1d": batchnorm(1),
    "batchnorm2d": batchnorm(2),
    "layernorm": row_norm(LayerNorm),
    "rmsnorm": row_norm(RMSNorm),
    "activation": activation(),
}
