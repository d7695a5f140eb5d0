"""`evaluate RUN RUN2 ...`: soft voting over runs, checked against the members run by hand and
scikit-learn's metrics on the same predictions."""
from __future__ import annotations

import json

import pytest
import torch

from layerwise.cli import main
from layerwise.train.data import make_data
from layerwise.train.run import load_run
from layerwise.train.trainer import train

from _train_models import config, mlp, tiny_lm


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    for seed in (0, 1):
        train(mlp(), config(max_steps=6, eval_every=6, seed=seed), root / f"r{seed}")
    return root


def test_an_ensemble_averages_the_members_probabilities(two_runs, capsys):
    from sklearn.metrics import accuracy_score, f1_score

    dirs = [str(two_runs / "r0"), str(two_runs / "r1")]
    assert main(["evaluate", *dirs, "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["run_dirs"] == dirs and len(e["checkpoints"]) == 2
    runs = [load_run(d) for d in dirs]
    d = make_data(runs[0].config, runs[0].model)
    xs, ys = zip(*list(d.test))
    x, y = torch.cat(xs), torch.cat(ys)
    with torch.no_grad():
        probs = sum(torch.softmax(r.module(x), -1) for r in runs) / 2
    pred = probs.argmax(-1)
    assert e["n"] == len(y)
    assert e["loss"] == pytest.approx(float(torch.nn.functional.nll_loss(probs.log(), y)), rel=1e-5)
    assert e["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert e["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", labels=list(range(10)), zero_division=0))
    singles = []
    for one in dirs:
        assert main(["evaluate", one, "--json"]) == 0
        singles.append(json.loads(capsys.readouterr().out)["loss"])
    assert e["loss"] not in singles  # not one member's answer
    assert main(["evaluate", *dirs]) == 0
    assert "ensemble of 2 runs" in capsys.readouterr().out


def test_runs_that_cannot_be_averaged_are_refused(two_runs, tmp_path, capsys):
    train(mlp(), config(max_steps=2, eval_every=2, data=config().data.__class__(source="digits", seed=3)),
          tmp_path / "other-split")
    train(tiny_lm(), config(max_steps=2, eval_every=2, data=config().data.__class__(source="pystdlib", max_bytes=20000)),
          tmp_path / "lm")
    for other, message in ((tmp_path / "other-split", "other data settings"), (tmp_path / "lm", "one task")):
        assert main(["evaluate", str(two_runs / "r0"), str(other)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
