"""Progress off a terminal: plain lines with the count and the ETA (not one truncated bar), and
--quiet silences them. The line period is set to 0 so every update prints (no clocks)."""
from __future__ import annotations

import shutil

import pytest

from layerwise.cli import main
from layerwise.report import progress


@pytest.fixture
def every_update(monkeypatch):
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    monkeypatch.setattr(progress, "QUICK_S", 0.0)


def test_counted_prints_counts_and_eta_when_piped(every_update, capsys):
    with progress.counted("evaluate test", total=4, unit="batches") as bar:
        for _ in range(4):
            bar.advance()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("evaluate test: 1/4 batches (25%), ") and "ETA" in lines[0]
    assert lines[-1].startswith("evaluate test: done 4/4 batches (100%)")


def test_cli_commands_print_plain_progress_and_quiet_silences_it(every_update, tmp_path_factory, capsys):
    run = tmp_path_factory.mktemp("p") / "run"
    assert main(["train", "digits-cnn", "--data", "digits", "--max-steps", "3", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert "train: 1/3 steps (33%)" in err and "ETA" in err and "loss" in err
    assert main(["evaluate", str(run), "--split", "val"]) == 0
    err = capsys.readouterr().err
    assert "evaluate val: 1/" in err and "ETA" in err and "\r" not in err
    assert main(["evaluate", str(run), "--split", "val", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["verify", "tiny-gpt", "--seq", "16"]) == 0
    assert "verify tiny-gpt (fake tensors): done in" in capsys.readouterr().err
    shutil.rmtree(run.parent)
