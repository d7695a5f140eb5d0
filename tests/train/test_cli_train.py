"""`layerwise train` and `layerwise evaluate` through the real CLI entry point."""
from __future__ import annotations

import json

import yaml

from layerwise.cli import main
from layerwise.spec import io as spec_io

from _train_models import mlp


def test_train_then_evaluate_a_spec_file(tmp_path, capsys):
    spec_io.dump(mlp(), tmp_path / "mlp.yaml")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({"data": {"source": "digits"}, "lr": 0.01, "batch_size": 16}))
    run = tmp_path / "run"
    code = main(["train", str(tmp_path / "mlp.yaml"), "--config", str(tmp_path / "cfg.yaml"), "--max-steps", "5",
                 "--optimizer", "sgd-momentum", "--out", str(run), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "finished" and result["steps"] == 5 and result["test"]["n"] == 359
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["lr"] == 0.01 and cfg["batch_size"] == 16 and cfg["max_steps"] == 5 and cfg["optimizer"] == "sgd-momentum"
    assert main(["evaluate", str(run), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["accuracy"] == result["test"]["accuracy"] and len(ev["confusion"]) == 10


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    spec_io.dump(mlp(), tmp_path / "mlp.yaml")
    assert main(["train", str(tmp_path / "mlp.yaml"), "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "mlp.yaml"), "--data", "digits", "--optimizer", "adamm"]) == 2
    assert "did you mean 'adam'" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_resume_through_the_cli_keeps_the_runs_settings(tmp_path, capsys):
    spec_io.dump(mlp(), tmp_path / "mlp.yaml")
    run = tmp_path / "run"
    args = ["train", str(tmp_path / "mlp.yaml"), "--data", "digits", "--out", str(run), "--json"]
    assert main([*args, "--max-steps", "3", "--batch", "16", "--lr", "0.02"]) == 0
    capsys.readouterr()
    assert main([*args, "--resume", "--max-steps", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert result["steps"] == 5 and cfg["lr"] == 0.02 and cfg["batch_size"] == 16 and cfg["max_steps"] == 5
