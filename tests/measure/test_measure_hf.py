"""`layerwise measure CONFIG.json --impl hf`: transformers' own modeling code, measured with the same
tracker and workload as our build (tiny configs; transformers comes with the test extra)."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from layerwise.cli import main
from layerwise.measure.hf import hf_model
from layerwise.measure.step import measure_step
from layerwise.presets.hf import from_hf_config
from layerwise.workload import Workload

LLAMA = {"model_type": "llama", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 176,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "max_position_embeddings": 128, "rms_norm_eps": 1e-5}


@pytest.fixture
def llama_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA))
    return str(path)


def _hf_module(data: dict, workload: Workload):
    return hf_model(data, "config.json", workload, from_hf_config(data)).build()


@pytest.mark.parametrize("workload", [
    Workload(batch=2, seq=16),
    Workload(batch=2, seq=16, attention="eager", precision="bf16-mixed", optimizer="sgd"),
    Workload(batch=1, seq=24, checkpointing="full", attention="eager"),
], ids=["fp32-sdpa", "bf16mixed-eager", "full-ckpt"])
def test_fake_step_agrees_with_a_real_cpu_step_to_the_byte(workload):
    """The fake reading of transformers' model is the real one: the same storages, peaks, phases."""
    target = hf_model(LLAMA, "config.json", workload, from_hf_config(LLAMA))
    fake = measure_step(target, workload, count_flops=False)
    real = measure_step(target, workload, fake=False, count_flops=False)
    assert fake.phase_peaks == real.phase_peaks
    assert fake.components == real.components


MIXTRAL = dict(LLAMA, model_type="mixtral", num_local_experts=4, num_experts_per_tok=2)


@pytest.mark.parametrize("workload", [Workload(batch=2, seq=16, optimizer="sgd"),
                                      Workload(batch=2, seq=16, precision="bf16-mixed", optimizer="sgd")],
                         ids=["fp32", "bf16-mixed"])
def test_moe_grouped_matmuls_under_fake_tensors_agree_with_a_real_step(workload):
    """transformers runs Mixtral's experts through torch._grouped_mm in fp32 (its input cast to the
    weights' dtype, autocast or not); the CPU kernel takes fp32, the meta function only bf16, so the
    tracker gives fake tensors the output the meta function would allocate: the same bytes as real."""
    target = hf_model(MIXTRAL, "config.json", workload, from_hf_config(MIXTRAL))
    fake = measure_step(target, workload, count_flops=False)
    real = measure_step(target, workload, fake=False, count_flops=False)
    assert fake.phase_peaks == real.phase_peaks
    assert fake.components == real.components


T5 = {"model_type": "t5", "vocab_size": 512, "d_model": 64, "d_kv": 16, "num_heads": 4, "d_ff": 128, "num_layers": 2,
      "decoder_start_token_id": 0, "pad_token_id": 0}
BART = {"model_type": "bart", "vocab_size": 512, "d_model": 64, "encoder_attention_heads": 4,
        "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "encoder_layers": 2,
        "decoder_layers": 2, "max_position_embeddings": 64}
MAMBA = {"model_type": "mamba", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "state_size": 8,
         "num_hidden_layers": 2, "time_step_rank": 4}


@pytest.mark.parametrize("data", [T5, BART, MAMBA], ids=["t5", "bart", "mamba"])
@pytest.mark.parametrize("workload", [Workload(batch=2, seq=16, optimizer="sgd"),
                                      Workload(batch=2, seq=16, precision="bf16-mixed", attention="eager",
                                               optimizer="sgd", checkpointing="full")],
                         ids=["fp32-sdpa", "bf16mixed-eager-ckpt"])
def test_seq2seq_and_mamba_fake_steps_agree_with_real_steps(data, workload):
    """AutoModelForSeq2SeqLM fed our (B, S, 2) batch: the source column and the labels (shifted right
    into the decoder input by the model); MambaForCausalLM's reference scan (no CUDA kernels; no
    attention: --attention is refused, and transformers builds it eager). The fake reading is the real one (BART's sdpa
    forward: within 4 KiB of 1.6 MB, a transient of the real CPU kernel's path the fake one does not take)."""
    if data is MAMBA:  # no attention: --attention is refused (tests/cost/test_hf.py)
        workload = workload.with_(attention="sdpa")
    target = hf_model(data, "config.json", workload, from_hf_config(data))
    assert type(target.build()).__name__ in ("T5ForConditionalGeneration", "BartForConditionalGeneration",
                                             "MambaForCausalLM")
    fake = measure_step(target, workload, count_flops=False)
    real = measure_step(target, workload, fake=False, count_flops=False)
    for phase, peak in real.phase_peaks.items():
        assert abs(fake.phase_peaks[phase] - peak) <= 4096
    assert fake.components == real.components


def test_the_switches_reach_transformers():
    """--attention -> attn_implementation; --checkpointing full -> activation checkpointing on
    every decoder layer; fp32 parameters whatever the config's torch_dtype says."""
    data = dict(LLAMA, torch_dtype="bfloat16")
    module = _hf_module(data, Workload(attention="eager", checkpointing="full"))
    assert module.config._attn_implementation == "eager"
    assert all(layer.gradient_checkpointing for layer in module.model.layers)
    assert {p.dtype for p in module.parameters()} == {torch.float32}
    assert _hf_module(data, Workload()).config._attn_implementation == "sdpa"
    assert not any(layer.gradient_checkpointing for layer in _hf_module(data, Workload()).model.layers)


def test_measure_cli_reads_transformers_model(llama_file, capsys):
    """Same parameters as our import of the config (plus transformers' rotary buffers, fp32
    inv_freq and its original copy: d_head / 2 floats each); checkpointing changes the peak."""
    assert main(["measure", llama_file, "--impl", "hf", "--seq", "32", "--batch", "2", "--optimizer", "sgd",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    d_head = LLAMA["hidden_size"] // LLAMA["num_attention_heads"]
    params = from_hf_config(LLAMA).params().total
    assert data["components"]["weights"] == 4 * params + 2 * 4 * (d_head // 2)
    assert sum(data["components"].values()) == data["peak_bytes"]
    assert main(["measure", llama_file, "--impl", "hf", "--seq", "32", "--batch", "2", "--optimizer", "sgd",
                 "--checkpointing", "full", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["peak_bytes"] < data["peak_bytes"]


@pytest.mark.parametrize("argv, words", [
    (["measure", "gpt2", "--impl", "hf"], "config.json"),
    (["measure", "{cfg}", "--impl", "hf", "--lora-rank", "4"], "--lora-rank"),
    (["measure", "{cfg}", "--impl", "hf", "--mode", "infer"], "--mode"),
    (["measure", "{cfg}", "--impl", "hf", "--checkpointing", "selective"], "--checkpointing"),
    (["measure", "{cfg}", "--impl", "hf", "--quant", "nf4"], "--quant"),
    (["measure", "{cfg}", "--impl", "hf", "--real"], "--real"),
    (["measure", "{cfg}", "--impl", "hf", "--input", "16"], "--input"),
    (["measure", "{cfg}", "--impl", "pytorch"], "--impl"),
    (["flops", "{cfg}", "--impl", "hf"], "flops"),
])
def test_flags_that_do_not_apply_are_refused_in_one_line(llama_file, capsys, argv, words):
    assert main([a.replace("{cfg}", llama_file) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_a_config_transformers_cannot_build_is_one_line(tmp_path, capsys):
    """Our importer ignores rope_scaling; transformers validates it (linear scaling needs a factor)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(LLAMA, rope_scaling={"type": "linear"})))
    assert main(["measure", str(path), "--impl", "hf", "--seq", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "transformers cannot build" in err and str(path) in err and len(err.splitlines()) == 1


def test_without_transformers_the_error_says_how_to_install(llama_file, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    assert main(["measure", llama_file, "--impl", "hf", "--seq", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'layerwise[hf]'" in err and len(err.splitlines()) == 1
