"""Encoder-decoder Hugging Face configs (layerwise.presets.hf_seq2seq): parameters counted exactly as
transformers' own AutoModelForSeq2SeqLM counts them (built on the meta device from the same config,
unique parameters), at full size and tiny (our built module too, and its forward)."""
from __future__ import annotations

import pytest
import torch

from layerwise.presets import get_preset
from layerwise.presets.hf import from_hf_config
from layerwise.spec.errors import LayerwiseError
from tests.presets.test_hf_architectures import check_full_count, check_tiny_count

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
    "t5-small": dict(model_type="t5", vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
                     relative_attention_num_buckets=32, feed_forward_proj="relu", dropout_rate=0.1,
                     layer_norm_epsilon=1e-6, n_positions=512),
    "flan-t5-base": dict(model_type="t5", vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12,
                         num_decoder_layers=12, num_heads=12, relative_attention_num_buckets=32,
                         relative_attention_max_distance=128, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                         dropout_rate=0.1),
}
TINY = {
    "t5": dict(model_type="t5", vocab_size=96, d_model=32, d_kv=16, d_ff=48, num_layers=2, num_decoder_layers=3,
               num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16),
    "t5-gated-silu": dict(model_type="t5", vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=2,
                          feed_forward_proj="gated-silu"),
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
    check_full_count(name, FULL[name], transformers_count)


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_configs_count_and_build_like_transformers(name):
    module = check_tiny_count(name, TINY[name], transformers_count)
    with torch.no_grad():
        assert tuple(module(torch.randint(0, 96, (2, 8, 2))).shape) == (2, 8, 96)


def test_t5_relative_bias_matches_transformers():
    """Our bucketing and (1, H, S, Sk) layout against T5Attention.compute_bias with the same table."""
    from transformers.models.t5.modeling_t5 import T5Attention

    from layerwise.build.relbias import RelativePositionBiasModule

    for bidirectional in (True, False):
        cfg = transformers.T5Config(d_model=32, d_kv=8, num_heads=4, relative_attention_num_buckets=32,
                                    relative_attention_max_distance=128, is_decoder=not bidirectional)
        ref = T5Attention(cfg, has_relative_attention_bias=True)
        ours = RelativePositionBiasModule(32, 4, 128, bidirectional)
        with torch.no_grad():
            ours.weight.copy_(ref.relative_attention_bias.weight)
            torch.testing.assert_close(ours(200, 200), ref.compute_bias(200, 200))
            torch.testing.assert_close(ours(3, 150, 147), ref.compute_bias(3, 150, past_seen_tokens=147))


def test_unsupported_bart_fields_are_named():
    with pytest.raises(LayerwiseError, match="'decoder_ffn_dim'"):
        from_hf_config(dict(TINY["bart"], decoder_ffn_dim=64))
    with pytest.raises(LayerwiseError, match="'add_final_layer_norm'"):
        from_hf_config(dict(TINY["bart"], add_final_layer_norm=True))
    with pytest.raises(LayerwiseError, match="'feed_forward_proj'"):
        from_hf_config(dict(TINY["t5"], feed_forward_proj="gated-gelu-x"))
    with pytest.raises(LayerwiseError, match="'encoder_layers'"):
        from_hf_config({k: v for k, v in TINY["bart"].items() if k != "encoder_layers"})
