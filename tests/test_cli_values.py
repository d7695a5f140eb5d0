"""Bad values are one line naming the flag (or block) and the reason, exit 2; and the CLI's loose
ends: --fit's longest context, `time` and `flops --tokens` agreeing, the checkpointing note, help on
every subcommand, --threads."""
from __future__ import annotations

import json
import random
from dataclasses import replace

import click
import pytest
import typer

from layerwise.cli import _register_commands, app, main
from layerwise.commands.memory import analytic
from layerwise.presets import get_preset
from layerwise.spec import io as spec_io
from layerwise.spec.model import InputSpec, Model
from layerwise.workload import Workload


def _one_line(capsys, *argv) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def _bn_mlp(tmp_path):
    from layerwise.blocks import Activation, Linear, Sequential
    from layerwise.blocks.norm import BatchNorm1d

    body = Sequential(layers=(Linear(d_in=16, d_out=32), BatchNorm1d(n_features=32), Activation(kind="relu"),
                              Linear(d_in=32, d_out=3)))
    spec_io.dump(Model(name="bn", body=body, input=InputSpec(kind="features", shape=(16,))), tmp_path / "bn.yaml")
    return str(tmp_path / "bn.yaml")


def _float_flags():
    """(command path, flag) of every float option of every command."""
    _register_commands()
    out = []

    def visit(cmd, path):
        for p in cmd.params:
            if isinstance(p, click.Option) and getattr(p.type, "name", "") == "float":
                out.append((path, p.opts[0]))
        for name, sub in getattr(cmd, "commands", {}).items():
            visit(sub, [*path, name])

    visit(typer.main.get_command(app), [])
    return out


def test_every_float_flag_refuses_nan_and_infinity(capsys):
    flags = _float_flags()
    assert len(flags) >= 20 and ("train", "--lr") in [(p[0], f) for p, f in flags if p]
    args = {"train": ["digits-cnn", "--data", "digits"], "memory": ["tiny-gpt"], "flops": ["tiny-gpt"],
            "time": ["tiny-gpt", "--gpu", "a100"], "plan": ["tiny-gpt", "--gpu", "a100"]}
    rng = random.Random(0)
    for path, flag in flags:
        value = rng.choice(["nan", "inf", "-inf", "NaN"])
        base = args.get(path[0], ["some-run"])
        err = _one_line(capsys, *path, *base, flag, value)
        assert f"{flag} {value}: must be a finite number" in err


@pytest.mark.parametrize("argv, message", [
    (["memory", "llama-2-7b", "--tp", "1000"], "--tp 1000 does not divide blocks.0.attn's 32 heads"),
    (["memory", "llama-2-7b", "--tp", "3"], "tensor parallelism gives each rank whole heads"),
    (["flops", "llama-2-7b", "--tp", "3"], "--tp does not apply to `layerwise flops`"),
    (["memory", "mistral-7b", "--tp", "16"], "8 key/value heads"),
    (["memory", "tiny-gpt", "--pp", "3"], "--pp 3 does not divide the model's 4 repeated layers"),
    (["measure", "tiny-gpt", "--pp", "3"], "--pp does not apply to `layerwise measure`"),
    (["memory", "digits-cnn", "--pp", "2"], "no repeated layers"),
    (["memory", "tiny-gpt", "--lora-rank", "100000"], "lora rank 100000 is larger than the layer's width"),
    (["memory", "tiny-gpt", "--threads", "0"], "No such option"),  # memory computes nothing: no --threads
    (["measure", "tiny-gpt", "--threads", "0"], "--threads must be at least 1"),
    (["train", "digits-cnn", "--data", "digits", "--threads", "0", "--out", "/nonexistent/x"], "--threads"),
    (["train", "digits-cnn", "--data", "digits", "--config", "/nonexistent.yaml"], "/nonexistent.yaml: no such"),
    (["evaluate", "/nonexistent-run"], "not a run directory"),
])
def test_bad_values_are_one_line(capsys, argv, message):
    if message == "No such option":  # click's own usage error: three lines, still exit 2
        assert main(argv) == 2 and message in capsys.readouterr().err
        return
    assert message in _one_line(capsys, *argv)


def test_batchnorm_at_batch_one_names_the_block_and_the_fix(tmp_path, capsys):
    spec = _bn_mlp(tmp_path)
    for cmd in ("memory", "verify", "measure"):
        err = _one_line(capsys, cmd, spec)
        assert "block 1 (batchnorm1d)" in err and "--batch 2 or more" in err
    assert main(["memory", spec, "--batch", "2"]) == 0
    assert main(["memory", spec, "--mode", "infer"]) == 0
    err = _one_line(capsys, "train", spec, "--data", "wine", "--batch", "1", "--out", str(tmp_path / "r"))
    assert "block 1 (batchnorm1d)" in err


def test_measure_real_refuses_a_step_larger_than_the_memory_available(capsys):
    err = _one_line(capsys, "measure", "llama-2-7b", "--real", "--seq", "4096")
    assert "measure --real llama-2-7b: one step needs about" in err and "is available" in err


def test_fit_gives_the_largest_batch_and_the_longest_context(capsys):
    model = get_preset("tiny-gpt")
    w = Workload(batch=16)
    assert main(["memory", "tiny-gpt", "--batch", "16", "--seq", "64", "--fit", "0.06", "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)["fit"]
    budget = fit["budget_bytes"]
    assert 0 < fit["max_batch"] and 0 < fit["max_seq"] < fit["model_max_seq"] == 128

    def peak(**kw):
        return analytic(model, replace(w, **{"seq": 64, **kw})).peak_bytes

    # the largest: it fits, one more does not (measured by the same cost reading at each size)
    assert peak(batch=fit["max_batch"]) <= budget < peak(batch=fit["max_batch"] + 1)
    assert peak(seq=fit["max_seq"]) <= budget < peak(seq=fit["max_seq"] + 1)


@pytest.mark.parametrize("model, seq", [("llama-2-7b", None), ("gpt2", 512), ("mixtral-8x7b", 1024)])
def test_time_and_flops_tokens_agree(capsys, model, seq):
    extra = ["--seq", str(seq)] if seq else []
    assert main(["time", model, "--gpu", "a100", "--gpus", "8", "--tokens", "2e12", "--json", *extra]) == 0
    timed = json.loads(capsys.readouterr().out)["flops"]
    assert main(["flops", model, "--tokens", "2e12", "--json", *extra]) == 0
    counted = json.loads(capsys.readouterr().out)["training_compute"]
    assert timed["total"] == counted["flops"] and timed["six_nd"] == counted["six_nd"]


def test_checkpointing_prints_its_recompute(capsys):
    assert main(["flops", "tiny-gpt", "--checkpointing", "full", "--json"]) == 0
    with_ck = json.loads(capsys.readouterr().out)
    assert main(["flops", "tiny-gpt", "--json"]) == 0
    without = json.loads(capsys.readouterr().out)
    assert with_ck["recompute"] > 0 and with_ck["backward"] - without["backward"] == with_ck["recompute"]
    assert main(["flops", "tiny-gpt", "--checkpointing", "full"]) == 0
    assert "note: activation checkpointing adds" in capsys.readouterr().out


def test_every_command_and_subcommand_has_help():
    _register_commands()
    missing = []

    def visit(cmd, path):
        if not (cmd.help or "").strip():
            missing.append(" ".join(path))
        for name, sub in getattr(cmd, "commands", {}).items():
            visit(sub, [*path, name])

    visit(typer.main.get_command(app), ["layerwise"])
    assert not missing


def test_text_gru_learns_from_the_cli_with_the_presets_sequence_length(tmp_path, capsys):
    # the README's recipe (bench/train_quality.py), shortened; 2 balanced classes: chance is 0.5
    assert main(["train", "text-gru", "--data", "pystdlib-lines", "--max-steps", "40", "--lr", "3e-3", "--batch", "64",
                 "--grad-clip", "1.0", "--out", str(tmp_path / "gru"), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["val"]["accuracy"] > 0.6 and result["test"]["accuracy"] > 0.6


@pytest.mark.parametrize("command", ["flops", "memory", "measure"])
def test_seq_and_input_both_giving_the_sequence_length_are_refused(command, capsys):
    """--input 32 and --seq 16 on a token model: one used to win silently; now one line, exit 2."""
    assert main([command, "tiny-gpt", "--input", "32", "--seq", "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seq 16" in err[0] and "--input 32" in err[0]
