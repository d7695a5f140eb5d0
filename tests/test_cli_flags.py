"""Every (command, flag) pair of the CLI, enumerated from the click commands typer builds: a flag a
command accepts changes what the command does, or the command refuses it (exit 2, one line naming
the flag and the command). Nothing is accepted and ignored (issue #9).

What "changes what it does" means here: the run with the flag differs from the run without it in
its output (stdout + stderr), the files it writes, or the arguments it hands to the work (every run
records the calls to layerwise.threads.use, the progress bars and, for commands that train or serve,
the function where the work starts; `STOP_AT`/`FAKE` below stand in for those so the test stays fast).

Adding a flag or a command? This file fails until you declare it (the failure says which table):
  - a workload flag (layerwise/commands/_workload.py) a command cannot honour: refuse it in
    `NOT_APPLYING` there, with the reason (README "Flags that do not apply");
  - otherwise: how it shows, in `ADDED` below (the arguments that show it) and, if the command's
    reference run is not enough, `BASE_FOR` (the run it is compared with);
  - a new command: its reference run in `BASE`, and where its work starts in `STOP_AT` if it runs
    for minutes (training, serving).
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
import typer

from layerwise.cli import _register_commands, app, main
from layerwise.presets import get_preset
from layerwise.spec import io as spec_io
from layerwise.commands._workload import INFER_ONLY, NOT_APPLYING, TRAIN_ONLY, WORKLOAD_OPTIONS, _why_not
from layerwise.spec.errors import LayerwiseError

from refdata import HF_CONFIGS

GPT2 = str(HF_CONFIGS / "gpt2.json")  # attn_pdrop 0.1: CPU sdpa's math path (--device), --impl hf
USER = str(Path(__file__).parent / "measure" / "_user_models.py")  # FILE.py:factory models (--input-dtype, --vocab, --checkpoint-modules)
RUN = "{run}"  # replaced by a real run directory of `layerwise train` (the `run_dir` fixture)
TMP = "{tmp}"  # replaced by a fresh directory of the run's own
FILES = "{files}"  # replaced by the test's tmp_path (digits.npz, cfg.yaml, moe.yaml: a small Mixtral)

# command -> the reference run (arguments after the command words)
BASE = {
    "flops": ["tiny-gpt", "--seq", "16", "--json"],
    "memory": ["tiny-gpt", "--seq", "128", "--batch", "8", "--json"],
    "measure": ["tiny-gpt", "--seq", "16", "--json"],
    "verify": ["tiny-gpt", "--seq", "128", "--batch", "8", "--json"],
    "summary": ["tiny-gpt", "--json"],
    "presets": ["--json"],
    "presets show": ["tiny-gpt", "--json"],
    "time": ["tiny-gpt", "--gpu", "a100", "--gpus", "8", "--json"],
    "plan": ["tiny-gpt", "--gpu", "a100", "--gpus", "8", "--top", "3", "--json"],
    "report": [RUN, "--html", f"{TMP}/report.html"],
    "serve": [],
    "train": ["digits-cnn", "--data", "digits", "--out", f"{TMP}/run"],
    "train-parallel": ["tiny-gpt", "--out", f"{TMP}/run"],
    "evaluate": [RUN, "--json"],
    "compress quantize": [RUN, "--mode", "weight-int4"],
    "compress prune": [RUN],
    "compress distill": [RUN, "--student", "digits-cnn"],
    "export onnx": [RUN],
    "diagnose": ["digits-cnn", "--json"],
    "compress qat": [RUN],
    "generate": [RUN, "--prompt", "def f"],
}
# command -> (function where the work starts: recorded, then the run stops there)
STOP_AT = {
    "serve": "layerwise.serve.server.make_server",
    "train": "layerwise.train.trainer.train",
    "train-parallel": "layerwise.train.parallel.train_parallel",
    "compress quantize": "layerwise.compress.quantize.quantize",
    "compress qat": "layerwise.compress.qat.qat",
    "generate": "layerwise.generate.run.generate",
}
# (command, flag) -> where it is shown instead, for output flags of a command that stops before its
# output (STOP_AT): the test file must run the command with the flag
SHOWN_IN = {("generate", "--json"): "tests/generate/test_generate_cli.py"}
# command -> functions recorded and replaced by a no-op (minutes of fine-tuning, exporting, timing)
_LATENCY = "layerwise.export.latency.measure_latency"
FAKE = {
    "compress quantize": (_LATENCY,),
    "compress prune": ("layerwise.compress.finetune.train_loop", _LATENCY),
    "compress distill": ("layerwise.compress.finetune.train_loop", _LATENCY),
    "export onnx": ("layerwise.export.onnx.export_onnx", "layerwise.export.onnx.check_parity", _LATENCY),
}
FAKE_RESULT = {_LATENCY: [SimpleNamespace(runtime="eager", p50_ms=1.0, p90_ms=1.0)],
               "layerwise.export.onnx.export_onnx": SimpleNamespace(exporter="legacy")}
# functions recorded (and run) in every command: threads, progress output, the run directory read
RECORDED = ("layerwise.threads.use", "layerwise.report.progress.phases", "layerwise.report.progress.counted",
            "layerwise.report.train.TrainReporter", "layerwise.train.run.load_run",
            "layerwise.commands.compress.fresh_file")

# flag -> the arguments that show it (for every command that has it; (command, flag) first)
ADDED = {
    "--batch": ["--batch", "2"], "--seq": ["--seq", "24"], "--mode": ["--mode", "infer"],
    "--precision": ["--precision", "bf16-mixed"], "--optimizer": ["--optimizer", "sgd"],
    "--optimizer-impl": ["--optimizer-impl", "foreach"], "--checkpointing": ["--checkpointing", "full"],
    "--attention": ["--attention", "eager"], "--grad-accum": ["--grad-accum", "2"], "--zero": ["--zero", "2"],
    "--dp": ["--dp", "2"], "--tp": ["--tp", "2"], "--pp": ["--pp", "2"], "--lora-rank": ["--lora-rank", "4"],
    "--quant": ["--quant", "int8"], "--new-tokens": ["--new-tokens", "4"], "--device": ["--device", "cuda"],
    "--impl": ["--impl", "hf"], "--image": ["--image", "64"], "--input": ["--input", "32"], "--json": ["--json"],
    "--max-level": ["--max-level", "1"], "--tokens": ["--tokens", "1e9"], "--fit": ["--fit", "1"],
    "--verdict": ["--verdict"], "--explain": ["--explain"], "--real": ["--real"],
    "--timeline": ["--timeline", f"{TMP}/timeline.json"], "--html": ["--html", f"{TMP}/out.html"],
    "--threads": ["--threads", "2"], "--quiet": ["--quiet"], "--yaml": ["--yaml"],
    "--input-dtype": ["--input-dtype", "long", "--vocab", "100"], "--vocab": ["--vocab", "50"],
    "--checkpoint-modules": ["--checkpoint-modules", "Sequential", "--checkpointing", "full"],
    "--which": ["--which", "last"], "--out": ["--out", f"{TMP}/elsewhere"], "--seed": ["--seed", "3"],
    "--lr": ["--lr", "0.25"], "--epochs": ["--epochs", "2"], "--steps": ["--steps", "2"],
    "--schedule": ["--schedule", "gpipe"], "--global-batch": ["--global-batch", "64"],
    "--gpus": ["--gpus", "16"], "--gpu": ["--gpu", "h100-sxm"], "--top": ["--top", "1"],
    "--resume": ["--resume"], "--host": ["--host", "localhost"], "--port": ["--port", "0"],
    ("time", "--grad-accum"): ["--grad-accum", "4"], ("time", "--zero"): ["--zero", "3"],
    ("time", "--dp"): ["--dp", "4"], ("time", "--ep"): ["--ep", "2"], ("time", "--sp"): ["--sp", "--tp", "2"],
    ("time", "--schedule"): ["--schedule", "gpipe", "--pp", "2"],
    ("time", "--interleave"): ["--interleave", "2", "--schedule", "interleaved", "--pp", "2"],
    ("time", "--checkpointing"): ["--checkpointing", "selective"], ("time", "--precision"): ["--precision", "fp32"],
    ("time", "--attention"): ["--attention", "eager"], 
    ("time", "--mfu"): ["--mfu", "0.3"], ("time", "--dtype"): ["--dtype", "fp16", "--mfu", "0.3"],
    ("time", "--price-per-gpu-hour"): ["--price-per-gpu-hour", "2"], ("plan", "--optimizer"): ["--optimizer", "sgd"],
    ("plan", "--seq"): ["--seq", "64"],
    ("train-parallel", "--tp"): ["--tp", "2"], ("train-parallel", "--pp"): ["--pp", "2"],
    ("train-parallel", "--dp"): ["--dp", "2"], ("train-parallel", "--ep"): ["--ep", "2"],
    ("train-parallel", "--sp"): ["--sp", "--tp", "2"], ("train-parallel", "--micro-batches"): ["--micro-batches", "4"],
    ("train-parallel", "--batch"): ["--batch", "8"], ("train-parallel", "--seq"): ["--seq", "8"],
    ("train-parallel", "--save-every"): ["--save-every", "1"], ("train-parallel", "--set"): ["--set", "n_layers=2"],
    ("train-parallel", "--checkpointing"): ["--checkpointing", "full"],
    ("train", "--optimizer"): ["--optimizer", "sgd"], ("train", "--schedule"): ["--schedule", "linear"],
    ("train", "--precision"): ["--precision", "bf16-mixed"], ("train", "--checkpointing"): ["--checkpointing"],
    ("train", "--loss"): ["--loss", "focal"], ("train", "--class-weights"): ["--class-weights", "balanced"],
    ("train", "--monitor"): ["--monitor", "val_accuracy"], ("train", "--freeze"): ["--freeze", "body.0"],
    ("train", "--lora-target"): ["--lora-target", "body.*"], ("train", "--init-from"): ["--init-from", RUN],
    ("train", "--resize"): ["--no-resize"], ("train", "--normalise"): ["--normalise", "meanstd"],
    ("train", "--label-column"): ["--label-column", "y"], ("train", "--text-column"): ["--text-column", "t"],
    ("train", "--tokenizer"): ["--tokenizer", "bpe"], ("train", "--device"): ["--device", "cuda"],
    ("train", "--strategy"): ["--strategy", "ddp"], ("train", "--tensorboard"): ["--tensorboard"],
    ("train", "--data"): ["--data", "wine"], ("train", "--config"): ["--config", f"{FILES}/cfg.yaml"],
    ("train", "--overwrite"): ["--overwrite"], ("train", "--batch"): ["--batch", "8"],
    ("evaluate", "--split"): ["--split", "val"], ("evaluate", "--data"): ["--data", f"{FILES}/digits.npz"],
    ("compress quantize", "--mode"): ["--mode", "weight-int8"], ("compress quantize", "--group-size"): ["--group-size", "8"],
    ("compress quantize", "--out"): ["--out", f"{TMP}/q.safetensors"],
    ("compress prune", "--sparsity"): ["--sparsity", "0.25"], ("compress prune", "--kind"): ["--kind", "global"],
    ("compress distill", "--temperature"): ["--temperature", "2"], ("compress distill", "--alpha"): ["--alpha", "0.5"],
    ("compress distill", "--epochs"): ["--epochs", "2"], ("compress distill", "--student"): ["--student", "tiny-gpt"],
    ("export onnx", "--out"): ["--out", f"{TMP}/m.onnx"], ("export onnx", "--batch"): ["--batch", "2"],
    ("export onnx", "--latency"): ["--latency"], ("export onnx", "--exporter"): ["--exporter", "dynamo"],
    ("summary", "--batch"): ["--batch", "3"], "--capacity-factor": ["--capacity-factor", "1.0"],
    "--rlhf": ["--rlhf", "dpo"], "--placement": ["--placement", "separate"], "--ref-quant": ["--ref-quant", "int8"],
    ("diagnose", "--init"): ["--init", "xavier_uniform"], ("diagnose", "--norm-position"): ["--norm-position", "post"],
    ("diagnose", "--data"): ["--data", "digits"], "--kv-dtype": ["--kv-dtype", "fp8"],
    ("time", "--quant"): ["--quant", "int8"], ("compress qat", "--epochs"): ["--epochs", "3"],
    ("time", "--mode"): ["--mode", "infer", "--new-tokens", "4"], ("train", "--balance"): ["--balance", "oversample"],
    ("train", "--augment"): ["--augment", "flip"], ("train", "--resize-mode"): ["--resize-mode", "shorter-side"],
    ("generate", "--prompt"): ["--prompt", "import os"], ("generate", "--draft"): ["--draft", RUN],
    ("generate", "--lookahead"): ["--lookahead", "2", "--draft", RUN], ("generate", "--seed"): ["--seed", "3"],
    ("generate", "--temperature"): ["--temperature", "0.7"], ("diagnose", "--html"): ["--html", f"{TMP}/d.html"], ("flops", "--input"): ["--input", "8x64"],
    ("measure", "--input"): ["--input", "8x64"], ("summary", "--input"): ["--input", "8x64"],
}
# (command, flag) -> the reference run that flag is compared with, when the command's is not it
IMPL_BASE = ["tiny-gpt", "--seq", "16", "--json"]  # peak in optimizer.step(): its implementation shows
INFER_BASE = ["tiny-gpt", "--seq", "16", "--mode", "infer", "--json"]
USER_LM = [f"{USER}:TinyLM", "--input", "16", "--input-dtype", "long", "--vocab", "100", "--json"]
MOE = f"{FILES}/moe.yaml"
INFER_TIME = ["tiny-gpt", "--gpu", "a100", "--mode", "infer", "--new-tokens", "4", "--json"]
RLHF = ["tiny-gpt", "--seq", "16", "--rlhf", "ppo", "--new-tokens", "4", "--json"]
BASE_FOR = {
    ("memory", "--capacity-factor"): [MOE, "--seq", "16", "--batch", "4", "--json"],
    ("verify", "--capacity-factor"): [MOE, "--seq", "16", "--batch", "4", "--json"],
    ("measure", "--capacity-factor"): [MOE, "--seq", "16", "--batch", "4", "--json"],
    ("flops", "--capacity-factor"): [MOE, "--seq", "16", "--batch", "4", "--json"],
    ("summary", "--capacity-factor"): [MOE, "--batch", "4", "--json"],
    ("memory", "--placement"): RLHF, ("memory", "--ref-quant"): RLHF,
    ("verify", "--placement"): RLHF, ("verify", "--ref-quant"): RLHF,
    ("memory", "--kv-dtype"): [*INFER_BASE, "--new-tokens", "4"],
    ("time", "--quant"): INFER_TIME, ("time", "--kv-dtype"): INFER_TIME,
    ("time", "--mode"): ["tiny-gpt", "--gpu", "a100", "--json"],
    ("flops", "--kv-dtype"): [*INFER_BASE, "--new-tokens", "4"],
    ("measure", "--kv-dtype"): [*INFER_BASE, "--new-tokens", "4"], ("verify", "--kv-dtype"): [*INFER_BASE, "--new-tokens", "4"],
    ("generate", "--seed"): [RUN, "--prompt", "def f", "--temperature", "0.7"],
    ("generate", "--top-k"): [RUN, "--prompt", "def f", "--temperature", "0.7"],
    ("generate", "--top-p"): [RUN, "--prompt", "def f", "--temperature", "0.7"],
    ("memory", "--rlhf"): ["tiny-gpt", "--seq", "16", "--json"], ("verify", "--rlhf"): ["tiny-gpt", "--seq", "16", "--json"],
    ("diagnose", "--norm-position"): ["tiny-gpt", "--batch", "2", "--json"], ("diagnose", "--which"): [RUN, "--json"],
    ("flops", "--device"): [GPT2, "--seq", "16", "--json"], ("measure", "--impl"): [GPT2, "--seq", "16", "--json"],
    ("memory", "--impl"): [GPT2, "--seq", "512", "--batch", "4", "--json"], ("verify", "--impl"): [GPT2, "--seq", "16", "--json"],
    ("memory", "--optimizer-impl"): IMPL_BASE, ("verify", "--optimizer-impl"): IMPL_BASE,
    ("memory", "--explain"): ["tiny-gpt"], ("memory", "--quant"): INFER_BASE, ("flops", "--new-tokens"): INFER_BASE,
    ("memory", "--new-tokens"): INFER_BASE, ("measure", "--new-tokens"): INFER_BASE,
    ("verify", "--new-tokens"): INFER_BASE, ("memory", "--zero"): ["tiny-gpt", "--seq", "16", "--dp", "2", "--json"],
    ("memory", "--dp"): ["tiny-gpt", "--seq", "16", "--zero", "1", "--json"],
    ("flops", "--max-level"): ["tiny-gpt"], ("summary", "--max-level"): ["tiny-gpt"],
    ("summary", "--json"): ["tiny-gpt"], ("presets", "--json"): [], ("presets show", "--json"): ["tiny-gpt"],
    ("time", "--json"): ["tiny-gpt", "--gpu", "a100"], ("plan", "--json"): ["tiny-gpt", "--gpu", "a100"],
    ("evaluate", "--json"): [RUN], ("evaluate", "--quiet"): [RUN], ("measure", "--quiet"): ["tiny-gpt", "--seq", "16"],
    ("verify", "--quiet"): ["tiny-gpt", "--seq", "16"], ("memory", "--input"): ["tiny-gpt", "--json"],
    ("verify", "--input"): ["tiny-gpt", "--batch", "8", "--json"], ("presets show", "--yaml"): ["tiny-gpt"],
    ("time", "--dp"): ["tiny-gpt", "--gpu", "a100", "--json"],
    ("time", "--ep"): ["mixtral-8x7b", "--gpu", "a100", "--gpus", "8", "--json"],
    ("train", "--resume"): ["digits-cnn", "--data", "digits", "--out", RUN],
    ("plan", "--html"): ["tiny-gpt", "--gpu", "a100", "--json"], ("plan", "--seq"): ["tiny-gpt", "--gpu", "a100", "--json"],
    ("train", "--epochs"): ["digits-cnn", "--out", RUN, "--resume"],
    ("train", "--max-steps"): ["digits-cnn", "--out", RUN, "--resume"],
    ("train", "--label-column"): ["digits-cnn", "--data", "wine"], ("train", "--text-column"): ["digits-cnn", "--data", "wine"],
    ("flops", "--input"): [f"{USER}:stack", "--input", "64", "--json"],
    ("measure", "--input"): [f"{USER}:stack", "--input", "64", "--json"],
    ("summary", "--input"): [f"{USER}:stack", "--input", "64", "--json"],
    ("memory", "--image"): ["resnet-18", "--batch", "2", "--image", "32", "--json"],
    ("verify", "--image"): ["resnet-18", "--batch", "2", "--image", "32", "--json"],
    ("measure", "--image"): ["resnet-18", "--batch", "2", "--image", "32", "--json"],
    ("flops", "--image"): ["resnet-18", "--batch", "2", "--image", "32", "--json"],
}
# (command, flag) -> a run that needs the flag (a required one: the command's reference run), compared
# with the same run without the flag and its value (an input description such as --vocab)
WITHOUT = {
    ("time", "--new-tokens"): INFER_TIME,
    ("time", "--samples"): ["digits-cnn", "--gpu", "a100", "--samples", "1e6", "--json"],
    ("measure", "--input-dtype"): USER_LM, ("summary", "--input-dtype"): USER_LM, ("flops", "--input-dtype"): USER_LM,
    ("measure", "--vocab"): USER_LM, ("summary", "--vocab"): USER_LM, ("flops", "--vocab"): USER_LM,
    ("measure", "--checkpoint-modules"): [f"{USER}:stack", "--input", "64", "--batch", "8", "--json",
                                          "--checkpointing", "full", "--checkpoint-modules", "Sequential"],
}
# (command, flag) -> refused by the command itself, not by NOT_APPLYING: (the reference run, where)
REFUSED = {
    ("verify", "--ref-quant"): (RLHF, "commands/_rlhf.py verify_rlhf: quantized weights are not measured"),
}
# (command, flag) -> a flag that is the command's default spelled out, with the reason it exists.
DEFAULT_SPELLED = {
    ("presets show", "--yaml"): "YAML is the default; --yaml says so in a script (and `--yaml --json` is refused)",
}


def _commands():
    _register_commands()

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            if path and any(p.opts[0] != "--help" for p in cmd.params if isinstance(p, click.Option)):
                yield " ".join(path), cmd  # a group with its own options (`layerwise presets --json`)
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    return dict(walk(typer.main.get_command(app), []))


COMMANDS = _commands()
OPTIONS = {(name, p.opts[0]): p for name, cmd in COMMANDS.items()
           for p in cmd.params if isinstance(p, click.Option) and p.opts[0] != "--help"}
PAIRS = list(OPTIONS)
FLAG_NAME = {opt[1].param_decls[0]: name for name, opt in WORKLOAD_OPTIONS.items()}


def test_every_command_is_declared():
    missing = sorted(set(COMMANDS) - set(BASE))
    assert not missing, f"commands without a reference run: {missing}; declare them in BASE of tests/test_cli_flags.py"
    assert len(PAIRS) > 200  # the whole CLI, not a sample


class _Stopped(LayerwiseError):
    """Raised where a command's work would start (STOP_AT): the run ends there, recorded."""


def _describe(obj) -> str:
    """A call argument as text that does not change between two runs (no addresses, no values of
    random tensors, no temporary paths)."""
    shape = getattr(obj, "shape", None)
    if shape is not None and hasattr(obj, "dtype"):
        return f"tensor{tuple(shape)}:{obj.dtype}"
    if isinstance(obj, (list, tuple)):
        return "(" + ", ".join(_describe(o) for o in obj) + ")"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in obj.items()) + "}"
    if callable(obj) and hasattr(obj, "__code__"):
        closure = [_describe(c.cell_contents) for c in (obj.__closure__ or ()) if not callable(c.cell_contents)]
        return f"<function {obj.__name__} {closure}>"
    if type(obj).__repr__ is object.__repr__:  # a plain object (a reporter, a data loader): its type
        return type(obj).__name__
    return re.sub(r" at 0x[0-9a-f]+", "", repr(obj))


@pytest.fixture
def recorder(monkeypatch):
    """Patch the recorded functions of a command; returns the list the calls are appended to."""

    def install(command):
        calls = []
        for dotted in (*RECORDED, *FAKE.get(command, ()), *((STOP_AT[command],) if command in STOP_AT else ())):
            module_name, attr = dotted.rsplit(".", 1)
            module = importlib.import_module(module_name)
            real = getattr(module, attr)

            def stand_in(*args, _real=real, _name=dotted, **kwargs):
                calls.append(f"{_name}{_describe(args)} {_describe(dict(sorted(kwargs.items())))}")
                if _name == STOP_AT.get(command):
                    raise _Stopped(f"stopped at {_name}")
                if _name in FAKE.get(command, ()):
                    return FAKE_RESULT.get(_name, [])
                return _real(*args, **kwargs)

            monkeypatch.setattr(module, attr, stand_in)
        return calls

    return install


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real (short) run of `layerwise train`, for the commands that read one."""
    path = tmp_path_factory.mktemp("flags") / "run"
    assert main(["train", "digits-cnn", "--data", "digits", "--max-steps", "6", "--eval-every", "3",
                 "--out", str(path), "--quiet"]) == 0
    return path


_SEEN: dict[tuple, tuple] = {}


@pytest.fixture
def run(capfd, recorder, tmp_path, run_dir):
    """`layerwise COMMAND ARGS` in this process: what it shows (exit code, stdout + stderr, the calls
    recorded, the files written under tmp_path), with the placeholders filled in."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(tmp_path / "digits.npz", x=digits.images[:200].astype("float32") / 16, y=digits.target[:200])
    (tmp_path / "cfg.yaml").write_text("epochs: 3\ndata:\n  source: digits\n")
    spec_io.dump(get_preset("mixtral-8x7b", vocab_size=256, d_model=64, n_layers=1, n_heads=4, n_kv_heads=2,
                            d_ff=128, n_experts=4, top_k=2, max_seq=64), tmp_path / "moe.yaml")

    def invoke(command, args):
        key = (command, tuple(args))
        if key not in _SEEN:  # the reference runs repeat for every flag: run each once
            _SEEN[key] = observe(command, args)
        return _SEEN[key]

    def observe(command, args):
        scratch = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        scratch.mkdir()
        args = [a.replace(RUN, str(run_dir)).replace(TMP, str(scratch)).replace(FILES, str(tmp_path)) for a in args]
        calls = recorder(command)
        capfd.readouterr()
        code = main([*command.split(), *args])
        got = capfd.readouterr()
        text = (got.out + got.err).replace(str(scratch), "TMP")
        files = sorted((p.relative_to(scratch).as_posix(), p.stat().st_size > 0) for p in scratch.rglob("*"))
        return code, text, [c.replace(str(scratch), "TMP") for c in calls], files

    return invoke


def _typed(option: click.Option) -> list[str] | None:
    """The arguments of an undeclared number or switch: a value no default has (3, 0.25), or the switch."""
    if option.is_flag:
        return [option.opts[0]] if not option.default else (option.secondary_opts[:1] or None)
    kind = getattr(option.type, "name", "")
    return {"integer": [option.opts[0], "3"], "float": [option.opts[0], "0.25"]}.get(kind)


def _without(args: list[str], flag: str, is_flag: bool) -> list[str]:
    """`args` without `flag` (and its value)."""
    if flag not in args:
        return list(args)
    at = args.index(flag)
    return args[:at] + args[at + (1 if is_flag else 2):]


def _refusal(command: str, flag: str) -> str | None:
    name = FLAG_NAME.get(flag)
    if name is None or command not in ("flops", "memory", "measure", "verify"):
        return None
    return NOT_APPLYING.get(command, {}).get(name)


@pytest.mark.parametrize("command,flag", PAIRS, ids=[f"{c}-{f}" for c, f in PAIRS])
def test_flag_changes_what_the_command_does_or_is_refused(command, flag, run):
    added = ADDED.get((command, flag)) or ADDED.get(flag) or _typed(OPTIONS[command, flag])
    if _refusal(command, flag) is not None or (command, flag) in REFUSED:
        base = REFUSED[command, flag][0] if (command, flag) in REFUSED else BASE_FOR.get((command, flag), BASE[command])
        assert run(command, base)[0] == 0
        code, text, _, _ = run(command, [*base, *added])
        lines = [line for line in text.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, text
        assert flag in lines[0] and f"layerwise {command}" in lines[0], text
        assert (command, flag) in REFUSED or _refusal(command, flag) in lines[0], text
        return
    if (command, flag) in SHOWN_IN:
        assert f'"{flag}"' in (Path(__file__).parent.parent / SHOWN_IN[command, flag]).read_text()
        return
    if (command, flag) in DEFAULT_SPELLED:
        base = BASE_FOR.get((command, flag), BASE[command])
        assert run(command, base)[:2] == run(command, [*base, flag])[:2]
        return
    stopped = 2 if command in STOP_AT else 0
    if OPTIONS[command, flag].required or (command, flag) in WITHOUT:
        with_flag = WITHOUT.get((command, flag), BASE[command])
        without = run(command, _without(with_flag, flag, False))
        assert run(command, with_flag)[0] == stopped and without[0] == 2 and flag in without[1], without[1]
        if not OPTIONS[command, flag].required:
            return
    assert added is not None, (
        f"`layerwise {command} {flag}` is not declared: say how it shows in ADDED (and BASE_FOR) of "
        f"tests/test_cli_flags.py, or refuse it in NOT_APPLYING of layerwise/commands/_workload.py")
    base = BASE_FOR.get((command, flag), BASE[command])
    base = _without(base, flag, True) if OPTIONS[command, flag].is_flag else base
    without, with_flag = run(command, base), run(command, [*base, *added])
    assert without[0] == stopped and (with_flag[0] == stopped or OPTIONS[command, flag].required), \
        (without[1], with_flag[1])
    assert without != with_flag, f"`layerwise {command} {flag}` changed nothing: {without[1][:300]}"


@pytest.mark.parametrize("command", ["flops", "memory", "measure", "verify"])
def test_mode_only_flags_are_refused_in_the_other_mode(command, run):
    for flag, value, mode in (("--optimizer", "sgd", "infer"), ("--checkpointing", "full", "infer"),
                              ("--grad-accum", "2", "infer"), ("--new-tokens", "2", "train")):
        if _refusal(command, flag) is not None:
            continue
        code, text, _, _ = run(command, [*BASE[command], "--mode", mode, flag, value])
        lines = text.strip().splitlines()
        assert code == 2 and len(lines) == 1 and flag in text and f"layerwise {command}" in text, text
    assert not set(TRAIN_ONLY) & set(INFER_ONLY)


@pytest.mark.parametrize("command", ["flops", "memory", "measure", "verify"])
@pytest.mark.parametrize("model", ["digits-cnn", "text-gru", "mamba-130m"])
def test_attention_flags_are_refused_for_a_model_without_attention(command, model, run):
    # --attention eager and --checkpointing selective (it recomputes the attention core) changed
    # nothing for a CNN, a GRU or Mamba (spec/applies.py); one line, exit 2, for every reading
    small = ["--seq", "16"] if model == "mamba-130m" else []
    for flags in (["--attention", "eager"], ["--checkpointing", "selective"]):
        code, text, _, _ = run(command, [model, *small, *flags])
        lines = [line for line in text.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and flags[0] in lines[0] and "no attention" in lines[0], text
    assert run(command, [model, *small, "--attention", "sdpa"])[0] == 0  # the default, spelled out


def test_time_refuses_attention_for_a_model_without_attention(run):
    base = ["resnet-50", "--gpu", "h100-sxm", "--samples", "1e6"]
    code, text, _, _ = run("time", [*base, "--attention", "eager"])
    lines = [line for line in text.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "--attention eager does not apply to resnet-50" in lines[0], text
    assert run("time", base)[0] == 0


def test_quant_without_a_frozen_base_is_refused_in_training(run):
    assert _why_not("memory", "quant", {"quant": "int8"}) is not None
    assert _why_not("memory", "quant", {"quant": "int8", "lora_rank": 4}) is None
    code, text, _, _ = run("memory", ["tiny-gpt", "--quant", "int8"])
    assert code == 2 and "--quant does not apply to `layerwise memory`" in text, text
    code, text, _, _ = run("memory", ["tiny-gpt", "--quant", "int8", "--lora-rank", "4", "--json"])
    assert code == 0, text
