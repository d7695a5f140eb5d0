"""Parameter groups and schedules."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from layerwise.blocks import (Activation, BatchNorm2d, Conv2d, Embedding, Flatten, LayerNorm, Linear,
                              RMSNorm, Sequential)
from layerwise.spec.lora import apply_lora
from layerwise.train.optim import lr_factor, make_optimizer, split_decay

from _train_models import config


def _expected_no_decay(module: nn.Module) -> set[str]:
    """Independent of the spec: by torch module class and parameter name."""
    out = set()
    for mname, m in module.named_modules():
        for pname, _ in m.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if isinstance(m, (nn.Embedding, nn.LayerNorm, nn.BatchNorm2d, nn.RMSNorm)) or pname.startswith("bias"):
                out.add(full)
    return out


def test_weight_decay_excludes_exactly_biases_norms_and_embeddings():
    conv = Sequential(layers=(Conv2d(c_in=1, c_out=4, kernel=3, padding=1), BatchNorm2d(n_features=4),
                              Activation(kind="relu"), Flatten(), Linear(d_in=4 * 8 * 8, d_out=10)))
    text = Sequential(layers=(Embedding(vocab_size=50, d_model=8), LayerNorm(d_model=8), Linear(d_in=8, d_out=8),
                              RMSNorm(d_model=8), Linear(d_in=8, d_out=50, bias=False)))
    for body in (conv, text):
        torch.manual_seed(0)
        module = body.build()
        groups = split_decay(body, module)
        expected = _expected_no_decay(module)
        assert set(groups.no_decay) == expected and expected
        assert set(groups.decay) == {n for n, _ in module.named_parameters()} - expected
        assert not groups.unmatched
        opt, _ = make_optimizer(module, body, config(weight_decay=0.1))
        by_id = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
        for n, p in module.named_parameters():
            assert by_id[id(p)] == (0.0 if n in expected else 0.1), n


def test_lora_groups_hold_only_adapters():
    body = apply_lora(Sequential(layers=(Linear(d_in=8, d_out=8), Activation(kind="relu"), Linear(d_in=8, d_out=4))),
                      rank=2, targets=("*",))
    module = body.build()
    groups = split_decay(body, module)
    assert set(groups.decay) == {"0.lora_a.weight", "0.lora_b.weight", "2.lora_a.weight", "2.lora_b.weight"}
    assert groups.no_decay == []  # frozen base biases are not trained at all


@pytest.mark.parametrize("name", ["sgd", "sgd-momentum", "adagrad", "rmsprop", "adam", "adamw", "adafactor"])
def test_every_optimizer_steps(name):
    body = Sequential(layers=(Linear(d_in=4, d_out=3),))
    module = body.build()
    opt, _ = make_optimizer(module, body, config(optimizer=name))
    before = module[0].weight.detach().clone()
    module(torch.randn(5, 4)).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(before, module[0].weight)


def test_warmup_then_cosine_and_linear_at_chosen_steps():
    # warmup 10 of 110 steps: step s < 10 -> (s + 1) / 10; then p = (s - 10) / 100
    assert lr_factor(4, 110, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(9, 110, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 110, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(60, 110, 10, "cosine") == pytest.approx(0.5)  # cos(pi/2) = 0
    assert lr_factor(35, 110, 10, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(60, 110, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(85, 110, 10, "linear") == pytest.approx(0.25)
    assert lr_factor(60, 110, 10, "cosine", min_ratio=0.1) == pytest.approx(0.55)
    assert lr_factor(100, 110, 10, "constant") == 1.0


def test_cosine_without_warmup_matches_torch_scheduler():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
    for step in range(20):
        assert opt.param_groups[0]["lr"] == pytest.approx(lr_factor(step, 20, 0, "cosine"), abs=1e-9)
        opt.step()
        sched.step()
