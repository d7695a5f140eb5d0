"""`layerwise time` end to end: JSON keys, the arithmetic, and one-line errors."""
from __future__ import annotations

import json

import pytest

from layerwise.cli import main
from layerwise.cost.hardware import get_gpu
from layerwise.presets import resolve_model
from layerwise.spec.counts import FlopCtx


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_time_json_for_a_token_model(capsys):
    code, out, _ = _run(capsys, "time", "gpt2", "--gpu", "h100", "--gpus", "4", "--tokens", "3e9",
                        "--mfu", "0.5", "--json")
    assert code == 0
    data = json.loads(out)
    model = resolve_model("gpt2")
    seq = model.input.shape[0]
    per_seq = model.body.flops(model.input_shape(1), FlopCtx(input_grad=False, attention="eager")).total
    assert data["flops"]["per_sample"] == per_seq
    assert data["flops"]["total"] == per_seq * 3 * 10**9 // seq
    assert data["flops"]["six_nd"] == 6 * model.params().total * 3 * 10**9
    peak = get_gpu("h100-sxm").peak_flops("bf16")
    assert data["seconds"] == pytest.approx(data["flops"]["total"] / (4 * peak * 0.5))
    assert data["gpu"] == "h100-sxm" and data["dtype"] == "bf16" and data["tokens_default"] is False
    # attention's s² term puts the spec above 6ND, but only by a few percent at GPT-2's size
    assert 0.0 < data["flops"]["total"] / data["flops"]["six_nd"] - 1 < 0.3


def test_time_table_and_default_budget(capsys):
    code, out, _ = _run(capsys, "time", "tiny-gpt", "--gpu", "rtx-4090")
    assert code == 0 and "Chinchilla" in out and "time" in out


def test_time_needs_samples_for_an_image_model(capsys):
    code, _, err = _run(capsys, "time", "resnet-18", "--gpu", "a100")
    assert code == 2 and "--samples" in err
    code, out, _ = _run(capsys, "time", "resnet-18", "--gpu", "v100", "--samples", "1000", "--json")
    assert code == 0 and json.loads(out)["dtype"] == "fp16"  # V100: no bf16 tensor cores


def test_unknown_gpu_is_a_one_line_error(capsys):
    code, _, err = _run(capsys, "time", "gpt2", "--gpu", "a100-80", "--json")
    assert code == 2 and "did you mean" in err and "Traceback" not in err
