"""Distillation loss against its definition (Hinton et al. 2015, sec. 2), computed by hand."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from layerwise.compress.finetune import FinetuneConfig, distill_loss, train_loop
from layerwise.spec.errors import LayerwiseError


def test_soft_term_is_t_squared_kl_of_softened_distributions():
    torch.manual_seed(0)
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.randint(0, 5, (4,))
    T, alpha = 3.0, 0.7
    kl = 0.0
    for i in range(4):  # KL(p_t || p_s) = sum p_t (log p_t - log p_s), averaged over the batch
        pt = [math.exp(v / T) for v in t[i].tolist()]
        ps = [math.exp(v / T) for v in s[i].tolist()]
        pt = [v / sum(pt) for v in pt]
        ps = [v / sum(ps) for v in ps]
        kl += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps)) / 4
    want = alpha * T * T * kl + (1 - alpha) * float(F.cross_entropy(s, y))
    assert float(distill_loss(s, t, y, T, alpha)) == pytest.approx(want, rel=1e-5)
    assert float(distill_loss(s, t, y, T, 0.0)) == pytest.approx(float(F.cross_entropy(s, y)))


def test_bad_settings_are_clear_errors():
    with pytest.raises(LayerwiseError, match="temperature"):
        FinetuneConfig(temperature=0)
    with pytest.raises(LayerwiseError, match="alpha"):
        FinetuneConfig(alpha=1.5)
    with pytest.raises(LayerwiseError, match="teacher"):
        train_loop(torch.nn.Linear(2, 2), [], FinetuneConfig(alpha=0.5))


def test_distilled_student_moves_towards_teacher():
    """With alpha = 1 the student is fit to the teacher's soft labels only: its KL to the teacher falls."""
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).eval()
    student = torch.nn.Linear(6, 4)
    xs = [torch.randn(32, 6) for _ in range(8)]
    data = [(x, torch.zeros(32, dtype=torch.long)) for x in xs]  # hard labels ignored at alpha = 1

    def kl():
        with torch.no_grad():
            return sum(float(F.kl_div(F.log_softmax(student(x), -1), F.log_softmax(teacher(x), -1),
                                      log_target=True, reduction="batchmean")) for x in xs)

    before = kl()
    train_loop(student, data, FinetuneConfig(epochs=5, lr=5e-2, alpha=1.0, temperature=1.0), teacher=teacher)
    assert kl() < 0.5 * before
