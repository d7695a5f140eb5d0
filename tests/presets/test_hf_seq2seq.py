"""Encoder-decoder Hugging Face configs (layerwise.presets.hf_seq2seq): parameters counted exactly as
transformers' own AutoModelForSeq2SeqLM counts them (built on the meta device from the same config,
unique parameters), at full size and tiny (our built module too, and its forward)."""
from __future__ import annotations

import pytest
import torch

from layerwise.presets import get_preset
from layerwise.presets.hf import from_hf_config
from layerwise.spec.errors import LayerwiseError

transformers = pytest.importorskip("transformers", reason="transformers comes with the test extra")

# The architecture keys of each public config.json (source: the preset's URL).
FULL = {
    "bart-base": dict(model_type="bart", vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6,
                      encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072,
                      decoder_ffn_dim=3072, max_position_embeddings=1024, activation_function="gelu", dropout=0.1,
                      attention_dropout=0.0, activation_dropout=0.0, scale_embedding=False),
    "bart-large": dict(model_type="bart", vocab_size=50265, d_model=1024, encoder_layers=12, decoder_layers=12,
                       encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                       decoder_ffn_dim=4096, max_position_embeddings=1024, activation_function="gelu", dropout=0.1,
                       attention_dropout=0.0, activation_dropout=0.0, scale_embedding=False),
}
TINY = {
    "bart": dict(model_type="bart", vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=3,
                 encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48,
                 max_position_embeddings=64),
}


def transformers_count(config: dict) -> int:
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    with torch.device("meta"):
        model = AutoModelForSeq2SeqLM.from_config(AutoConfig.for_model(**config))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(FULL))
def test_preset_and_import_count_what_transformers_counts(name):
    expected = transformers_count(FULL[name])
    assert get_preset(name).params().total == expected
    assert from_hf_config(FULL[name]).params().total == expected


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_configs_count_and_build_like_transformers(name):
    model = from_hf_config(TINY[name], name=name)
    expected = transformers_count(TINY[name])
    assert model.params().total == expected
    module = model.build()
    assert sum(p.numel() for p in module.parameters()) == expected
    with torch.no_grad():
        assert tuple(module(torch.randint(0, 96, (2, 8, 2))).shape) == (2, 8, 96)


def test_unsupported_bart_fields_are_named():
    with pytest.raises(LayerwiseError, match="'decoder_ffn_dim'"):
        from_hf_config(dict(TINY["bart"], decoder_ffn_dim=64))
    with pytest.raises(LayerwiseError, match="'add_final_layer_norm'"):
        from_hf_config(dict(TINY["bart"], add_final_layer_norm=True))
    with pytest.raises(LayerwiseError, match="'encoder_layers'"):
        from_hf_config({k: v for k, v in TINY["bart"].items() if k != "encoder_layers"})
