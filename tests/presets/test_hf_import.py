"""Hugging Face config.json import: the refdata configs give the presets' counts; other model
types give their published counts; built modules agree; bad configs give clear errors."""
from __future__ import annotations

import json

import pytest
import torch

from layerwise.presets import get_preset, resolve_model
from layerwise.presets.hf import IMPORTERS, from_hf_config, load_hf_config
from layerwise.spec.errors import LayerwiseError
from layerwise.spec.io import dump
from layerwise.spec.model import Model

from refdata import HF_CONFIGS as CONFIGS
AS_PRESET = {"gpt2": "gpt2", "gpt2-medium": "gpt2-medium", "llama-2-7b": "llama-2-7b", "llama-2-13b": "llama-2-13b",
             "mistral-7b-v0.1": "mistral-7b", "mixtral-8x7b-v0.1": "mixtral-8x7b", "bert-base-uncased": "bert-base",
             "vit-base-patch16-224": "vit-b-16", "qwen3-0.6b": "qwen3-0.6b", "gemma-2b": "gemma-2b",
             "gemma-2-2b": "gemma-2-2b", "gemma-3-1b-pt": "gemma-3-1b", "falcon-7b": "falcon-7b",
             "deepseek-v2-lite": "deepseek-v2-lite", "deepseek-v3": "deepseek-v3",
             "qwen1.5-moe-a2.7b": "qwen1.5-moe-a2.7b", "qwen3-30b-a3b": "qwen3-30b-a3b",
             "clip-vit-base-patch32-vision": "clip-vit-b-32"}


def test_every_refdata_config_is_covered():
    assert {p.stem for p in CONFIGS.glob("*.json") if not p.stem.startswith("_")} == set(AS_PRESET)


@pytest.mark.parametrize("stem", sorted(AS_PRESET))
def test_refdata_config_counts_equal_preset(stem):
    model = resolve_model(str(CONFIGS / f"{stem}.json"))
    preset = get_preset(AS_PRESET[stem])
    assert model.params() == preset.params()
    assert model.body.active_params() == preset.body.active_params()
    assert model.task == preset.task and model.input.shape == preset.input.shape


def test_config_implied_facts():
    gpt2 = load_hf_config(CONFIGS / "gpt2.json").body
    assert gpt2.tie_embeddings and "lm_head" not in dict(gpt2.children())  # GPT2LMHeadModel ties wte
    llama = load_hf_config(CONFIGS / "llama-2-7b.json").body
    assert not llama.tie_embeddings and llama.block.norm == "rmsnorm" and not llama.block.attn.qkv_bias
    assert load_hf_config(CONFIGS / "mistral-7b-v0.1.json").body.block.attn.sliding_window == 4096
    bert = load_hf_config(CONFIGS / "bert-base-uncased.json").body
    assert bert.block.norm_position == "post" and bert.pooler


# Configs of other model types (architecture keys of the public config.json files) and the counts
# transformers' num_parameters() reports for them (not in refdata; model pages: 125M, 162M (Pythia
# table), 125M, 2.78B, 3.82B, 494M).
OTHER = {
    "opt-125m": (dict(model_type="opt", vocab_size=50272, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      ffn_dim=3072, max_position_embeddings=2048, word_embed_proj_dim=768, do_layer_norm_before=True,
                      activation_function="relu", enable_bias=True), 125_239_296),
    "pythia-160m": (dict(model_type="gpt_neox", vocab_size=50304, hidden_size=768, num_hidden_layers=12,
                         num_attention_heads=12, intermediate_size=3072, max_position_embeddings=2048, rotary_pct=0.25,
                         rotary_emb_base=10000, use_parallel_residual=True, hidden_act="gelu", layer_norm_eps=1e-5,
                         tie_word_embeddings=False), 162_322_944),
    "roberta-base": (dict(model_type="roberta", vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                          num_attention_heads=12, intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                          pad_token_id=1, hidden_act="gelu", layer_norm_eps=1e-5), 124_645_632),
    "phi-2": (dict(model_type="phi", vocab_size=51200, hidden_size=2560, num_hidden_layers=32, num_attention_heads=32,
                   intermediate_size=10240, max_position_embeddings=2048, partial_rotary_factor=0.4, hidden_act="gelu_new",
                   layer_norm_eps=1e-5, tie_word_embeddings=False, qk_layernorm=False), 2_779_683_840),
    "phi-3-mini-4k": (dict(model_type="phi3", vocab_size=32064, hidden_size=3072, num_hidden_layers=32,
                           num_attention_heads=32, num_key_value_heads=32, intermediate_size=8192,
                           max_position_embeddings=4096, rms_norm_eps=1e-5, hidden_act="silu",
                           tie_word_embeddings=False), 3_821_079_552),
    "qwen2-0.5b": (dict(model_type="qwen2", vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                        num_key_value_heads=2, intermediate_size=4864, max_position_embeddings=32768, rms_norm_eps=1e-6,
                        tie_word_embeddings=True, hidden_act="silu", rope_theta=1e6), 494_032_768),
}


@pytest.mark.parametrize("name", sorted(OTHER))
def test_other_model_types_published_and_built(name):
    config, count = OTHER[name]
    model = from_hf_config(config, name=name)
    assert model.params().total == count
    with torch.device("meta"):
        module = model.build()
    assert sum(p.numel() for p in module.parameters()) == count


def test_roberta_positions_and_phi_wiring():
    roberta = from_hf_config(OTHER["roberta-base"][0])
    assert roberta.body.max_seq == 514 and roberta.input.max_seq == 512  # 2 rows before the first position
    phi = from_hf_config(OTHER["phi-2"][0]).body
    assert phi.block.parallel and phi.block.shared_norm and phi.head_bias
    assert from_hf_config(OTHER["phi-2"][0]).params() == get_preset("phi-2").params()
    neox = from_hf_config(OTHER["pythia-160m"][0]).body
    assert neox.block.parallel and not neox.block.shared_norm  # two norms, one per branch
    assert from_hf_config(OTHER["opt-125m"][0]).body.pos_rows == 2050  # OPT's offset of 2


@pytest.mark.parametrize("name", sorted(OTHER) + ["vit", "bert"])
def test_tiny_import_runs_forward(name):
    config = (OTHER[name][0] if name in OTHER else
              json.loads((CONFIGS / ("vit-base-patch16-224.json" if name == "vit" else "bert-base-uncased.json")).read_text()))
    tiny = dict(d_model=32, n_heads=4, n_layers=1, d_ff=48)
    if name == "vit":
        tiny.update(image_size=16, patch=4)
    else:
        tiny.update(vocab_size=64, max_seq=16 + (2 if name == "roberta-base" else 0))
    if config.get("num_key_value_heads", 0) not in (0, config.get("num_attention_heads")):
        tiny["n_kv_heads"] = 2
    model = from_hf_config(config, name=name, **tiny)
    module = model.build().eval()
    shape = model.input_shape(2)
    x = torch.randn(shape) if model.input.kind == "image" else torch.randint(0, 64, shape)
    with torch.no_grad():
        y = module(x)
    assert tuple(y.shape) == model.out_shape(shape)
    assert sum(p.numel() for p in module.parameters()) == model.params().total


def test_every_supported_type_is_tested():
    from test_hf_architectures import CLIP_B32, FULL, TINY  # the newer architectures, against transformers

    tested = {c["model_type"] for c, _ in OTHER.values()} | {"gpt2", "llama", "mistral", "mixtral", "bert", "vit"}
    tested |= {c["model_type"] for c in (*FULL.values(), *TINY.values(), CLIP_B32)} | {"clip"}  # clip: refused
    from test_hf_seq2seq import FULL as S2S_FULL, TINY as S2S_TINY  # the encoder-decoders

    from test_hf_mamba import TINY as MAMBA_TINY

    tested |= {c["model_type"] for c in (*S2S_FULL.values(), *S2S_TINY.values(), MAMBA_TINY)}
    from test_hf_deepseek import TINY as DEEPSEEK_TINY

    tested |= {c["model_type"] for c in DEEPSEEK_TINY.values()}
    assert tested == set(IMPORTERS)


# ---- errors -----------------------------------------------------------------------------------------
def test_unsupported_model_type_names_the_supported_ones():
    with pytest.raises(LayerwiseError, match=r"model_type 'mamba2' is not supported; the nearest supported is '.*' \(supported: .*llama.*\)"):
        from_hf_config({"model_type": "mamba2", "d_model": 512})


@pytest.mark.parametrize("config,message", [
    ({"model_type": "llama", "hidden_size": 64}, "model_type 'llama' needs 'num_attention_heads', which is missing"),
    (dict(OTHER["opt-125m"][0], hidden_size="768"), "'hidden_size' must be a positive integer"),
    (dict(OTHER["phi-2"][0], hidden_act="mish"), "'hidden_act' 'mish' is not supported"),
    (dict(OTHER["opt-125m"][0], word_embed_proj_dim=512), "project_in"),
    (dict(OTHER["roberta-base"][0], position_embedding_type="relative_key"), "only 'absolute'"),
    ({"architectures": ["X"]}, "no 'model_type'"),
    ([1, 2], "expected a JSON object"),
])
def test_malformed_configs(config, message):
    with pytest.raises(LayerwiseError, match=message):
        from_hf_config(config)


def test_resolve_model_files_and_errors(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "llama",')
    with pytest.raises(LayerwiseError, match="config.json"):
        resolve_model(str(bad))  # not JSON: loaded as a spec file, which reports the file and line
    spec = tmp_path / "m.yaml"
    dump(get_preset("tiny-gpt"), spec)
    assert resolve_model(str(spec)) == get_preset("tiny-gpt")
    bare = tmp_path / "b.yaml"
    dump(get_preset("tiny-gpt").body, bare)
    with pytest.raises(LayerwiseError, match="bare 'decoder_lm' block with no input"):
        resolve_model(str(bare))
    with pytest.raises(LayerwiseError, match="no such file"):
        resolve_model(str(tmp_path / "missing.json"))
    with pytest.raises(LayerwiseError, match="did you mean 'gpt2'"):
        resolve_model("gtp2")
    assert isinstance(resolve_model("resnet-18"), Model)
