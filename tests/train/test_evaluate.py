"""evaluate() against scikit-learn's metrics and torch's cross-entropy on the same predictions."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from layerwise.spec.errors import LayerwiseError
from layerwise.train.evaluate import evaluate
from layerwise.train.optim import make_optimizer

from _train_models import config, mlp, tiny_lm


def test_classification_metrics_match_sklearn():
    from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score

    torch.manual_seed(0)
    module = mlp().build()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(50, 1, 8, 8, generator=g), torch.randint(0, 10, (50,), generator=g)
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 50, 16)]
    r = evaluate(module, batches, "classify", n_classes=10)
    with torch.no_grad():
        logits = module(x)
    pred = logits.argmax(-1)
    assert r.loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert r.accuracy == pytest.approx((pred == y).float().mean().item())
    labels = list(range(10))
    assert r.confusion == confusion_matrix(y, pred, labels=labels).tolist()
    assert r.precision == pytest.approx(list(precision_score(y, pred, labels=labels, average=None, zero_division=0)))
    assert r.recall == pytest.approx(list(recall_score(y, pred, labels=labels, average=None, zero_division=0)))
    assert r.f1 == pytest.approx(list(f1_score(y, pred, labels=labels, average=None, zero_division=0)))
    assert r.macro_f1 == pytest.approx(f1_score(y, pred, labels=labels, average="macro", zero_division=0))
    assert module.training  # the training flag is restored


def test_lm_perplexity_is_exp_of_token_loss():
    torch.manual_seed(0)
    module = tiny_lm(seq=8, vocab=256).build()
    x = torch.randint(0, 256, (4, 8))
    y = torch.roll(x, -1, dims=1)
    r = evaluate(module, [(x, y)], "lm")
    with torch.no_grad():
        ref = F.cross_entropy(module(x).reshape(-1, 256), y.reshape(-1)).item()
    assert r.n == 32 and r.loss == pytest.approx(ref, rel=1e-5) and r.perplexity == pytest.approx(math.exp(ref), rel=1e-5)


def test_lion_needs_its_package():
    model = mlp()
    try:
        import lion_pytorch  # noqa: F401
    except ImportError:
        with pytest.raises(LayerwiseError, match="lion-pytorch"):
            make_optimizer(model.build(), model.body, config(optimizer="lion"))
