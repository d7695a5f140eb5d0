"""Losses against torch's own cross-entropy and the focal-loss formula written out."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from layerwise.train.losses import LossFn, focal_loss, mixup, penalty

from _train_models import config


def test_focal_with_gamma_zero_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(32, 7, generator=g), torch.randint(0, 7, (32,), generator=g)
    assert focal_loss(logits, target, gamma=0.0).item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)


def test_focal_down_weights_easy_examples_by_the_formula():
    logits, target = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    p = math.exp(2) / (math.exp(2) + 1 + math.exp(-1))
    expected = -0.25 * (1 - p) ** 2 * math.log(p)  # Lin et al. 2017, eq. 5 with alpha = 0.25, gamma = 2
    assert focal_loss(logits, target, gamma=2.0, alpha=0.25).item() == pytest.approx(expected, rel=1e-6)


def test_balanced_class_weights_and_label_smoothing_match_torch():
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(16, 3, generator=g), torch.randint(0, 3, (16,), generator=g)
    fn = LossFn(config(class_weights="balanced", label_smoothing=0.1), "classify", [10, 30, 60])
    w = torch.tensor([100 / 30, 100 / 90, 100 / 180])  # n / (k * count_c)
    ref = F.cross_entropy(logits, target, weight=w, label_smoothing=0.1)
    assert fn(logits, target).item() == pytest.approx(ref.item(), rel=1e-6)


def test_lm_loss_flattens_positions():
    logits, target = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    fn = LossFn(config(), "lm")
    assert fn(logits, target).item() == pytest.approx(F.cross_entropy(logits.reshape(10, 11), target.reshape(10)).item(), rel=1e-6)


def test_mixup_is_a_convex_combination_and_rejects_tokens():
    torch.manual_seed(0)
    x, y = torch.randn(8, 4), torch.arange(8)
    mixed, ya, yb, lam = mixup(x, y, 0.4)
    assert 0.0 <= lam <= 1.0
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[yb])  # yb = y[perm] = perm here
    with pytest.raises(Exception, match="float inputs"):
        mixup(torch.zeros(2, 3, dtype=torch.long), y[:2], 0.4)


def test_l1_l2_penalty():
    w = [torch.tensor([1.0, -2.0]), torch.tensor([[3.0]])]
    assert float(penalty(w, 0.5, 0.0)) == pytest.approx(3.0)
    assert float(penalty(w, 0.0, 0.1)) == pytest.approx(1.4)
