"""Your own nn.Module: `layerwise measure|summary|flops FILE.py:factory`, and layerwise.measure()."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import layerwise
from layerwise.cli import main
from layerwise.measure.step import measure_step
from layerwise.presets import get_preset
from layerwise.spec.errors import LayerwiseError
from layerwise.workload import Workload

HERE = Path(__file__).parent
RESNET = f"{HERE / '_user_resnet.py'}:resnet50"
MODELS = HERE / "_user_models.py"
EXAMPLE = str(HERE.parent.parent / "examples" / "my_model.py") + ":build"


def run_json(capsys, *argv) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def fails(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    return capsys.readouterr().err


def test_torchvision_style_resnet50_matches_the_preset_within_1pct(capsys):
    # The target: a ResNet-50 written as torchvision writes it (inplace ReLU, its own
    # module tree), measured as user code, against the resnet-50 preset built from blocks.
    # The preset trains on cross-entropy, the module on out.sum(): a (B, 1000) difference.
    mine = run_json(capsys, "measure", RESNET, "--input", "3x224x224", "--batch", "2")
    preset = run_json(capsys, "measure", "resnet-50", "--batch", "2")
    assert abs(mine["peak_bytes"] / preset["peak_bytes"] - 1) < 0.01
    assert mine["params"]["total"] == get_preset("resnet-50").params().total == 25_557_032
    assert mine["flops"]["forward"] == preset["flops"]["forward"]  # the same convolutions


def test_example_from_the_readme_runs_and_counts_what_torch_counts(capsys):
    data = run_json(capsys, "measure", EXAMPLE, "--input", "3x224x224")
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_model", EXAMPLE.rsplit(":", 1)[0])
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with torch.device("meta"):
        module = example.build()
    assert data["params"]["total"] == sum(p.numel() for p in module.parameters())
    assert data["peak_bytes"] == sum(data["components"].values())
    assert set(data["saved_by_module"]) == {"stem", "stages", "norm", "head", "(outside)"}
    assert max(data["saved_by_module"], key=data["saved_by_module"].get) == "stages"


def test_saved_bytes_are_each_modules_saved_inputs(capsys):
    # Stack: first = Linear(64, 64) saves its input (B, 64) fp32; each block saves its Linear's
    # input and the ReLU's output, (B, 64) each. So first: 4*B*64 bytes, blocks: 4 * 2 * 4*B*64.
    data = run_json(capsys, "measure", f"{MODELS}:stack", "--input", "64", "--batch", "8", "--optimizer", "sgd")
    row = 4 * 8 * 64
    assert data["saved_by_module"]["first"] == row
    assert data["saved_by_module"]["blocks"] == 4 * 2 * row


def test_summary_and_flops_take_a_module(capsys):
    s = run_json(capsys, "summary", RESNET, "--input", "3x224x224")
    assert s["depth"] == 50 and s["params"]["total"] == 25_557_032 and s["output_shape"] == [1, 1000]
    f = run_json(capsys, "flops", RESNET, "--input", "3x224x224")
    analytic = run_json(capsys, "flops", "resnet-50")
    assert f["forward"] == analytic["matmul_forward"]  # FlopCounterMode on the user's module = spec count
    assert {r["path"] for r in f["per_layer"]} >= {"conv1", "layer1", "layer4", "fc"}


def test_token_input_and_package_module_reference(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    data = run_json(capsys, "measure", "_user_models:tiny_lm", "--input", "16", "--input-dtype", "long",
                    "--vocab", "100", "--batch", "4")
    assert data["params"]["total"] == 100 * 32 + (32 * 128 + 128) + (128 * 32 + 32) + 32 * 100
    assert data["saved_by_module"]["embed"] == 4 * 16 * 8  # an embedding saves its int64 token ids only
    assert "--vocab" in fails(capsys, "measure", "_user_models:tiny_lm", "--input", "16", "--input-dtype", "long")


def test_python_api_matches_the_cli(capsys):
    from _user_models import Stack  # noqa: the tests folder is on sys.path (pyproject)

    cli = run_json(capsys, "measure", f"{MODELS}:stack", "--input", "64", "--batch", "8")
    api = layerwise.measure(Stack(), torch.randn(8, 64), layerwise.Workload())
    assert api.peak_bytes == cli["peak_bytes"]
    assert api.params["total"] == 64 * 65 * 5


def test_checkpoint_modules_recompute_the_named_classes(capsys):
    base = run_json(capsys, "measure", RESNET, "--input", "3x64x64", "--batch", "2")
    ckpt = run_json(capsys, "measure", RESNET, "--input", "3x64x64", "--batch", "2", "--checkpointing", "full",
                    "--checkpoint-modules", "Bottleneck")
    assert ckpt["phase_peaks"]["forward"] < base["phase_peaks"]["forward"]
    assert ckpt["flops"]["backward"] > base["flops"]["backward"]  # the recomputed forwards
    assert "Bottleneck" in fails(capsys, "measure", RESNET, "--input", "3x64x64", "--checkpointing", "full",
                                 "--checkpoint-modules", "Block")  # the error lists the classes present
    assert "--checkpoint-modules" in fails(capsys, "measure", RESNET, "--input", "3x64x64", "--checkpointing", "full")


def test_real_run_agrees_with_the_fake_one(capsys):
    fake = run_json(capsys, "measure", f"{MODELS}:stack", "--input", "64", "--batch", "8")
    real = run_json(capsys, "measure", f"{MODELS}:stack", "--input", "64", "--batch", "8", "--real")
    assert real["peak_bytes"] == fake["peak_bytes"] and real["fake"] is False


@pytest.mark.parametrize("argv, expected", [
    (["measure", "no/such/file.py:build", "--input", "8"], "no/such/file.py: no such file"),
    (["measure", f"{MODELS}:broken", "--input", "8"], "the factory raised ValueError: n_layers must be even"),
    (["measure", f"{MODELS}:missing", "--input", "8"], "has no 'missing'; it defines"),
    (["measure", f"{MODELS}:not_a_module", "--input", "8"], "the factory returned a FakeTensor, not an nn.Module"),
    (["measure", f"{MODELS}:stack", "--input", "32"], "is the input shape right?"),
    (["measure", f"{MODELS}:stack"], "needs --input SHAPE"),
    (["measure", f"{MODELS}:picky", "--input", "8"], "cannot run under fake tensors"),
    (["measure", f"{MODELS}:stack", "--input", "64", "--seq", "128"], "--seq: does not apply to your own module"),
    (["measure", f"{MODELS}:stack", "--input", "64", "--attention", "sdpa"], "--attention: does not apply"),
    (["measure", "tiny-gpt", "--vocab", "10"], "--vocab: applies to FILE.py:factory"),
    (["flops", f"{MODELS}:stack", "--input", "64", "--precision", "bf16"], "--precision does not apply to `layerwise flops`"),
])
def test_errors_are_one_line_naming_the_place(capsys, argv, expected):
    message = fails(capsys, *argv)
    assert expected in " ".join(message.split())
    assert len(message.strip().splitlines()) <= 2 and "Traceback" not in message


def test_a_module_fake_tensors_cannot_run_runs_with_real(capsys):
    assert "--real" in fails(capsys, "measure", f"{MODELS}:picky", "--input", "8")
    data = run_json(capsys, "measure", f"{MODELS}:picky", "--input", "8", "--real")
    assert data["params"]["total"] == 72


def test_help_says_importing_runs_the_users_code(capsys):
    assert main(["measure", "--help"]) == 0
    assert "Importing it runs that file's" in " ".join(capsys.readouterr().out.split())


def test_api_errors():
    with pytest.raises(LayerwiseError, match="vocab_size"):
        layerwise.measure(torch.nn.Embedding(10, 4), (2, 3), Workload(), vocab_size=0)
    with pytest.raises(LayerwiseError, match="batch 4 disagrees"):
        layerwise.measure(torch.nn.Linear(4, 4), torch.randn(2, 4), Workload(batch=4))


@pytest.mark.parametrize("command", ["memory", "verify", "time"])
def test_the_cost_reading_says_plainly_that_a_module_has_no_spec(capsys, command):
    extra = ["--gpu", "a100-80gb"] if command == "time" else []
    message = fails(capsys, command, EXAMPLE, *extra)
    assert "only the measure reading applies" in " ".join(message.split())


def test_a_billion_parameter_module_costs_no_memory(capsys):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, the process's high-water mark
    data = run_json(capsys, "measure", f"{MODELS}:billion", "--input", "4096", "--optimizer", "sgd")
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    n = 60 * 4096 * 4097
    assert data["params"]["total"] == n
    assert data["components"]["weights"] == data["components"]["gradients"] == 4 * n  # fp32, SGD: no state
    assert grown * 1024 < 4 * n // 10  # the 4 GB of weights were never allocated
