"""Run directories a person can trust: one writer at a time, every state recorded, re-runs that
never move or delete silently, a kill during the first checkpoint that resumes (docs/RUNS.md)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from layerwise.cli import main
from layerwise.spec import io as spec_io
from layerwise.train import loop
from layerwise.train.run import load_run
from layerwise.train.trainer import train

from _train_models import config, mlp


def _status(run):
    return json.loads((run / "status.json").read_text())["status"]


def _train_args(tmp_path, run, *extra):
    spec_io.dump(mlp(), tmp_path / "mlp.yaml")
    return ["train", str(tmp_path / "mlp.yaml"), "--data", "digits", "--batch", "16", "--out", str(run),
            "--quiet", *extra]


def test_a_second_writer_is_refused_and_the_first_finishes_intact(tmp_path, capsys):
    run, seen = tmp_path / "run", {}

    def second_writer(step, module):  # while the first run holds the directory
        if step == 3:
            seen["code"] = main(_train_args(tmp_path, run, "--max-steps", "2", "--overwrite"))
            seen["err"] = capsys.readouterr().err

    r = train(mlp(), config(max_steps=6), run, hooks={"after_step": second_writer})
    assert seen["code"] == 2 and f"is in use by process {os.getpid()}" in seen["err"]
    assert len(seen["err"].strip().splitlines()) == 1
    assert r.status == "finished" and _status(run) == "finished" and load_run(run, "last").step == 6
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 6  # one run's rows, not two interleaved


def test_rerun_refuses_unless_resume_or_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    args = _train_args(tmp_path, run, "--max-steps", "2")
    assert main(args) == 0
    before = (run / "checkpoints/last/model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds a run (status: finished)" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (run / "checkpoints/last/model.safetensors").read_bytes() == before
    assert main([*args, "--overwrite"]) == 0 and "--overwrite: removed the previous run" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--resume"]) == 2
    assert not (tmp_path / "run.prev").exists()
    (tmp_path / "file").write_text("x")
    assert main(_train_args(tmp_path, tmp_path / "file", "--max-steps", "1")) == 2
    assert "is a file, not a run directory" in capsys.readouterr().err


def test_ctrl_c_exits_non_zero_and_is_recorded_interrupted(tmp_path, monkeypatch, capsys):
    run, advance = tmp_path / "run", loop.advance

    def advance_then_ctrl_c(r, st):
        done = advance(r, st)
        if st.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return done

    monkeypatch.setattr(loop, "advance", advance_then_ctrl_c)
    assert main(_train_args(tmp_path, run, "--max-steps", "6")) == 130
    assert _status(run) == "interrupted" and load_run(run, "last").step == 2
    monkeypatch.setattr(loop, "advance", advance)
    assert main(_train_args(tmp_path, run, "--max-steps", "6")) == 2  # refused, not moved aside
    assert "status: interrupted" in capsys.readouterr().err
    assert main(_train_args(tmp_path, run, "--max-steps", "6", "--resume")) == 0
    assert _status(run) == "finished" and load_run(run, "last").step == 6


_KILL_IN_FIRST_CHECKPOINT = textwrap.dedent("""
    import os, signal, sys
    import torch
    from layerwise.train import checkpoint
    real = torch.save

    def save_half_then_die(obj, path, *a, **k):  # the state file of the first checkpoint, half written
        real(obj, path, *a, **k)
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.torch.save = save_half_then_die
    from layerwise.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_kill_during_the_first_checkpoint_then_resume(tmp_path, capsys):
    run, ref = tmp_path / "run", tmp_path / "ref"
    args = _train_args(tmp_path, run, "--max-steps", "4", "--checkpoint-every", "2")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", _KILL_IN_FIRST_CHECKPOINT, *args], env=env, capture_output=True)
    assert p.returncode == -signal.SIGKILL
    assert _status(run) == "running" and list((run / "checkpoints").glob(".tmp-*"))
    assert not [p for p in (run / "checkpoints").iterdir() if not p.name.startswith(".")]
    assert main(args) == 2 and "died while running" in capsys.readouterr().err  # stale lock: no pid alive
    assert main([*args, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "removed 1 temporary file" in err and "resuming from step 0" in err
    assert not list((run / "checkpoints").glob(".tmp-*")) and _status(run) == "finished"
    assert main(_train_args(tmp_path, ref, "--max-steps", "4", "--checkpoint-every", "2")) == 0
    a, b = load_run(run, "last").module.state_dict(), load_run(ref, "last").module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_of_nothing_is_refused_and_leaves_no_directory(tmp_path):
    from layerwise.spec.errors import LayerwiseError

    with pytest.raises(LayerwiseError, match="nothing to resume"):
        train(mlp(), config(), tmp_path / "none", resume=True)
    assert not (tmp_path / "none").exists()
