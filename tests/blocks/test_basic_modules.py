"""What the built basic modules compute, checked against the definitions they implement."""
from __future__ import annotations

import math

import pytest
import torch

from layerwise.blocks import (
    Activation, AdaptiveAvgPool1d, BatchNorm2d, ClsToken, Conv2d, Dropout, LearnedPositions, PatchEmbedding,
    SelectToken, Sequential, SinusoidalPositions,
)
from layerwise.blocks._sizes import adaptive_bins
from layerwise.spec.transform import freeze


def test_patch_embedding_linear_kind_equals_conv_kind_with_the_same_weights():
    torch.manual_seed(0)
    conv = PatchEmbedding(image_size=(8, 12), patch=(4, 3), c_in=3, d_model=5, kind="conv").build()
    linear = PatchEmbedding(image_size=(8, 12), patch=(4, 3), c_in=3, d_model=5, kind="linear").build()
    with torch.no_grad():
        linear.proj.weight.copy_(conv.proj.weight.reshape(5, -1))  # (d_model, C*ph*pw)
        linear.proj.bias.copy_(conv.proj.bias)
    x = torch.randn(2, 3, 8, 12)
    assert conv(x).shape == (2, 8, 5)  # N = (8/4) * (12/3)
    torch.testing.assert_close(linear(x), conv(x))


def test_sinusoidal_positions_follow_vaswani_section_3_5():
    # PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))
    # (Vaswani et al. 2017, "Attention Is All You Need", section 3.5)
    d, seq = 6, 5
    module = SinusoidalPositions(max_seq=8, d_model=d).build()
    assert list(module.buffers()) == [] and list(module.parameters()) == []
    x = torch.zeros(1, seq, d, dtype=torch.float64)
    table = module(x)[0]
    for pos in range(seq):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_learned_positions_add_the_first_s_rows():
    module = LearnedPositions(max_seq=7, d_model=4).build()
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(module(x) - x, module.weight[:3].expand(2, 3, 4))


def test_cls_token_is_prepended():
    module = ClsToken(d_model=4).build()
    x = torch.randn(2, 3, 4)
    out = module(x)
    torch.testing.assert_close(out[:, 0], module.weight[0].expand(2, 4))
    torch.testing.assert_close(out[:, 1:], x)


@pytest.mark.parametrize("index", [0, 2, -1, "mean"])
def test_select_token(index):
    x = torch.randn(2, 3, 4)
    expected = x.mean(dim=1) if index == "mean" else x[:, index]
    torch.testing.assert_close(SelectToken(index=index).build()(x), expected)


@pytest.mark.parametrize("length, out", [(l, o) for l in range(1, 10) for o in range(1, 6)])
def test_adaptive_bins_match_the_windows_torch_uses(length, out):
    # Row i of the Jacobian of adaptive average pooling is 1/|bin i| on bin i: count its support.
    pool = AdaptiveAvgPool1d(output_size=out).build()
    jac = torch.autograd.functional.jacobian(lambda x: pool(x)[0, 0], torch.randn(1, 1, length))
    assert adaptive_bins(length, out) == int((jac != 0).sum())


def _conv_relu_std(*after) -> float:
    torch.manual_seed(0)
    net = Sequential(layers=(Conv2d(c_in=32, c_out=64, kernel=3), *after)).build()
    return net[0].weight.std().item()


def test_conv_init_auto_looks_past_batchnorm_to_the_relu():
    fan_in, fan_out = 32 * 9, 64 * 9
    kaiming = math.sqrt(2 / fan_in)  # He et al. 2015, for ReLU
    xavier = math.sqrt(2 / (fan_in + fan_out))  # Glorot & Bengio 2010, gain 1
    assert _conv_relu_std(BatchNorm2d(n_features=64), Activation(kind="relu")) == pytest.approx(kaiming, rel=0.03)
    assert _conv_relu_std(Activation(kind="relu")) == pytest.approx(kaiming, rel=0.03)
    assert _conv_relu_std(BatchNorm2d(n_features=64)) == pytest.approx(xavier, rel=0.03)


def test_frozen_conv_and_batchnorm_keep_their_buffers():
    net = freeze(Sequential(layers=(Conv2d(c_in=3, c_out=4, kernel=3), BatchNorm2d(n_features=4))))
    p = net.params()
    module = net.build()
    assert p.trainable == 0 and p.frozen == 3 * 4 * 9 + 4 + 2 * 4
    assert p.buffers == sum(b.numel() for b in module.buffers()) == 2 * 4 + 1
    assert not any(q.requires_grad for q in module.parameters())


def test_dropout_zero_is_free_and_dropout_keeps_shape():
    assert Dropout(p=0.0).flops((2, 3)).total == 0
    flops = Dropout(p=0.5).flops((2, 3))
    assert flops.fwd_other == 12 and flops.bwd_other == 12 and flops.fwd_matmul == 0


def test_non_matmul_flops_scale_with_the_input():
    # Per-element costs: doubling the elements doubles every non-matmul count.
    for spec, shape, doubled in [
        (Activation(kind="gelu"), (2, 3, 4), (4, 3, 4)),
        (BatchNorm2d(n_features=3), (2, 3, 4, 4), (4, 3, 4, 4)),
        (SelectToken(index="mean"), (2, 3, 4), (2, 6, 4)),
    ]:
        a, b = spec.flops(shape), spec.flops(doubled)
        assert a.fwd_other > 0 and b.fwd_other == 2 * a.fwd_other and b.bwd_other == 2 * a.bwd_other


def test_a_fresh_tied_lm_starts_at_the_uniform_loss():
    # With embeddings at N(0, 0.02) (GPT-2/BERT/Llama's initializer_range), an untrained LM's
    # cross-entropy is close to ln(vocab_size); torch's N(0, 1) gave ~13.7 for tiny-gpt (vocab 256).
    import math

    import torch

    from layerwise.presets import get_preset

    torch.manual_seed(0)
    module = get_preset("tiny-gpt").build()
    ids = torch.randint(0, 256, (4, 64))
    loss = torch.nn.functional.cross_entropy(module(ids).reshape(-1, 256), ids.reshape(-1)).item()
    assert abs(loss - math.log(256)) < 0.3
