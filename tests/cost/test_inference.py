"""KV cache (memory_flops_facts.md §7), quantized weight storage, and what fits a budget."""
from __future__ import annotations

import json

import pytest

from layerwise.cost.inference import QuantConfig, inference_memory, quantized_matrix_bytes, weight_bytes
from layerwise.cost.kv_cache import KVConfig, kv_bytes_per_token, kv_cache_bytes, max_batch, max_context
from layerwise.spec.errors import WorkloadError

from refdata import HF_CONFIGS as HF


def _from_hf(name: str, dtype: str = "fp16") -> KVConfig:
    c = json.loads((HF / f"{name}.json").read_text())
    layers = c.get("num_hidden_layers", c.get("n_layer"))
    heads = c.get("num_attention_heads", c.get("n_head"))
    d_model = c.get("hidden_size", c.get("n_embd"))
    return KVConfig(layers, c.get("num_key_value_heads", heads), c.get("head_dim") or d_model // heads, dtype,
                    sliding_window=c.get("sliding_window") or 0)


@pytest.mark.parametrize("cfg,expected", [
    (KVConfig(80, 8, 128), 327_680),  # Llama-2-70B GQA: 320 KiB/token (facts §7)
    (KVConfig(80, 64, 128), 2_621_440),  # the same model if it were MHA: 8x more
    (KVConfig(40, 40, 128), 819_200),  # OPT-13B, vLLM paper §3 "800 KB"
    (KVConfig(32, 8, 128), 131_072),  # Llama-3-8B
])
def test_kv_bytes_per_token_published(cfg, expected):
    assert kv_bytes_per_token(cfg) == expected


@pytest.mark.parametrize("name,expected", [("gpt2", 36_864), ("llama-2-7b", 524_288), ("llama-2-13b", 819_200),
                                           ("mistral-7b-v0.1", 131_072)])
def test_kv_bytes_from_hf_configs(name, expected):
    assert kv_bytes_per_token(_from_hf(name)) == expected


def test_opt_13b_full_context_request_is_1_6_gb():
    # vLLM §3: "as much as 1.6 GB" for 2048 tokens of OPT-13B
    assert kv_cache_bytes(KVConfig(40, 40, 128), batch=1, prompt=2048) == 819_200 * 2048
    assert kv_cache_bytes(KVConfig(40, 40, 128), batch=1, prompt=2048) / 1e9 == pytest.approx(1.68, abs=0.01)


def test_mistral_sliding_window_halves_the_cache_at_8192():
    # Mistral blog: the 4096 rolling buffer "saves half of the cache memory ... sequence length 8192"
    mistral = _from_hf("mistral-7b-v0.1")
    assert mistral.sliding_window == 4096
    full = kv_cache_bytes(KVConfig(32, 8, 128), batch=1, prompt=8000, new_tokens=192)
    assert kv_cache_bytes(mistral, batch=1, prompt=8000, new_tokens=192) * 2 == full


def test_max_context_and_batch_are_the_largest_that_fit():
    cfg = KVConfig(32, 8, 128)
    budget, fixed = 24 * 2**30, 14 * 2**30
    ctx = max_context(cfg, budget_bytes=budget, fixed_bytes=fixed, batch=4)
    assert fixed + kv_cache_bytes(cfg, batch=4, prompt=ctx.value) <= budget
    assert fixed + kv_cache_bytes(cfg, batch=4, prompt=ctx.value + 1) > budget
    bat = max_batch(cfg, budget_bytes=budget, fixed_bytes=fixed, tokens=4096)
    assert fixed + kv_cache_bytes(cfg, batch=bat.value, prompt=4096) <= budget
    assert fixed + kv_cache_bytes(cfg, batch=bat.value + 1, prompt=4096) > budget
    with pytest.raises(WorkloadError, match="exceed"):
        max_batch(cfg, budget_bytes=1, fixed_bytes=2, tokens=1)


def test_quantized_storage_per_param_matches_the_papers():
    shape = (4096, 4096)
    n = 4096 * 4096
    # QLoRA §3: double quantization brings the constants to 8/64 + 32/(64*256) = 0.127 bits/param
    nf4_dq = quantized_matrix_bytes(shape, QuantConfig("nf4"))
    assert (nf4_dq * 8 - 4 * n) / n == pytest.approx(0.127, abs=5e-4)
    # without DQ: one fp32 absmax per 64 = 0.5 bits/param
    assert quantized_matrix_bytes(shape, QuantConfig("nf4", double_quant=False)) * 8 == 4 * n + n // 2
    # GPTQ g=128, fp16 scale + 4-bit zero per group: 4 + 20/128 bits/param
    assert quantized_matrix_bytes(shape, QuantConfig("int4")) * 8 == 4 * n + 20 * n // 128
    assert quantized_matrix_bytes(shape, QuantConfig("int8")) == n + 2 * 4096


def test_weight_bytes_keep_embeddings_and_norms_unquantized():
    params = {"embed.weight": (32000, 512), "blocks.0.attn.q_proj.weight": (512, 512),
              "blocks.0.attn_norm.weight": (512,), "lm_head.weight": (32000, 512)}
    got = weight_bytes(params, QuantConfig("int8"))
    assert got == 2 * 32000 * 512 * 2 + (512 * 512 + 2 * 512) + 2 * 512
    assert weight_bytes(params, QuantConfig("none", dtype="fp32")) == 4 * (2 * 32000 * 512 + 512 * 512 + 512)
    mem = inference_memory(params, KVConfig(1, 8, 64), batch=2, prompt=10, new_tokens=6, activation_peak=100)
    assert mem.total == weight_bytes(params) + 2 * 16 * 2 * 8 * 64 * 2 + 100


def test_bad_quant_names_the_flag():
    with pytest.raises(WorkloadError, match="--quant"):
        QuantConfig("int3")


@pytest.mark.parametrize("preset,expected", [("llama-2-70b", 327_680), ("gpt2", 36_864), ("llama-3-8b", 131_072),
                                             ("llama-2-7b", 524_288)])
def test_kv_configs_from_presets(preset, expected):
    from layerwise.cost.kv_cache import kv_configs
    from layerwise.presets import resolve_model

    cfgs = kv_configs(resolve_model(preset).body)
    assert sum(kv_bytes_per_token(c) for c in cfgs) == expected


def test_kv_configs_keep_mistral_window():
    from layerwise.cost.kv_cache import kv_configs
    from layerwise.presets import resolve_model

    (cfg,) = kv_configs(resolve_model("mistral-7b").body)
    assert (cfg.n_layers, cfg.n_kv_heads, cfg.d_head, cfg.sliding_window) == (32, 8, 128, 4096)
