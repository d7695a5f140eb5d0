"""`layerwise diagnose`: on hand-built stacks whose behaviour at initialisation is known.

- 20 Linear(256)+ReLU: Xavier's variance 1/fan_in (gain 1) halves the second moment at every ReLU,
  so the std falls by ~1/sqrt 2 a layer (~1e-3 after 20); Kaiming's 2/fan_in keeps it
  (Glorot & Bengio 2010; He et al. 2015, arXiv:1502.01852, eq. 10).
- A deep GPT-style stack: post-norm's FFN weight gradients are flat over depth, so its first
  layer's, relative to the last layer's, are smaller than pre-norm's, whose are largest at the bottom
  (Xiong et al. 2020, arXiv:2002.04745, fig. 3: the un-normalised residual path of pre-norm).
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from layerwise.blocks import Activation, Linear, Sequential
from layerwise.cli import main
from layerwise.presets import get_preset
from layerwise.spec import io as spec_io
from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import InputSpec, Model
from layerwise.train.diagnose import diagnose, reinit, synthetic_batch, with_norm_position

from _train_models import config, mlp

KEYS = {"path", "act_mean", "act_std", "grad_norm", "dead_frac", "saturated_frac"}


def relu_stack(n_layers=20, d=256, act="relu") -> Model:
    layers = []
    for _ in range(n_layers):
        layers += [Linear(d_in=d, d_out=d), Activation(kind=act)]
    return Model(name="stack", body=Sequential(layers=tuple(layers)), input=InputSpec(kind="features", shape=(d,)),
                 task="none")


def run(model: Model, init: str, batch=256, seed=0):
    torch.manual_seed(seed)
    module = model.build()
    reinit(module, init)
    x, y = synthetic_batch(model, batch, seed)
    return diagnose(module, x, y, model.task, init=init), module, x


@pytest.mark.parametrize("init", ["xavier_uniform", "xavier_normal"])
def test_xavier_shrinks_the_activations_of_a_relu_stack(init):
    d, _, _ = run(relu_stack(), init)
    relus = [s for s in d.layers if s.dead_frac is not None]
    assert len(relus) == 20
    # the second moment halves per layer: std ratio of consecutive ReLU outputs ~ 1/sqrt(2)
    per_layer = (relus[-1].act_std / relus[0].act_std) ** (1 / 19)
    assert abs(per_layer - 2 ** -0.5) < 0.03
    assert relus[-1].act_std < 0.01 * d.input_std
    assert any(f["kind"] == "vanishing_activations" and f["path"] == relus[-1].path for f in d.flags)


@pytest.mark.parametrize("init", ["kaiming_uniform", "kaiming_normal"])
def test_kaiming_keeps_the_variance_of_a_relu_stack(init):
    d, _, _ = run(relu_stack(), init)
    relus = [s for s in d.layers if s.dead_frac is not None]
    per_layer = (relus[-1].act_std / relus[0].act_std) ** (1 / 19)
    assert abs(per_layer - 1.0) < 0.03
    assert 0.3 < relus[-1].act_std / d.input_std < 3
    assert not [f for f in d.flags if "activations" in f["kind"]]


def test_the_numbers_are_those_of_the_module_run_by_hand():
    d, module, x = run(relu_stack(n_layers=3, d=64), "kaiming_normal", batch=32)
    h = x
    for i, layer in enumerate(module):
        h = layer(h)
        s = d.layers[i]
        assert s.path == str(i)
        assert s.act_mean == pytest.approx(float(h.detach().mean()), rel=1e-5)
        assert s.act_std == pytest.approx(float(h.detach().std()), rel=1e-5)
        if i % 2 == 1:  # a ReLU: units that are 0 for all 32 samples
            assert s.dead_frac == pytest.approx(float((h.detach() <= 0).all(0).float().mean()))
    loss = 0.5 * h.pow(2).mean()
    loss.backward()
    assert d.layers[0].grad_norm == pytest.approx(float(torch.cat([module[0].weight.grad.flatten(),
                                                                    module[0].bias.grad.flatten()]).norm()), rel=1e-5)
    assert d.layers[1].grad_norm is None and d.layers[1].saturated_frac is None


def test_dead_relus_and_saturated_tanh_are_flagged():
    model = relu_stack(n_layers=2, d=32)
    torch.manual_seed(0)
    module = model.build()
    with torch.no_grad():
        module[0].bias[:24] = -1e3  # 24 of 32 units can never fire
    x, y = synthetic_batch(model, 64)
    d = diagnose(module, x, y, model.task)
    assert d.layers[1].dead_frac == 0.75
    assert any(f["kind"] == "dead_relus" and f["path"] == "1" and "50%" in f["message"] for f in d.flags)
    tanh = relu_stack(n_layers=2, d=32, act="tanh")
    d, _, _ = run(tanh, "normal:3.0", batch=64)  # pre-activations of std ~17: almost all beyond |y| 0.99
    assert d.layers[1].saturated_frac > 0.8 and d.layers[1].dead_frac is None
    assert any(f["kind"] == "saturated" and f["path"] == "1" for f in d.flags)
    d, _, _ = run(tanh, "xavier_normal", batch=64)
    assert d.layers[1].saturated_frac < 0.1 and not d.flags


def _ffn_grads(position: str, n_layers: int, seed: int) -> list[float]:
    model = with_norm_position(get_preset("tiny-gpt", n_layers=n_layers, d_model=32, n_heads=2, d_ff=128,
                                          max_seq=16, vocab_size=64), position)
    d, _, _ = run(model, "default", batch=8, seed=seed)
    g = {s.path: s.grad_norm for s in d.layers}
    return [g[f"blocks.{i}.ffn.down_proj"] for i in range(n_layers)]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_deep_post_norm_stack_gives_its_first_layer_smaller_gradients_than_pre_norm(seed):
    # relative to the last layer's, so the loss scale cancels: pre-norm's bottom layers get the most
    # (the residual path skips every norm), post-norm's much less so. In absolute terms the
    # first layers' norms are of one order in both and which is larger depends on the seed
    # (post/pre 0.3 .. 5 over seeds at this size), so that is not what is asserted.
    pre, post = _ffn_grads("pre", 12, seed), _ffn_grads("post", 12, seed)
    assert post[0] / post[-1] < 0.7 * (pre[0] / pre[-1])
    assert pre[0] / pre[-1] > 2


def test_norm_position_and_init_are_refused_where_they_do_not_apply():
    with pytest.raises(LayerwiseError, match="no transformer blocks"):
        with_norm_position(relu_stack(2, 8), "post")
    with pytest.raises(LayerwiseError, match="normal:STD needs a positive number"):
        reinit(torch.nn.Linear(2, 2), "normal:-1")


def test_cli_json_variants_html_and_refusals(tmp_path, capsys):
    spec_io.dump(relu_stack(n_layers=20, d=64), tmp_path / "stack.yaml")
    assert main(["diagnose", str(tmp_path / "stack.yaml"), "--init", "xavier_uniform", "--batch", "64", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert set(one) == {"layers", "init", "norm_position", "flags"} and one["init"] == "xavier_uniform"
    assert all(set(layer) == KEYS for layer in one["layers"]) and len(one["layers"]) == 40
    assert one["flags"] and all("below 0.01x" in f["message"] for f in one["flags"] if "activ" in f["kind"])
    page = tmp_path / "d.html"
    assert main(["diagnose", str(tmp_path / "stack.yaml"), "--init", "xavier_uniform", "--init", "kaiming_normal",
                 "--html", str(page)]) == 0
    text = capsys.readouterr().out
    assert "variants side by side" in text and "vanishing_activations" in text
    assert "Activation std by layer" in page.read_text() and "kaiming_normal" in page.read_text()
    for args, message in ((["digits-cnn", "--norm-position", "post"], "no transformer blocks"),
                          (["digits-cnn", "--init", "he"], "--init 'he'"),
                          (["digits-cnn", "--which", "last"], "--which applies to a run directory")):
        assert main(["diagnose", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_a_runs_checkpoint_with_its_data(tmp_path, capsys):
    from layerwise.train.trainer import train

    train(mlp(), config(max_steps=2, eval_every=2), tmp_path / "r")
    assert main(["diagnose", str(tmp_path / "r"), "--which", "last", "--batch", "8", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["init"] == "checkpoint last" and [x["path"] for x in d["layers"]] == ["0", "1", "2", "3"]
    assert math.isfinite(d["layers"][-1]["grad_norm"])
    assert main(["diagnose", str(tmp_path / "r"), "--init", "kaiming_normal"]) == 2
    assert "not to the checkpoint" in capsys.readouterr().err
