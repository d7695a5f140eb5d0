"""The regression task: diabetes from scikit-learn's own files, MSE/MAE/R^2 against scikit-learn on
the same predictions, the loss options and refusals, a bitwise resume, and an ensemble's mean."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from layerwise.blocks import Activation, Linear, Sequential
from layerwise.cli import main
from layerwise.spec import io as spec_io
from layerwise.spec.model import InputSpec, Model
from layerwise.train import data_sources as src
from layerwise.train.config import DataConfig
from layerwise.train.data import make_data
from layerwise.train.evaluate import evaluate
from layerwise.train.run import load_run
from layerwise.train.trainer import train

from _train_models import config, mlp, resumed_equals_uninterrupted

DIABETES = DataConfig(source="diabetes")


def reg_mlp(n_out: int = 1) -> Model:
    body = Sequential(layers=(Linear(d_in=10, d_out=16), Activation(kind="relu"), Linear(d_in=16, d_out=n_out)))
    return Model(name="reg", body=body, input=InputSpec(kind="features", shape=(10,)), task="regress")


def test_diabetes_is_sklearns():
    from sklearn.datasets import load_diabetes

    x, y = src.read_sklearn_regression("diabetes")
    ref = load_diabetes(scaled=False)
    assert x.shape == (442, 10) and np.allclose(x.numpy(), ref.data, rtol=1e-6)
    assert np.allclose(y.numpy(), ref.target)


def test_metrics_match_sklearn_in_the_targets_units():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    model = reg_mlp()
    d = make_data(config(data=DIABETES, loss="mse"), model)
    torch.manual_seed(0)
    module = model.build()
    r = evaluate(module, d.test, "regress", target_scale=d.info.target_scale)
    xs, ys = zip(*list(d.test))
    with torch.no_grad():
        p = module(torch.cat(xs)).double()
    mean, std = (torch.tensor(v, dtype=torch.float64) for v in d.info.target_scale)
    y_true, y_pred = (torch.cat(ys).double() * std + mean).numpy(), (p * std + mean).numpy()
    # the targets come back in the data's units: the raw diabetes scores of the test samples
    _, raw = src.read_sklearn_regression("diabetes")
    assert set(np.round(y_true.ravel()).astype(int)) <= set(raw.numpy().astype(int))
    assert r.mse == pytest.approx(mean_squared_error(y_true, y_pred), rel=1e-6)
    assert r.mae == pytest.approx(mean_absolute_error(y_true, y_pred), rel=1e-6)
    assert r.r2 == pytest.approx(r2_score(y_true, y_pred), rel=1e-6)
    assert r.accuracy is None and r.n == 88


def test_training_learns_and_resumes_bitwise(tmp_path):
    cfg = config(data=DIABETES, loss="mse", optimizer="adamw", lr=1e-2, batch_size=32, max_steps=150,
                 checkpoint_every=40, eval_every=25, input_noise=0.05, max_norm=3.0)
    full, same = resumed_equals_uninterrupted(reg_mlp(), cfg, tmp_path, kill_step=100)
    assert same
    assert full.test["r2"] > 0.25  # measured 0.33 (the untrained model's is below 0; linear regression's ~0.45)
    mae = train(reg_mlp(), cfg.with_overrides(loss="mae"), tmp_path / "mae")
    assert mae.test["r2"] > 0.25 and mae.test["mae"] != full.test["mae"]


def test_cli_default_loss_ensemble_and_refusals(tmp_path, capsys):
    spec_io.dump(reg_mlp(), tmp_path / "reg.yaml")
    spec_io.dump(mlp(), tmp_path / "mlp.yaml")
    runs = []
    for seed in ("0", "1"):
        run = tmp_path / f"r{seed}"
        assert main(["train", str(tmp_path / "reg.yaml"), "--data", "diabetes", "--max-steps", "20", "--seed", seed,
                     "--out", str(run), "--json", "--quiet"]) == 0
        assert json.loads(capsys.readouterr().out)["test"]["r2"] is not None
        runs.append(str(run))
    assert "loss: mse" in (tmp_path / "r0" / "config.yaml").read_text()  # the regression default
    assert main(["evaluate", *runs, "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    members = [load_run(r).module for r in runs]
    d = make_data(load_run(runs[0]).config, reg_mlp())
    xs, ys = zip(*list(d.test))
    with torch.no_grad():
        p = sum(m(torch.cat(xs)) for m in members) / 2
    assert e["loss"] == pytest.approx(float(torch.nn.functional.mse_loss(p, torch.cat(ys))), rel=1e-5)
    cases = ((["reg.yaml", "--data", "diabetes", "--loss", "focal"], "a regression model trains with --loss mse or mae"),
             (["mlp.yaml", "--data", "digits", "--loss", "mse"], "is for regression"),
             (["reg.yaml", "--data", "wine"], "a regression model needs real targets"),
             (["mlp.yaml", "--data", "diabetes"], "is a regression dataset"),
             (["reg.yaml", "--data", "diabetes", "--monitor", "val_accuracy"], "a regression run monitors val_loss"),
             (["reg.yaml", "--data", "diabetes", "--balance", "oversample"], "applies to classification"))
    for args, message in cases:
        code = main(["train", str(tmp_path / args[0]), *args[1:], "--max-steps", "1", "--batch", "4",
                     "--out", str(tmp_path / "x"), "--overwrite"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
