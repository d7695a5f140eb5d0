"""The architectures people use now (issue 10): each imported from its config.json and counted
exactly as transformers' own modeling classes count it (built on the meta device from the same
config, `sum(p.numel())` over unique parameters), at full size (the preset) and at a tiny size
(our built module too)."""
from __future__ import annotations

import pytest
import torch

from layerwise.cost.flops import model_flops
from layerwise.cost.memory import training_memory
from layerwise.measure.step import measure_step
from layerwise.presets import get_preset
from layerwise.presets.hf import from_hf_config
from layerwise.spec.errors import LayerwiseError
from layerwise.workload import Workload

transformers = pytest.importorskip("transformers", reason="transformers comes with the test extra")

# The architecture keys of each public config.json (source: the preset's URL).
FULL = {
    "pythia-160m": dict(model_type="gpt_neox", vocab_size=50304, hidden_size=768, num_hidden_layers=12,
                        num_attention_heads=12, intermediate_size=3072, max_position_embeddings=2048, rotary_pct=0.25,
                        use_parallel_residual=True, hidden_act="gelu", layer_norm_eps=1e-5, tie_word_embeddings=False),
    "pythia-1b": dict(model_type="gpt_neox", vocab_size=50304, hidden_size=2048, num_hidden_layers=16,
                      num_attention_heads=8, intermediate_size=8192, max_position_embeddings=2048, rotary_pct=0.25,
                      use_parallel_residual=True, hidden_act="gelu", layer_norm_eps=1e-5, tie_word_embeddings=False),
    "falcon-7b": dict(model_type="falcon", vocab_size=65024, hidden_size=4544, num_hidden_layers=32,
                      num_attention_heads=71, multi_query=True, parallel_attn=True, bias=False, alibi=False,
                      new_decoder_architecture=False, layer_norm_epsilon=1e-5, max_position_embeddings=2048),
    "qwen3-0.6b": dict(model_type="qwen3", vocab_size=151936, hidden_size=1024, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, intermediate_size=3072,
                       max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1e6, attention_bias=False,
                       hidden_act="silu", tie_word_embeddings=True),
    "gemma-2b": dict(model_type="gemma", vocab_size=256000, hidden_size=2048, num_hidden_layers=18,
                     num_attention_heads=8, num_key_value_heads=1, head_dim=256, intermediate_size=16384,
                     max_position_embeddings=8192, rms_norm_eps=1e-6, hidden_act="gelu", attention_bias=False),
    "gemma-2-2b": dict(model_type="gemma2", vocab_size=256000, hidden_size=2304, num_hidden_layers=26,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256, intermediate_size=9216,
                       max_position_embeddings=8192, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
                       sliding_window=4096, final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
    "gemma-3-1b": dict(model_type="gemma3_text", vocab_size=262144, hidden_size=1152, num_hidden_layers=26,
                       num_attention_heads=4, num_key_value_heads=1, head_dim=256, intermediate_size=6912,
                       max_position_embeddings=32768, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
                       sliding_window=512, rope_theta=1e6),
    "qwen1.5-moe-a2.7b": dict(model_type="qwen2_moe", vocab_size=151936, hidden_size=2048, num_hidden_layers=24,
                              num_attention_heads=16, num_key_value_heads=16, intermediate_size=5632,
                              moe_intermediate_size=1408, shared_expert_intermediate_size=5632, num_experts=60,
                              num_experts_per_tok=4, max_position_embeddings=8192, rms_norm_eps=1e-6,
                              rope_theta=1e6, tie_word_embeddings=False, decoder_sparse_step=1, mlp_only_layers=[]),
    "qwen3-30b-a3b": dict(model_type="qwen3_moe", vocab_size=151936, hidden_size=2048, num_hidden_layers=48,
                          num_attention_heads=32, num_key_value_heads=4, head_dim=128, intermediate_size=6144,
                          moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8,
                          max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1e6,
                          tie_word_embeddings=False, decoder_sparse_step=1, mlp_only_layers=[]),
}

# Tiny configs that exercise the other branches of each importer.
TINY = {
    "gpt_neox": dict(model_type="gpt_neox", vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=80, max_position_embeddings=64, rotary_pct=0.5, use_parallel_residual=False,
                     attention_bias=False, tie_word_embeddings=False),
    "falcon-40b-style": dict(model_type="falcon", vocab_size=96, hidden_size=64, num_hidden_layers=2,
                             num_attention_heads=8, num_kv_heads=2, new_decoder_architecture=True, parallel_attn=True,
                             bias=False, max_position_embeddings=64),
    "falcon-sequential-biased": dict(model_type="falcon", vocab_size=96, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, multi_query=False, parallel_attn=False, bias=True,
                                     ffn_hidden_size=80, max_position_embeddings=64),
    "qwen3-biased": dict(model_type="qwen3", vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, intermediate_size=48, max_position_embeddings=64,
                         attention_bias=True, tie_word_embeddings=False),
    "gemma2": dict(model_type="gemma2", vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, intermediate_size=64, max_position_embeddings=64),
    "gemma3_text": dict(model_type="gemma3_text", vocab_size=96, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=64,
                        max_position_embeddings=64),
    "qwen2_moe": dict(model_type="qwen2_moe", vocab_size=96, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, moe_intermediate_size=16,
                      shared_expert_intermediate_size=48, num_experts=6, num_experts_per_tok=2,
                      max_position_embeddings=64, tie_word_embeddings=False),
    "qwen3_moe": dict(model_type="qwen3_moe", vocab_size=96, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=64,
                      moe_intermediate_size=16, num_experts=6, num_experts_per_tok=2, max_position_embeddings=64,
                      tie_word_embeddings=False),
    "gemma": dict(model_type="gemma", vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=1, head_dim=16, intermediate_size=64, max_position_embeddings=64),
}


def transformers_count(config: dict) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(FULL))
def test_preset_and_import_count_what_transformers_counts(name):
    check_full_count(name, FULL[name], transformers_count)


def check_full_count(name: str, config: dict, count) -> None:
    """The preset and the import of its config.json count what transformers' class (`count`) counts."""
    expected = count(config)
    assert get_preset(name).params().total == expected
    assert from_hf_config(config).params().total == expected


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_configs_count_and_build_like_transformers(name):
    check_tiny_count(name, TINY[name], transformers_count)


def check_tiny_count(name: str, config: dict, count):
    """A tiny config's import counts, and its built module holds, what transformers' class counts;
    returns the built module."""
    model = from_hf_config(config, name=name)
    expected = count(config)
    assert model.params().total == expected
    module = model.build()
    assert sum(p.numel() for p in module.parameters()) == expected
    return module
    x = torch.randint(0, 96, (2, 8))
    with torch.no_grad():
        assert tuple(module(x).shape) == (2, 8, 96)


def test_the_wiring_each_config_implies():
    falcon = from_hf_config(FULL["falcon-7b"]).body
    assert falcon.block.parallel and falcon.block.shared_norm and falcon.block.attn.n_kv_heads == 1
    assert falcon.tie_embeddings
    new = from_hf_config(TINY["falcon-40b-style"]).body
    assert new.block.parallel and not new.block.shared_norm and new.block.attn.n_kv_heads == 2
    qwen3 = from_hf_config(FULL["qwen3-0.6b"]).body.block.attn
    assert qwen3.qk_norm == "rmsnorm" and qwen3.head_dim == 128
    gemma = from_hf_config(FULL["gemma-2b"]).body
    assert gemma.block.ffn.activation == "gelu_tanh" and gemma.block.ffn.gated and gemma.block.attn.head_dim == 256
    assert not gemma.block.sandwich
    gemma3 = from_hf_config(FULL["gemma-3-1b"]).body.block
    assert gemma3.sandwich and gemma3.attn.qk_norm == "rmsnorm"
    assert from_hf_config(FULL["gemma-2-2b"]).body.block.attn.qk_norm == "none"


def test_unknown_model_type_names_the_nearest_supported_one():
    with pytest.raises(LayerwiseError, match=r"model_type 'deepseek_v4' is not supported; the nearest supported is "
                                             r"'deepseek_v3'"):
        from_hf_config({"model_type": "deepseek_v4"})
    with pytest.raises(LayerwiseError, match=r"'mlp_only_layers'"):
        from_hf_config(dict(FULL["qwen3-30b-a3b"], mlp_only_layers=[0]))
    with pytest.raises(LayerwiseError, match=r"'alibi' true"):
        from_hf_config(dict(FULL["falcon-7b"], alibi=True))


SMALL = dict(n_layers=2, vocab_size=512, d_model=64, d_ff=128, n_heads=4, d_head=16)


@pytest.mark.parametrize("name", sorted(FULL))
@pytest.mark.parametrize("workload", [Workload(batch=2, seq=32),
                                      Workload(batch=2, seq=32, precision="bf16-mixed", attention="eager")],
                         ids=["fp32-sdpa", "bf16mixed-eager"])
def test_memory_and_flops_of_each_architecture_match_its_built_module(name, workload):
    """The cost reading against the measure reading (storage tracker, FlopCounterMode's formulas)
    on each preset's wiring at a small width."""
    kv = 1 if get_preset(name).body.block.attn.n_kv_heads == 1 else 2
    small = dict(SMALL, n_kv_heads=0 if name.startswith("pythia") else kv)
    if "moe" in name or "a3b" in name:  # experts: 4 of width 32, top 2 (shared: 48)
        small.update(n_experts=4, top_k=2, d_ff=32, **({"shared_d_ff": 48} if "1.5" in name else {}))
    model = get_preset(name, **small)
    measured = measure_step(model, workload)
    analytic = training_memory(model, workload)
    assert abs(analytic.peak_bytes / measured.peak_bytes - 1) < 0.02
    assert model_flops(model, workload).flops.fwd_matmul == measured.flops_forward


CLIP_B32 = dict(model_type="clip_vision_model", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)
CLIP_TINY = dict(CLIP_B32, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 image_size=32, patch_size=8)


def clip_vision(config: dict):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    return CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in config.items() if k != "model_type"}))


_CLIP_NAMES = {"patch_embed.proj": "embeddings.patch_embedding", "cls": "embeddings.class_embedding",
               "pos": "embeddings.position_embedding", "pre_norm": "pre_layrnorm", "final_norm": "post_layernorm",
               "attn_norm": "layer_norm1", "ffn_norm": "layer_norm2", "attn.o_proj": "self_attn.out_proj",
               "attn": "self_attn", "ffn.up_proj": "mlp.fc1", "ffn.down_proj": "mlp.fc2", "blocks": "encoder.layers"}


def _clip_name(ours: str) -> str:
    """Our parameter path -> CLIPVisionModel's (the CLS token is a bare parameter there)."""
    if ours == "cls.weight":
        return "embeddings.class_embedding"
    parts, out, i = ours.split("."), [], 0
    while i < len(parts):  # a two-segment name (patch_embed.proj, attn.o_proj) before a one-segment one
        two = ".".join(parts[i:i + 2])
        step = 2 if two in _CLIP_NAMES else 1
        out.append(_CLIP_NAMES.get(".".join(parts[i:i + step]), parts[i]))
        i += step
    return ".".join(out)


def test_clip_vision_counts_builds_and_computes_like_transformers():
    with torch.device("meta"):
        expected = sum(p.numel() for p in clip_vision(CLIP_B32).parameters())
    assert get_preset("clip-vit-b-32").params().total == from_hf_config(CLIP_B32).params().total == expected
    tiny = from_hf_config(CLIP_TINY)
    reference = clip_vision(CLIP_TINY).eval()
    module = tiny.build().eval()
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in reference.parameters())
    # the same function: transformers' weights copied in, its pooled output reproduced
    theirs = dict(reference.named_parameters())
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(theirs[_clip_name(name)].reshape(p.shape))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(module(x), reference(pixel_values=x).pooler_output, rtol=1e-4, atol=1e-5)
    with pytest.raises(LayerwiseError, match="vision_config"):
        from_hf_config(dict(CLIP_B32, model_type="clip"))


@pytest.mark.parametrize("workload", [Workload(batch=2), Workload(batch=2, precision="bf16-mixed", attention="eager")],
                         ids=["fp32-sdpa", "bf16mixed-eager"])
def test_clip_memory_and_flops_match_its_built_module(workload):
    model = from_hf_config(CLIP_TINY)
    measured = measure_step(model, workload)
    assert abs(training_memory(model, workload).peak_bytes / measured.peak_bytes - 1) < 0.02
    assert model_flops(model, workload).flops.fwd_matmul == measured.flops_forward
