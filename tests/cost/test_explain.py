"""`memory --explain` (cost/explain.py): the textbook terms against their published values, the GPT-3
activation figures reproduced under the textbook assumptions, and each named difference sized by
the cost reading itself."""
from __future__ import annotations

import json

import pytest
from layerwise.cli import main
from layerwise.cost.explain import explain, saved_activations, textbook_model, textbook_workload
from layerwise.cost.korthikanti import korthikanti_model_bytes
from layerwise.cost.memory import training_memory
from layerwise.presets import get_preset
from layerwise.workload import Workload

GB, GiB = 10**9, 2**30


def _row(rows, start):
    return next(r for r in rows if r.name.startswith(start))


def test_gpt3_preset_has_the_published_size():
    # Brown et al. 2020 Table D.1 (refdata/memory_flops_facts.md §6): N = 174,600M parameters
    assert round(get_preset("gpt3-175b").params().total / 1e8) == 1746


# The published GPT-3 175B activation figures for batch 1 (the widely quoted worked example of
# Korthikanti's 34·s·b·h + 5·a·s²·b, H=12288, L=96, N=96; /work/shared/notes/004): "S=1024: about
# 90G; S=8192: about 3420G". They are the formula read in bytes (fp16 already in it); the note's
# "multiply by 2 for half precision" would double them.
@pytest.mark.parametrize("seq,published", [(1024, 90 * GB), (8192, 3420 * GB)])
def test_gpt3_textbook_activations_reproduce_the_published_figures(seq, published):
    formula = korthikanti_model_bytes(seq, 1, 12288, 96, 96)
    assert abs(formula - published) <= 0.01 * published  # the bytes, not 2x the bytes
    assert abs(2 * formula - published) > 0.5 * published
    model = get_preset("gpt3-175b", max_seq=max(2048, seq))  # the figure's s=8192 is beyond n_ctx
    ours = saved_activations(textbook_model(model), textbook_workload(Workload(batch=1, seq=seq)))
    assert abs(ours - published) <= 0.01 * published, (ours, published)
    assert abs(ours - formula) <= 0.005 * formula  # + the causal mask, norm statistics, logits


def test_gpt3_explanation_per_layer_terms_match_the_refdata_table():
    # memory_flops_facts.md §4, derived per-layer table: 175B, b=1, s=2048, no parallelism: 2.869 GB
    ex = explain(get_preset("gpt3-175b"), Workload(batch=1, seq=2048))
    total = _row(ex.korthikanti, "total").bytes
    assert abs(total / 96 - 2.869 * GB) < 0.0005 * GB
    terms = sum(r.bytes for r in ex.korthikanti[:4])
    assert terms == total  # attention 11sbh + scores 5as²b + MLP 19sbh + norms 4sbh
    in_layers = _row(ex.textbook_activations, "  in the").bytes
    assert 0 <= in_layers - total <= 0.005 * total


def test_deepspeed_estimators_for_llama_2_7b_match_the_refdata():
    # memory_flops_facts.md §2 (derived from deepspeed 0.19.8's formulas, largest layer = the
    # embedding, 131,072,000): ZeRO-3 113.45 GiB/GPU and ZeRO-2 125.51 GiB on 1 GPU
    ex = explain(get_preset("llama-2-7b"), Workload(batch=1, seq=128))
    assert round(_row(ex.textbook_states, "DeepSpeed estimate_zero3").bytes / GiB, 2) == 113.45
    assert round(_row(ex.textbook_states, "DeepSpeed estimate_zero2").bytes / GiB, 2) == 125.51
    n = ex.trainable_params
    assert [r.bytes for r in ex.textbook_states[:3]] == [16 * n, 18 * n, 20 * n]


def test_the_steps_add_up_to_this_workload():
    model, w = get_preset("gpt2", n_layers=2), Workload(batch=2, seq=256, precision="bf16-mixed")
    ex = explain(model, w)
    assert ex.steps[0].bytes + sum(r.bytes for r in ex.steps[1:-1]) == ex.steps[-1].bytes
    start = next(p for p in training_memory(model, w).phases if p.name == "backward" and p.where == "start")
    assert ex.steps[-1].bytes == start.components.activations == ex.activations


def test_named_differences_for_a_bf16_llama():
    model = get_preset("llama-2-7b")
    ex = explain(model, Workload(batch=1, seq=2048, precision="bf16-mixed"))
    names = [r.name for r in ex.steps]
    assert "dropout as configured" in names and "sdpa attention" in names
    # autocast saves a bf16 copy of every matrix used in a matmul: all parameters but the embedding
    # table and the norms' weights, 2 bytes each
    body = dict(model.body.children())
    norms = sum(b.params().total for b in (body["final_norm"],)) + 2 * 4096 * 32
    copies = _row(ex.steps, "precision bf16-mixed: autocast weight copies").bytes
    assert copies == 2 * (model.params().total - body["embed"].params().total - norms)
    assert _row(ex.steps, "precision bf16-mixed: fp32 log-softmax").bytes == 4 * 2048 * 32000 - 2 * 2048 * 32000
    # eager keeps the fp16 softmax output (2·a·s² per layer; no dropout left to drop) and the s x s
    # causal mask (1 byte); sdpa keeps its fp32 log-sum-exp (4·a·s) instead
    sdpa = _row(ex.steps, "sdpa attention").bytes
    assert sdpa == -32 * (2 * 32 * 2048 * 2048 + 2048 * 2048 - 4 * 32 * 2048)
    assert any("gated" in n for n in ex.korthikanti_notes)


def test_foreach_adamw_temporaries_are_the_extra_4_bytes_per_parameter():
    # DESIGN.md: foreach AdamW peaks near 20 B/param: 16 B of states + one full fp32 sqrt copy
    ex = explain(get_preset("gpt2", n_layers=2), Workload(batch=1, seq=64, device="cuda"))
    n = ex.trainable_params
    assert _row(ex.states, "model states").bytes == 16 * n + _row(ex.state_notes, "optimizer step scalars").bytes
    assert _row(ex.state_notes, "optimizer temporaries").bytes == 4 * n


def test_cli_explain_json_keeps_the_memory_keys(capsys):
    assert main(["memory", "tiny-gpt", "--seq", "64", "--explain", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"peak_bytes", "peak_phase", "components", "device_overhead_bytes", "per_device"} <= set(data)
    assert data["explain"]["steps"][0]["name"] == "textbook set-up"
    assert main(["memory", "tiny-gpt", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "Korthikanti" in out and "textbook set-up" in out


def test_cli_explain_refuses_inference_in_one_line(capsys):
    assert main(["memory", "tiny-gpt", "--explain", "--mode", "infer"]) == 2
    err = capsys.readouterr().err
    assert "--explain" in err and len(err.strip().splitlines()) == 1
