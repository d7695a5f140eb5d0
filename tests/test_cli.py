"""The command line as a user meets it: exit codes, one-line errors, JSON keys, no torch on the
cost path."""
import json
import subprocess
import sys

import pytest

from layerwise.cli import main


def run(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_summary_json_has_the_documented_keys_and_exact_counts(capsys):
    code, out, _ = run(capsys, "summary", "gpt2", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) >= {"model", "params", "buffers", "depth", "layers", "by_type"}
    assert set(data["params"]) == {"total", "trainable", "frozen", "active_per_token"}  # issue #13 added the last
    assert data["params"]["active_per_token"] == data["params"]["total"]  # dense: every weight per token
    # refdata/param_counts.csv: GPT2LMHeadModel, tied head, keras-hub gpt2_base_en metadata
    assert data["params"]["total"] == 124_439_808
    assert sum(data["by_type"].values()) == data["params"]["total"]
    assert {"path", "type", "output_shape", "params", "trainable"} <= set(data["layers"][0])


@pytest.mark.parametrize("args, message", [
    (("summary", "lama-2-7b"), "unknown preset 'lama-2-7b'; did you mean 'llama-2-7b'"),
    (("summary", "missing.yaml"), "missing.yaml: no such file"),
    (("summary", "gpt2", "--batch", "0"), "--batch must be a positive integer"),
    (("summary", "gpt2", "--input", "3xq"), "--input '3xq'"),
])
def test_bad_input_prints_one_line_and_exits_2(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_shape_mismatch_in_a_spec_file_names_the_block_path(capsys, tmp_path):
    spec = tmp_path / "m.yaml"
    spec.write_text("type: sequential\nlayers:\n  - {type: linear, d_in: 6, d_out: 16}\n"
                    "  - {type: linear, d_in: 15, d_out: 4}\n")
    code, _, err = run(capsys, "summary", str(spec), "--input", "6")
    assert code == 2
    assert "1: expected last dim 15, got 16" in err


def test_invalid_attention_heads_in_a_spec_file_are_reported(capsys, tmp_path):
    spec = tmp_path / "a.yaml"
    spec.write_text("type: attention\nd_model: 64\nn_heads: 6\n")
    code, _, err = run(capsys, "summary", str(spec), "--input", "8x64")
    assert code == 2
    assert "divisible" in err


def test_the_summary_path_never_imports_torch():
    code = ("import sys, io, contextlib\nfrom layerwise.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    rc = main(['summary', 'llama-3-70b', '--json'])\n"
            "assert rc == 0, rc\nprint('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_flops_json_keys_and_consistency(capsys):
    code, out, _ = run(capsys, "flops", "tiny-gpt", "--seq", "64", "--batch", "2", "--tokens", "1e9", "--json")
    assert code == 0
    data = json.loads(out)
    assert {"forward", "backward", "total", "matmul_forward", "per_layer"} <= set(data)
    assert data["total"] == data["forward"] + data["backward"]
    assert data["matmul_forward"] < data["forward"]
    assert data["training_compute"]["six_nd"] == 6 * 842_496 * 10**9 or data["training_compute"]["params"] * 6 * 10**9 == data["training_compute"]["six_nd"]


@pytest.mark.parametrize("args, message", [
    (("flops", "tiny-gpt", "--seq", "4096"), "longer than the model's 128 positions"),
    (("flops", "vit-b-16", "--image", "100"), "not divisible by the patch size 16"),
    (("flops", "gpt2", "--image", "32"), "--image applies to image inputs"),
    (("flops", "gpt2", "--precision", "fp8"), "--precision must be one of"),
])
def test_bad_workload_flags_are_clear(capsys, args, message):
    code, _, err = run(capsys, *args)
    assert code == 2
    assert message in err


@pytest.mark.parametrize("text, input_shape, message", [
    ("type: linear\nd_in: 0\nd_out: 4\n", "4", "linear.d_in must be a positive integer, got 0"),
    ("type: attention\nd_model: 64\nn_heads: 8\nn_kv_heads: 3\n", "8x64", "n_kv_heads"),
    ("type: moe\nd_model: 16\nd_ff: 32\nn_experts: 2\ntop_k: 3\n", "8x16", "top_k"),
    ("type: sequential\nlayers:\n  - {type: lienar, d_in: 4, d_out: 4}\n", "4", "did you mean 'linear'"),
    ("type: linear\nd_in: 4\n  d_out: 4\n", "4", "YAML syntax error"),
])
def test_each_class_of_bad_spec_is_one_line_and_exit_2(capsys, tmp_path, text, input_shape, message):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    code, _, err = run(capsys, "summary", str(spec), "--input", input_shape)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2
