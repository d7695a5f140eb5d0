"""--kv-dtype and the inference precision default: the cost reading sizes every cache dtype, the
measure reading agrees where our build can hold that cache, and refuses where it cannot."""
from __future__ import annotations

import pytest

from layerwise.cli import main
from layerwise.cost.memory import inference_memory
from layerwise.measure.step import measure_step
from layerwise.presets import get_preset
from layerwise.spec.errors import WorkloadError
from layerwise.workload import Workload

SMALL = dict(vocab_size=64, d_model=64, n_layers=2, n_heads=8, n_kv_heads=2, d_ff=128, max_seq=64)


def test_inference_defaults_to_bf16_and_training_to_fp32():
    assert Workload(mode="infer").precision == "bf16"
    assert Workload().precision == "fp32"
    assert Workload(mode="infer", precision="fp32").precision == "fp32"


@pytest.mark.parametrize("kv_dtype,elem_bytes,scales", [("fp32", 4, 0), ("fp16", 2, 0), ("bf16", 2, 0),
                                                        ("fp8", 1, 2 * 2 * 4), ("int8", 1, 2 * 2 * 4)])
def test_cache_bytes_per_dtype(kv_dtype, elem_bytes, scales):
    model = get_preset("llama-2-7b", **SMALL)
    report = inference_memory(model, Workload(mode="infer", batch=3, seq=16, new_tokens=4, kv_dtype=kv_dtype))
    # K and V x 2 layers x 3 sequences x 2 kv heads x 20 tokens x d_head 8; 8-bit caches add an fp32
    # scale for K and one for V per layer (vLLM's k_scale / v_scale)
    assert report.components.kv_cache == 2 * 2 * 3 * 2 * 20 * 8 * elem_bytes + scales


@pytest.mark.parametrize("precision,kv_dtype", [("bf16", "bf16"), ("fp32", "fp32"), ("fp16", "fp16"),
                                                ("bf16-mixed", "bf16")])
def test_the_measured_cache_agrees_where_the_build_holds_it(precision, kv_dtype):
    model = get_preset("llama-2-7b", **SMALL)
    w = Workload(mode="infer", batch=2, seq=12, new_tokens=3, precision=precision, kv_dtype=kv_dtype)
    assert measure_step(model, w).components["kv_cache"] == inference_memory(model, w).components.kv_cache


@pytest.mark.parametrize("precision,kv_dtype", [("bf16", "fp8"), ("bf16", "int8"), ("fp32", "bf16")])
def test_the_measure_reading_refuses_a_cache_the_build_cannot_hold(precision, kv_dtype):
    model = get_preset("llama-2-7b", **SMALL)
    w = Workload(mode="infer", batch=2, seq=12, new_tokens=3, precision=precision, kv_dtype=kv_dtype)
    with pytest.raises(WorkloadError, match=f"--kv-dtype {kv_dtype}: the built model caches"):
        measure_step(model, w)


@pytest.mark.parametrize("kw,message", [({"kv_dtype": "fp4", "mode": "infer", "new_tokens": 2}, "--kv-dtype must be"),
                                        ({"kv_dtype": "fp8"}, "only a decode keeps a KV cache"),
                                        ({"kv_dtype": "fp8", "mode": "infer"}, "only a decode keeps a KV cache")])
def test_kv_dtype_needs_a_decode(kw, message):
    with pytest.raises(WorkloadError, match=message):
        Workload(**kw)


def test_memory_cli_says_the_precision_it_assumed(capsys):
    assert main(["memory", "tiny-gpt", "--mode", "infer", "--seq", "32", "--new-tokens", "8", "--kv-dtype", "fp8"]) == 0
    assert "infer, batch 1, bf16" in capsys.readouterr().out
