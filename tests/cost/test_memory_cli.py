"""`layerwise memory` and `layerwise verify` on the command line: JSON keys of DESIGN.md, the
pure-Python path (no torch imported), --fit, and user errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from layerwise.cli import main
from layerwise.cost.memory import training_memory
from layerwise.presets import get_preset
from layerwise.workload import Workload

KEYS = {"peak_bytes", "peak_phase", "components", "device_overhead_bytes", "per_device"}
COMPONENTS = {"weights", "master_weights", "gradients", "optimizer_states", "activations", "temporaries", "kv_cache"}


def run_json(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_memory_json_keys_and_integers(capsys):
    data = run_json(capsys, "memory", "tiny-gpt", "--batch", "2", "--seq", "32", "--json")
    assert set(data) == KEYS and set(data["components"]) == COMPONENTS
    assert all(isinstance(v, int) for v in data["components"].values())
    assert data["peak_bytes"] == sum(data["components"].values())
    assert data["per_device"] is False


def test_llama_3_70b_zero3_is_pure_python():
    # the analytic path must not import torch (DESIGN.md: "instant even for 1T-parameter models")
    code = ("import sys, json, io, contextlib\n"
            "from layerwise.cli import main\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    rc = main(['memory', 'llama-3-70b', '--zero', '3', '--dp', '64', '--precision', 'bf16-mixed',\n"
            "               '--checkpointing', 'full', '--json'])\n"
            "data = json.loads(buf.getvalue())\n"
            "print(rc, 'torch' in sys.modules, data['per_device'], data['peak_bytes'] > 0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False", "True", "True"]


def test_zero3_shards_model_states_per_device():
    model = get_preset("llama-2-7b", n_layers=2, d_model=256, n_heads=4, d_ff=512, vocab_size=1000)
    one = training_memory(model, Workload(batch=1, seq=32, optimizer="sgd-momentum"))
    z3 = training_memory(model, Workload(batch=1, seq=32, optimizer="sgd-momentum", zero=3, dp=8))
    assert z3.per_device and not one.per_device
    assert z3.components.optimizer_states == -(-one.components.optimizer_states // 8)
    assert z3.components.weights == -(-one.components.weights // 8)


def test_fit_finds_the_largest_batch(capsys):
    data = run_json(capsys, "memory", "tiny-gpt", "--seq", "128", "--fit", "0.1", "--json")
    fit = data["fit"]
    budget, best = fit["budget_bytes"], fit["max_batch"]
    assert best >= 1
    model = get_preset("tiny-gpt")
    assert training_memory(model, Workload(batch=best, seq=128)).peak_bytes <= budget
    assert training_memory(model, Workload(batch=best + 1, seq=128)).peak_bytes > budget


def test_bad_flag_is_a_two_line_error(capsys):
    assert main(["memory", "tiny-gpt", "--precision", "fp8"]) == 2
    assert "precision" in capsys.readouterr().err


def test_verify_json_holds_both_and_errors(capsys):
    pytest.importorskip("torch")
    data = run_json(capsys, "verify", "tiny-gpt", "--batch", "2", "--seq", "32", "--json")
    assert set(data) == {"analytic", "measured", "error"}
    assert set(data["error"]) == COMPONENTS | {"peak_bytes"}
    assert abs(data["error"]["peak_bytes"]["relative"]) < 0.02
    assert data["error"]["peak_bytes"]["bytes"] == data["analytic"]["peak_bytes"] - data["measured"]["peak_bytes"]
