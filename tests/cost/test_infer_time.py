"""The inference roofline (cost/infer_time.py) against the closed forms it must reduce to, with
Llama-2-7B's published shape (Touvron et al. 2023, Table 1; 6,738,415,616 parameters in
meta-llama/Llama-2-7b-hf) and the A100 / H100 datasheets."""
from __future__ import annotations

import json

import pytest

from layerwise.cli import main
from layerwise.cost.efficiency import Efficiency
from layerwise.cost.hardware import get_gpu
from layerwise.cost.infer_time import inference_time
from layerwise.presets import get_preset
from layerwise.spec.errors import WorkloadError
from layerwise.workload import Workload

LLAMA_PARAMS, LAYERS, D_MODEL, VOCAB = 6_738_415_616, 32, 4096, 32_000
KV_TOKEN_BF16 = 2 * LAYERS * D_MODEL * 2  # K and V, every layer, 32 heads x 128, 2 bytes
A100 = get_gpu("a100-80gb")
EFF = Efficiency()


@pytest.fixture(scope="module")
def llama():
    return get_preset("llama-2-7b")


def infer(model, gpu=A100, **kw):
    return inference_time(model, Workload(mode="infer", **kw), gpu)


def test_batch_one_decode_reads_every_weight_and_the_cache_per_token(llama):
    t = infer(llama, batch=1, seq=128, new_tokens=1)
    step = t.first_step
    # bf16 weights (2 bytes each) + the 129 cached tokens read + the new token's K/V written
    assert step.bytes_moved == 2 * LLAMA_PARAMS + (129 + 1) * KV_TOKEN_BF16
    assert step.bound == "bandwidth" and t.decode_bound == "bandwidth"
    assert step.memory_seconds == pytest.approx(step.bytes_moved / (2.039e12 * EFF.bandwidth))
    # 2 FLOPs per matmul weight (not the embedding, a lookup, nor the 2 x 32 + 1 RMSNorm gains) +
    # QK^T and PV over 129 keys
    matmul_weights = LLAMA_PARAMS - VOCAB * D_MODEL - (2 * LAYERS + 1) * D_MODEL
    assert step.flops == 2 * matmul_weights + 4 * LAYERS * D_MODEL * 129
    assert t.decode_tokens_per_s == pytest.approx(1 / step.seconds)


def test_prefill_is_compute_bound_at_two_flops_per_parameter_per_token(llama):
    t = infer(llama, batch=8, seq=2048, new_tokens=1)
    tokens = 8 * 2048
    # 2 N T for the projections and head, + QK^T and PV over the 2048 x 2048 scores per layer and head
    textbook = 2 * (LLAMA_PARAMS - VOCAB * D_MODEL) * tokens + 4 * LAYERS * D_MODEL * 2048 * 2048 * 8
    assert t.prefill.flops == pytest.approx(textbook, rel=1e-3)
    assert t.prefill.bound == "compute" and t.ttft_seconds == t.prefill.seconds
    assert t.prefill.seconds == pytest.approx(t.prefill.flops / (312e12 * EFF.matmul))


def test_decode_turns_compute_bound_past_the_ridge_batch(llama):
    """Per step, FLOPs ~ 2 N b and bytes ~ 2 N (bf16 weights): compute wins once b exceeds
    peak x 0.75 / (bandwidth x 0.85) = 135 on an A100 (short context, so the cache is small)."""
    ridge = 312e12 * EFF.matmul / (2.039e12 * EFF.bandwidth)
    assert 130 < ridge < 140
    assert infer(llama, batch=100, seq=8, new_tokens=4).decode_bound == "bandwidth"
    assert infer(llama, batch=180, seq=8, new_tokens=4).decode_bound == "compute"


def test_an_fp8_cache_halves_the_cache_traffic(llama):
    bf16 = infer(llama, batch=16, seq=4096, new_tokens=2)
    fp8 = infer(llama, batch=16, seq=4096, new_tokens=2, kv_dtype="fp8")
    tokens = 16 * (4097 + 1)  # the first step reads 4097 keys per sequence and writes one
    assert bf16.first_step.bytes_moved - fp8.first_step.bytes_moved == tokens * KV_TOKEN_BF16 // 2
    assert fp8.kv_dtype == "fp8" and bf16.kv_dtype == "bf16"
    assert fp8.decode_tokens_per_s > bf16.decode_tokens_per_s


def test_int4_weights_cut_the_batch_one_decode_time(llama):
    bf16 = infer(llama, batch=1, seq=64, new_tokens=1)
    int4 = infer(llama, batch=1, seq=64, new_tokens=1, quant="int4")
    # GPTQ int4: half a byte per matrix weight + scales/zeros; embeddings and head stay bf16
    assert 0.25 < int4.first_step.bytes_moved / bf16.first_step.bytes_moved < 0.35


def test_the_decode_sums_its_steps_as_the_context_grows(llama):
    t = infer(llama, batch=32, seq=1024, new_tokens=64)
    assert t.last_step.bytes_moved - t.first_step.bytes_moved == 32 * 63 * KV_TOKEN_BF16
    assert t.first_step.seconds * 64 < t.decode_seconds < t.last_step.seconds * 64


def run_json(capsys, *args):
    assert main(["time", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_gives_one_row_per_gpu_in_bf16_by_default(capsys):
    out = run_json(capsys, "llama-2-7b", "--mode", "infer", "--gpu", "a100-80gb,h100-sxm", "--new-tokens", "16",
                   "--seq", "512")
    assert out["precision"] == "bf16" and out["kv_dtype"] == "bf16" and out["prompt_tokens"] == 512
    a100, h100 = out["gpus"]
    assert (a100["gpu"], h100["gpu"]) == ("a100-80gb", "h100-sxm")
    # batch 1: bandwidth-bound, so the speed-up is the bandwidth ratio (3.35 / 2.039 TB/s)
    assert h100["decode_tokens_per_s"] / a100["decode_tokens_per_s"] == pytest.approx(3.35 / 2.039)
    assert a100["ttft_seconds"] == a100["prefill_seconds"] and a100["fits"] is True


def test_a_gpu_without_bf16_gets_fp16_and_says_so(capsys):
    out = run_json(capsys, "llama-2-7b", "--mode", "infer", "--gpu", "v100-32gb", "--new-tokens", "4")
    assert out["precision"] == "fp16" and out["gpus"][0]["peak_dtype"] == "fp16"


@pytest.mark.parametrize("args,message", [
    (["--mode", "infer", "--gpu", "a100-80gb", "--new-tokens", "8", "--tp", "2"], "--tp: a training setting"),
    (["--mode", "infer", "--gpu", "a100-80gb"], "needs --new-tokens"),
    (["--gpu", "a100-80gb", "--new-tokens", "8"], "--new-tokens: inference settings; add --mode infer"),
    (["--gpu", "a100-80gb,h100-sxm"], "several, comma-separated, with --mode infer"),
    (["--gpu", "a100-80gb", "--mode", "serve"], "--mode must be train or infer"),
])
def test_flags_of_the_other_mode_are_refused(capsys, args, message):
    assert main(["time", "llama-2-7b", *args]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")


def test_a_model_without_a_kv_cache_is_refused():
    with pytest.raises(WorkloadError, match="no KV-cache decoding"):
        infer(get_preset("vit-b-16"), batch=1, new_tokens=4)


def test_the_web_api_answers_as_the_cli():
    from layerwise.serve.api import Api

    body = {"model": "llama-2-7b", "workload": {"mode": "infer", "gpu": "a100-80gb", "new_tokens": 8, "batch": 4}}
    out = Api().handle("time", json.dumps(body).encode())
    assert out["mode"] == "infer" and out["batch"] == 4 and out["gpus"][0]["decode_bound"] == "bandwidth"
