"""Every (command, flag) pair of the CLI, enumerated from the click commands typer builds: a flag a
command accepts changes its output, or the command refuses it (exit 2, one line naming the flag and
the command; layerwise/commands/_workload.py NOT_APPLYING, TRAIN_ONLY, INFER_ONLY). Data-driven: a
flag or command not declared below fails the test, so whoever adds one declares how it shows."""
from __future__ import annotations

import click
import pytest
import typer

from layerwise.cli import _register_commands, app, main
from layerwise.commands._workload import INFER_ONLY, NOT_APPLYING, TRAIN_ONLY, WORKLOAD_OPTIONS

from refdata import HF_CONFIGS

GPT2_CONFIG = str(HF_CONFIGS / "gpt2.json")  # attn_pdrop 0.1: CPU sdpa's math path (--device)
BASE = {  # command -> the arguments of the reference run
    "flops": ["tiny-gpt", "--seq", "16", "--json"],
    "memory": ["tiny-gpt", "--seq", "128", "--batch", "8", "--json"],
    "measure": ["tiny-gpt", "--seq", "16", "--json"],
    "verify": ["tiny-gpt", "--seq", "128", "--batch", "8", "--json"],
    "summary": ["tiny-gpt", "--json"],
    "presets": ["--json"],
}
# flag -> (arguments that replace the base's, or None to keep them; arguments added to the changed run)
SHOWN_BY_WORKLOAD = {
    "--batch": (None, ["--batch", "2"]),
    "--seq": (None, ["--seq", "24"]),
    "--image": (["resnet-18", "--batch", "2", "--image", "32", "--json"], ["--image", "64"]),
    "--mode": (None, ["--mode", "infer"]),
    "--precision": (None, ["--precision", "bf16-mixed"]),
    "--optimizer": (None, ["--optimizer", "sgd"]),
    "--optimizer-impl": (None, ["--optimizer-impl", "foreach"]),
    "--checkpointing": (None, ["--checkpointing", "full"]),
    "--attention": (None, ["--attention", "eager"]),
    "--grad-accum": (None, ["--grad-accum", "2"]),
    "--zero": (["tiny-gpt", "--seq", "16", "--dp", "2", "--json"], ["--zero", "2"]),
    "--dp": (["tiny-gpt", "--seq", "16", "--zero", "1", "--json"], ["--dp", "2"]),
    "--tp": (None, ["--tp", "2"]),
    "--pp": (None, ["--pp", "2"]),
    "--lora-rank": (None, ["--lora-rank", "4"]),
    "--quant": (["tiny-gpt", "--seq", "16", "--mode", "infer", "--json"], ["--quant", "int8"]),
    "--new-tokens": (["tiny-gpt", "--seq", "16", "--mode", "infer", "--json"], ["--new-tokens", "4"]),
    "--device": (None, ["--device", "cuda"]),
    "--input": (["tiny-gpt", "--json"], ["--input", "32"]),
    "--json": (["tiny-gpt", "--seq", "16"], ["--json"]),
}
IMPL = (["tiny-gpt", "--seq", "16", "--json"], ["--optimizer-impl", "foreach"])  # peak in optimizer.step()
FLOPS_DEVICE = ([GPT2_CONFIG, "--seq", "16", "--json"], ["--device", "cuda"])
SHOWN = {  # command -> flag -> (base, added), for flags that are not workload flags or show differently
    "flops": {"--tokens": (None, ["--tokens", "1e9"]), "--max-level": (["tiny-gpt"], ["--max-level", "1"]),
              "--device": FLOPS_DEVICE},
    "memory": {"--fit": (None, ["--fit", "1"]), "--optimizer-impl": IMPL},
    "verify": {"--optimizer-impl": IMPL},
    "measure": {"--real": (None, ["--real"]), "--impl": ([GPT2_CONFIG, "--seq", "16", "--json"], ["--impl", "hf"])},
    "summary": {"--batch": (None, ["--batch", "3"]), "--max-level": (["tiny-gpt"], ["--max-level", "1"]),
                "--input": (None, ["--input", "32"]), "--json": (["tiny-gpt"], ["--json"])},
    "presets": {"--json": ([], ["--json"])},
}
REFUSED_BY_COMMAND = {  # --impl hf: only the measure reading runs transformers' code (commands/*.py)
    "flops": {"--impl"}, "memory": {"--impl"}, "verify": {"--impl"},
}
# Commands whose runs are training jobs, compressions and exports (minutes, not milliseconds) or
# belong to the step-time model: their flags are declared here and exercised by their own tests.
ELSEWHERE = {
    "train": "tests/train/test_cli_train.py (each flag maps to a TrainConfig field: commands/train.py _FIELDS)",
    "evaluate": "tests/train/test_cli_train.py",
    "compress quantize": "tests/compress/test_compress_cli.py",
    "compress prune": "tests/compress/test_compress_cli.py",
    "compress distill": "tests/compress/test_compress_cli.py",
    "export onnx": "tests/export/test_export_onnx.py",
    "time": "tests/cost/test_time_command.py",
    "plan": "tests/plan/test_plan.py",
}


def _commands():
    _register_commands()
    root = typer.main.get_command(app)

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    return dict(walk(root, []))


COMMANDS = _commands()
PAIRS = [(name, p.opts[0]) for name, cmd in COMMANDS.items() if name not in ELSEWHERE
         for p in cmd.params if isinstance(p, click.Option)]
FLAG_NAME = {opt[1].param_decls[0]: name for name, opt in WORKLOAD_OPTIONS.items()}


def test_every_command_is_declared():
    assert set(COMMANDS) == set(BASE) | set(ELSEWHERE)


@pytest.fixture
def run(capfd):
    """`layerwise ARGS` in this process: (exit code, stdout + stderr)."""

    def invoke(args):
        capfd.readouterr()
        code = main(list(args))
        got = capfd.readouterr()
        return code, got.out + got.err

    return invoke


def _refused(command, flag) -> bool:
    name = FLAG_NAME.get(flag)
    return flag in REFUSED_BY_COMMAND.get(command, ()) or name in NOT_APPLYING.get(command, {})


@pytest.mark.parametrize("command,flag", PAIRS, ids=[f"{c}-{f}" for c, f in PAIRS])
def test_flag_changes_output_or_is_refused(command, flag, run):
    words = command.split()
    if _refused(command, flag):
        value = {"--zero": "1", "--dp": "2", "--tp": "2", "--pp": "2", "--quant": "int8", "--impl": "hf",
                 "--precision": "bf16", "--optimizer": "sgd", "--optimizer-impl": "foreach",
                 "--grad-accum": "2"}[flag]
        code, out = run([*words, *BASE[command], flag, value])
        assert code == 2, out
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 1 and flag in lines[0] and command in lines[0], out
        return
    shown = SHOWN.get(command, {}).get(flag) or SHOWN_BY_WORKLOAD.get(flag)
    assert shown is not None, f"`layerwise {command} {flag}`: declare how it shows, or refuse it"
    base = shown[0] if shown[0] is not None else BASE[command]
    code_a, out_a = run([*words, *base])
    code_b, out_b = run([*words, *base, *shown[1]])
    assert code_a == code_b == 0, (out_a, out_b)
    assert out_a != out_b


@pytest.mark.parametrize("command", ["flops", "memory", "measure", "verify"])
def test_mode_only_flags_are_refused_in_the_other_mode(command, run):
    for flag, value, mode in (("--optimizer", "sgd", "infer"), ("--checkpointing", "full", "infer"),
                              ("--lora-rank", "4", "infer"), ("--new-tokens", "2", "train")):
        if _refused(command, flag):
            continue
        code, out = run([command, *BASE[command], "--mode", mode, flag, value])
        assert code == 2 and len(out.strip().splitlines()) == 1 and flag in out, out
    assert set(TRAIN_ONLY) & set(INFER_ONLY) == set()
