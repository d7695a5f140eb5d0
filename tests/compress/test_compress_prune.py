"""Structured pruning: the pruned spec's params/FLOPs equal its built module's (counted by torch),
and the pruned module computes exactly what the original computes with the removed units cut off."""
from __future__ import annotations

import pytest
import torch

from layerwise.compress.structured import _expand, prune_structured
from layerwise.compress.unstructured import prune_magnitude, sparsity_table
from layerwise.measure.flops import count_flops
from layerwise.spec.errors import LayerwiseError
import _compress_models as models

CASES = {
    "cnn": (models.cnn, (3, 1, 8, 8)),
    "vit": (models.vit, (3, 1, 8, 8)),
    "gpt": (models.tiny_gpt, (3, 12)),
    **{name: ((lambda n=name: models.preset(n)[0]), models.preset(name)[1]) for name in ("digits-cnn", "digits-vit", "tiny-gpt")},
}


def _input(name, shape):
    torch.manual_seed(1)
    return torch.randint(0, 64, shape) if name in ("gpt", "tiny-gpt") else torch.randn(shape)


def _trained_like(module):
    """Randomise BN statistics too, so a wrong channel copy would show."""
    torch.manual_seed(0)
    for n, b in module.named_buffers():
        if "running_var" in n:
            b.uniform_(0.5, 2.0)
        elif "running_mean" in n:
            b.normal_()
    return module.eval()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("amount", [0.5, 0.3])
def test_pruned_spec_matches_built_module(name, amount):
    make, shape = CASES[name]
    spec = make()
    step = prune_structured(spec, _trained_like(spec.build()), shape, amount)
    x = _input(name, shape)
    built = sum(p.numel() for p in step.module.parameters())
    assert step.body.params().total == built < spec.params().total
    counted = count_flops(step.module.eval(), x, backward=False).forward
    assert step.body.flops(shape).fwd_matmul == counted < spec.flops(shape).fwd_matmul


@pytest.mark.parametrize("name", sorted(CASES))
def test_pruned_module_equals_original_with_units_cut(name):
    """Zeroing the consumer slices (dim 1) of the removed units in the original must give the
    pruned module's output exactly: the kept weights were copied to the right places."""
    make, shape = CASES[name]
    spec = make()
    original = _trained_like(spec.build())
    step = prune_structured(spec, original, shape, 0.5)
    state = original.state_dict()
    with torch.no_grad():
        for g in step.groups:
            for tname, dim, width in g.slices:
                if dim != 1:
                    continue
                drop = torch.ones(state[tname].shape[1], dtype=torch.bool)
                drop[_expand(step.indices[g.path], width)] = False
                state[tname][:, drop] = 0
    x = _input(name, shape)
    with torch.no_grad():
        torch.testing.assert_close(step.module.eval()(x), original(x), rtol=1e-5, atol=1e-5)


def test_digits_cnn_prunes_conv_channels_and_hidden_units():
    body, shape, _ = models.preset("digits-cnn")
    step = prune_structured(body, _trained_like(body.build()), shape, 0.5)
    assert step.kept == {"0": (8, 16), "3": (16, 32), "8": (32, 64)}  # conv, conv, hidden linear
    assert {g.kind for g in step.groups} == {"conv", "mlp"}


def test_model_without_prunable_groups_is_one_clear_error():
    body, shape, _ = models.preset("text-gru")  # embedding -> rnn -> linear: nothing structured to cut
    with pytest.raises(LayerwiseError, match="no structured"):
        prune_structured(body, body.build(), shape, 0.5)


def test_zero_amount_keeps_everything():
    spec = models.vit()
    module = _trained_like(spec.build())
    step = prune_structured(spec, module, (2, 1, 8, 8), 0.0)
    assert step.body == spec
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(step.module(x), module(x))


@pytest.mark.parametrize("amount", [1.0, -0.1, 1.5])
def test_sparsity_outside_range_is_one_clear_error(amount):
    spec = models.cnn()
    with pytest.raises(LayerwiseError, match=r"\[0, 1\)"):
        prune_structured(spec, spec.build(), (2, 1, 8, 8), amount)
    with pytest.raises(LayerwiseError, match=r"\[0, 1\)"):
        prune_magnitude(spec.build(), amount)


def test_global_magnitude_pruning_hits_the_target():
    module = models.vit().build()
    prune_magnitude(module, 0.6, scope="global")
    rows = sparsity_table(module)
    total, zeros = sum(r.numel for r in rows), sum(r.zeros for r in rows)
    assert zeros == round(0.6 * total)
    assert len({round(r.sparsity, 2) for r in rows}) > 1  # global: layers differ


def test_per_layer_magnitude_pruning():
    module = models.cnn().build()
    prune_magnitude(module, 0.5, scope="layer")
    for r in sparsity_table(module):
        assert r.zeros == round(0.5 * r.numel)


def test_iterative_magnitude_pruning_keeps_pruned_weights_at_zero_while_fine_tuning():
    """Fine-tuning between stages must not regrow pruned weights: the final sparsity is the target."""
    from layerwise.compress.schedule import iterative_prune

    torch.manual_seed(0)
    spec = models.cnn()
    module = spec.build()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))

    def finetune(m):
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
        for _ in range(3):
            loss = torch.nn.functional.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    stages = iterative_prune(spec, module, (2, 1, 8, 8), 0.6, steps=3, kind="global", finetune=finetune)
    fractions = []
    for st in stages:
        rows = sparsity_table(st.module)
        fractions.append(sum(r.zeros for r in rows) / sum(r.numel for r in rows))
    assert fractions[0] == pytest.approx(0.2, abs=0.005) and fractions[1] == pytest.approx(0.4, abs=0.005)
    assert fractions[2] == pytest.approx(0.6, abs=0.005)
    assert not any("weight_orig" in n for n, _ in stages[-1].module.named_parameters())
