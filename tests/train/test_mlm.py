"""Masked-LM pre-training: BERT's 15% / 80-10-10 masking drawn anew each time (RoBERTa's dynamic
masking), the loss over the masked positions only, a bitwise resume, and refusals."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from layerwise.presets import get_preset
from layerwise.spec.errors import LayerwiseError
from layerwise.train.config import DataConfig
from layerwise.train.data import make_data
from layerwise.train.evaluate import evaluate
from layerwise.train.mlm import IGNORE, eval_masker, mask_tokens
from layerwise.train.trainer import train

from _train_models import config, resumed_equals_uninterrupted

CORPUS = DataConfig(source="pystdlib", max_bytes=30000)


def tiny_bert(vocab: int = 260):
    m = get_preset("bert-base", d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq=16, vocab_size=vocab,
                   pooler=False, mlm_head=True)
    return replace(m, task="mlm", defaults=())


def test_the_masking_recipe():
    torch.manual_seed(0)
    ids = torch.randint(0, 256, (400, 128))
    x, y = mask_tokens(ids, 256)
    chosen = y != IGNORE
    assert abs(chosen.float().mean().item() - 0.15) < 0.005
    assert torch.equal(y[chosen], ids[chosen]) and torch.equal(x[~chosen], ids[~chosen])
    masked, kept = (x[chosen] == 256).float().mean().item(), (x[chosen] == ids[chosen]).float().mean().item()
    assert abs(masked - 0.8) < 0.01 and abs(kept - (0.1 + 0.1 / 256)) < 0.01  # 10% unchanged + random hits
    assert (x < 257).all() and (x[chosen & (x != 256)] < 256).all()
    x2, _ = mask_tokens(ids, 256)
    assert not torch.equal(x, x2)  # dynamic: a new mask every time
    a, b = eval_masker(256)(ids, ids), eval_masker(256)(ids, ids)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # evaluation: the same positions every time


def test_pre_training_learns_and_resumes_bitwise(tmp_path):
    model = tiny_bert()
    cfg = config(data=CORPUS, max_steps=30, checkpoint_every=10, eval_every=10, optimizer="adamw", lr=3e-3)
    d = make_data(cfg, model)
    assert d.info.mask_id == 256 and torch.equal(d.train.dataset.x, d.train.dataset.y)
    torch.manual_seed(0)
    before = evaluate(model.build(), d.val, "mlm", mask_id=256)
    full, same = resumed_equals_uninterrupted(model, cfg, tmp_path, kill_step=20)
    assert same
    assert full.val["loss"] < before.loss - 1.0  # ln 260 = 5.56 untrained
    masked = sum(int((eval_masker(256)(x, y)[1] != IGNORE).sum()) for x, y in [next(iter(d.val))])
    assert before.n > 0 and masked <= before.n  # counts masked positions, not all tokens
    assert before.n < 0.3 * d.info.sizes["val"] * 16


def test_refusals(tmp_path):
    with pytest.raises(LayerwiseError, match="needs vocab_size >= 257"):
        make_data(config(data=CORPUS), tiny_bert(vocab=256))
    with pytest.raises(LayerwiseError, match="masked-LM trains with ce"):
        train(tiny_bert(), config(data=CORPUS, loss="focal", max_steps=1), tmp_path / "r")
