"""Attention-probability dropout reaches the spec, the built module and both readings (issue #9:
HF GPT-2's attn_pdrop had no equivalent after import). Values from the refdata configs."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from layerwise.cost.memory import training_memory  # noqa: E402
from layerwise.measure.step import measure_step  # noqa: E402
from layerwise.presets import get_preset  # noqa: E402
from layerwise.presets.hf import load_hf_config  # noqa: E402
from layerwise.workload import Workload  # noqa: E402

from refdata import HF_CONFIGS  # noqa: E402

# config stem -> the attention dropout its HF modeling code applies (the field it reads)
EXPECTED = {"gpt2": 0.1,  # attn_pdrop
            "bert-base-uncased": 0.1,  # attention_probs_dropout_prob
            "vit-base-patch16-224": 0.0,  # attention_probs_dropout_prob
            "mixtral-8x7b-v0.1": 0.0}  # attention_dropout


def _attentions(block):
    if block.type_name == "attention":
        yield block
    for _, child in block.children():
        yield from _attentions(child)


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_imported_attention_dropout(stem):
    model = load_hf_config(HF_CONFIGS / f"{stem}.json", n_layers=1)
    assert [a.dropout for a in _attentions(model.body)] == [EXPECTED[stem]]


def test_built_module_applies_it():
    model = get_preset("gpt2", n_layers=1, d_model=64, n_heads=4, vocab_size=100, attn_dropout=0.25)
    module = model.body.build()
    assert module.blocks[0].attn.p == 0.25


@pytest.mark.parametrize("attention", ["eager", "sdpa"])  # CPU sdpa with dropout takes its math path
def test_memory_with_attention_dropout_matches_measure(attention):
    model = get_preset("gpt2", n_layers=2, vocab_size=1000, attn_dropout=0.1)
    workload = Workload(batch=4, seq=128, optimizer="sgd", attention=attention)
    report, truth = training_memory(model, workload), measure_step(model, workload, count_flops=False)
    without = training_memory(get_preset("gpt2", n_layers=2, vocab_size=1000), workload)
    assert report.peak_bytes > without.peak_bytes  # the probabilities' masks are kept
    assert abs(report.peak_bytes - truth.peak_bytes) <= 0.02 * truth.peak_bytes
    for key, value in truth.components.items():
        assert abs(report.components.as_dict()[key] - value) <= 0.05 * truth.peak_bytes, key
