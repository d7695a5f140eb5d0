"""Presets against published parameter counts. Sources: /work/shared/refdata/param_counts.csv
(the row named in each id), unless the id says otherwise."""
from __future__ import annotations

import subprocess
import sys

import pytest

from layerwise.presets import get_preset

# (preset, exact count, source)
REFDATA = [
    ("gpt2", 124_439_808, "param_counts.csv 'gpt2 (GPT2LMHeadModel, tied head)', keras-hub gpt2_base_en"),
    ("gpt2-medium", 354_823_168, "param_counts.csv 'gpt2-medium', keras-hub gpt2_medium_en"),
    ("llama-2-7b", 6_738_415_616, "param_counts.csv 'llama-2-7b (LlamaForCausalLM)', keras-hub llama2_7b_en"),
    ("llama-2-13b", 13_015_864_320, "param_counts.csv 'llama-2-13b', transformers from_config on meta"),
    ("mistral-7b", 7_241_732_096, "param_counts.csv 'mistral-7b-v0.1', keras-hub mistral_7b_en"),
    ("mixtral-8x7b", 46_702_792_704, "param_counts.csv 'mixtral-8x7b-v0.1 total', keras-hub mixtral_8_7b_en"),
    ("bert-base", 109_482_240, "param_counts.csv 'bert-base-uncased (BertModel incl. pooler)', keras-hub"),
    ("vit-b-16", 86_567_656, "param_counts.csv 'vit-base-patch16-224 (ViTForImageClassification)', torchvision vit_b_16"),
    ("resnet-18", 11_689_512, "param_counts.csv 'resnet18', torchvision weights meta num_params"),
    ("resnet-34", 21_797_672, "param_counts.csv 'resnet34', torchvision weights meta num_params"),
    ("resnet-50", 25_557_032, "param_counts.csv 'resnet50', torchvision weights meta num_params"),
]


@pytest.mark.parametrize("name,count,source", REFDATA, ids=[f"{r[0]}: {r[2]}" for r in REFDATA])
def test_published_total(name, count, source):
    assert get_preset(name).params().total == count


def test_mixtral_active_params():
    # param_counts.csv 'mixtral-8x7b-v0.1 active per token (2 of 8 experts)': 12,879,925,248
    # (total - 32 layers * 6 unused experts * 3*4096*14336; Mixtral paper rounds to 13B).
    assert get_preset("mixtral-8x7b").body.active_params().total == 12_879_925_248


def test_vit_b_16_variants():
    # param_counts.csv: 'vit-base-patch16 (ViTModel with pooler)' 86,389,248 and
    # '(backbone, no pooler, no head)' 85,798,656 (keras-hub vit_base_patch16_224_imagenet).
    assert get_preset("vit-b-16", n_classes=0, pooler=True).params().total == 86_389_248
    assert get_preset("vit-b-16", n_classes=0).params().total == 85_798_656


def test_gpt2_non_embedding_and_llama_non_embedding():
    # param_counts.csv: nanoGPT non-embedding gpt2 = total - wpe = 123,653,376;
    # Llama-2-7b without embed_tokens and lm_head = 6,476,271,616 (a public training log).
    gpt2 = get_preset("gpt2").body
    assert gpt2.params().total - dict(gpt2.children())["pos"].params().total == 123_653_376
    llama = dict(get_preset("llama-2-7b").body.children())
    assert llama["blocks"].params().total + llama["final_norm"].params().total == 6_476_271_616


# Not in refdata: the counts transformers' num_parameters() / torchvision's docs report for these
# checkpoints (HF model pages list them as 774M, 1.56B, 335M, 8.03B, 7.62B, 2.78B, 304M).
OTHER = [
    ("gpt2-large", 774_030_080, "HF openai-community/gpt2-large num_parameters()"),
    ("gpt2-xl", 1_557_611_200, "HF openai-community/gpt2-xl num_parameters()"),
    ("bert-large", 335_141_888, "HF google-bert/bert-large-uncased BertModel num_parameters()"),
    ("llama-3-8b", 8_030_261_248, "HF meta-llama/Meta-Llama-3-8B num_parameters()"),
    ("qwen2-7b", 7_615_616_512, "HF Qwen/Qwen2-7B num_parameters()"),
    ("phi-2", 2_779_683_840, "HF microsoft/phi-2 num_parameters()"),
    ("vit-l-16", 304_326_632, "torchvision vit_l_16 IMAGENET1K_V1 meta num_params"),
]


@pytest.mark.parametrize("name,count,source", OTHER, ids=[f"{r[0]}: {r[2]}" for r in OTHER])
def test_other_published_totals(name, count, source):
    assert get_preset(name).params().total == count


def test_cost_reading_does_not_import_torch():
    code = ("import sys, layerwise.presets as p; n = p.get_preset('llama-3-70b').params().total; "
            "p.list_presets(); assert 'torch' not in sys.modules, 'torch imported'; print(n)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == 70_553_706_496  # HF meta-llama/Meta-Llama-3-70B num_parameters()


def test_bert_masked_lm_variant():
    # param_counts.csv 'bert-base-uncased (BertForMaskedLM, tied decoder + MLM head)': 109,514,298
    assert get_preset("bert-base", pooler=False, mlm_head=True).params().total == 109_514_298
