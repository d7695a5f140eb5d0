"""RoPE: rotations preserve norms, depend only on relative position, and the scalings do what their
papers say (linear: position / s; NTK: base * s^(d/(d-2)); YaRN: the ramp between the two)."""
from __future__ import annotations

import math

import pytest
import torch

from layerwise.blocks.rope import Rope
from layerwise.spec.counts import Params


def _rotate(spec: Rope, x: torch.Tensor, positions) -> torch.Tensor:
    module = spec.build()
    return module(x, torch.tensor(positions, dtype=torch.float64))


@pytest.mark.parametrize("scaling,factor", [("none", 1.0), ("linear", 4.0), ("ntk", 8.0)])
def test_rotation_preserves_norms(scaling, factor):
    spec = Rope(d_head=16, scaling=scaling, factor=factor)
    x = torch.randn(3, 7, 16)
    y = _rotate(spec, x, list(range(100, 107)))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    assert not torch.allclose(y, x)


def test_position_zero_is_the_identity():
    x = torch.randn(2, 1, 8)
    torch.testing.assert_close(_rotate(Rope(d_head=8), x, [0]), x)


def test_scores_depend_only_on_relative_position():
    spec = Rope(d_head=8, base=500.0)
    q, k = torch.randn(1, 8), torch.randn(1, 8)
    a = (_rotate(spec, q, [3]) * _rotate(spec, k, [1])).sum()
    b = (_rotate(spec, q, [12]) * _rotate(spec, k, [10])).sum()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_linear_scaling_equals_position_over_factor():
    """Position interpolation (Chen et al. 2023): rope_s(p) == rope(p / s)."""
    x = torch.randn(5, 8)
    scaled = _rotate(Rope(d_head=8, scaling="linear", factor=4.0), x, [0, 1, 6, 13, 40])
    plain = _rotate(Rope(d_head=8), x, [0, 0.25, 1.5, 3.25, 10.0])
    torch.testing.assert_close(scaled, plain)


def test_ntk_keeps_the_highest_and_interpolates_the_lowest_frequency():
    plain, ntk = Rope(d_head=16).inv_freq(), Rope(d_head=16, scaling="ntk", factor=8.0).inv_freq()
    assert ntk[0] == plain[0] == 1.0
    assert math.isclose(ntk[-1], plain[-1] / 8.0, rel_tol=1e-12)  # base' = base * s^(d/(d-2))
    assert all(p / 8.0 <= n <= p for p, n in zip(plain, ntk))


def test_yarn_ramp_between_extrapolation_and_interpolation():
    """YaRN (Peng et al. 2023, arXiv 2309.00071): frequencies making more than beta=32 turns over
    the original context are kept; fewer than alpha=1 are divided by s; cos/sin are scaled by
    0.1 ln(s) + 1."""
    d, s, original = 64, 4.0, 256
    plain, yarn = Rope(d_head=d).inv_freq(), Rope(d_head=d, scaling="yarn", factor=s, max_seq=original).inv_freq()
    turns = [original * f / (2 * math.pi) for f in plain]
    assert any(t > 32 for t in turns) and any(t < 1 for t in turns) and any(1 < t < 32 for t in turns)
    for f, y, t in zip(plain, yarn, turns):
        if t >= 32:
            assert y == f
        elif t <= 1:
            assert math.isclose(y, f / s, rel_tol=1e-12)
        else:
            assert f / s < y < f
    spec = Rope(d_head=d, scaling="yarn", factor=s, max_seq=original)
    assert math.isclose(spec.attention_factor(), 0.1 * math.log(4.0) + 1.0)
    x = torch.randn(2, d)
    y = _rotate(spec, x, [0, 5])
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1) * spec.attention_factor())


def test_rope_has_no_parameters_or_buffers():
    module = Rope(d_head=8, scaling="yarn", factor=2.0, max_seq=64).build()
    assert list(module.parameters()) == [] and list(module.buffers()) == []
    assert Rope(d_head=8).params() == Params()


def test_partial_rotary_rotates_only_the_leading_dims():
    # Phi-2 (partial_rotary_factor 0.4: 32 of 80 dims) and GPT-NeoX (rotary_pct 0.25) leave the
    # trailing dims of each head untouched.
    import torch

    from layerwise.spec.base import block_class

    rope = block_class("rope")(d_head=8, rotary_dim=4).build()
    full = block_class("rope")(d_head=4).build()
    x = torch.randn(2, 3, 5, 8)
    y = rope(x)
    torch.testing.assert_close(y[..., 4:], x[..., 4:])
    torch.testing.assert_close(y[..., :4], full(x[..., :4]))
    assert not torch.allclose(y[..., :4], x[..., :4])
