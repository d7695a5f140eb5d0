"""Equal copies cost one: a repeat's layers and a MoE's equal experts are traced as their first two
and last copies plus one lump (Trace.lump), which must give the very report a copy-by-copy trace
gives; and experts that no token reaches still hold weights and optimizer state (measured)."""
from __future__ import annotations

import random

import pytest

from layerwise.cost import activations
from layerwise.cost.memory import has_kv_cache, inference_memory, training_memory
from layerwise.presets import PRESETS, get_preset
from layerwise.spec.errors import LayerwiseError
from layerwise.workload import Workload


def _workloads(seed: int, n: int):
    rng = random.Random(seed)
    names = sorted(PRESETS)
    while n:
        name = rng.choice(names)
        model = get_preset(name)
        kw = dict(batch=rng.choice([1, 2]), precision=rng.choice(["fp32", "bf16-mixed", "fp16-mixed", "bf16"]),
                  checkpointing=rng.choice(["none", "full", "selective"]), device=rng.choice(["cpu", "cuda"]),
                  optimizer=rng.choice(["adamw", "sgd", "adafactor", "adam-8bit"]), grad_accum=rng.choice([1, 2]))
        if rng.random() < 0.3:
            kw.update(zero=rng.choice([1, 2, 3]), dp=4)
        if rng.random() < 0.3:
            kw.update(lora_rank=4, quant=rng.choice(["none", "nf4"]))
        if model.input.kind == "tokens":
            kw["seq"] = rng.choice([8, 32])
        yield name, model, Workload(**kw)
        n -= 1


def _reading(model, workload):
    try:
        train = training_memory(model, workload)
    except LayerwiseError as err:  # the same refusal either way
        return str(err)
    new_tokens = 4 if has_kv_cache(model) else 0  # decoding: causal decoder LMs only
    infer = inference_memory(model, workload.with_(mode="infer", lora_rank=0, new_tokens=new_tokens))
    return (train.peak_bytes, train.peak_phase, train.peak_where, train.components, infer.peak_bytes,
            infer.peak_where, infer.components)


@pytest.mark.parametrize("seed", range(4))
def test_lumped_copies_give_the_copy_by_copy_report(seed, monkeypatch):
    for name, model, workload in _workloads(seed, 10):
        lumped = _reading(model, workload)
        monkeypatch.setattr(activations, "LUMP_OVER", 10**9)
        whole = _reading(model, workload)
        monkeypatch.setattr(activations, "LUMP_OVER", 4)
        assert lumped == whole, (name, workload)


def _mixtral(**kw):
    return get_preset("mixtral-8x7b", **{**dict(n_layers=1, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128,
                                                vocab_size=100), **kw})


def test_unrouted_experts_hold_weights_and_optimizer_state_as_measured():
    pytest.importorskip("torch")
    from layerwise.measure.step import measure_step

    # 1 token x top_2 of 64 experts: 62 experts receive nothing and get no gradient, but exist
    # with their AdamW state (a steady-state step: earlier batches reached them)
    model = _mixtral(n_experts=64)
    workload = Workload(batch=1, seq=1)
    truth = measure_step(model, workload, count_flops=False)
    report = training_memory(model, workload)
    for part in ("weights", "gradients", "optimizer_states"):
        assert getattr(report.components, part) == truth.components[part], part
    assert abs(report.peak_bytes - truth.peak_bytes) <= 0.01 * truth.peak_bytes


def test_a_million_layers_of_two_billion_experts_answer_exactly():
    # 10**6 layers of a MoE with 2**31 experts: counted as one layer and one expert, multiplied
    one = _mixtral(n_experts=2**31)
    big = _mixtral(n_experts=2**31, n_layers=10**6)
    layer = big.body.block.params().total
    assert big.params().total == one.params().total + (10**6 - 1) * layer
    expert = 3 * 64 * 128  # gate, up, down (SwiGLU, no bias)
    # against 2 experts: 2**31 - 2 more experts and router rows (d_model weights each)
    assert layer - _mixtral(n_experts=2).body.block.params().total == (2**31 - 2) * (expert + 64)
    report = training_memory(big, Workload(batch=1, seq=16))
    weights = 4 * big.params().total  # fp32
    assert report.components.weights == weights and report.peak_bytes > 4 * weights


def test_a_million_layers_summarise_in_a_few_rows_and_count_flops_exactly():
    from layerwise.cost.flops import model_flops
    from layerwise.cost.summary import summarize

    big = _mixtral(n_experts=2**31, n_layers=10**6)
    s = summarize(big.name, big.body, big.input_shape(1, 16))
    assert len(s.layers) < 40
    rest = {r.path: r for r in s.layers}["blocks.1-999999"]
    layer = big.body.block.params().total
    assert (rest.path, rest.count, rest.params) == ("blocks.1-999999", 999_999, 999_999 * layer)
    assert sum(r.params for r in s.layers if r.level == 1) == s.params.total == sum(s.by_type.values())
    # FLOPs are linear in the layer count: F(L) = F(1) + (L - 1) * (F(2) - F(1)), every term exact
    w = Workload(batch=1, seq=16)
    f1, f2 = (model_flops(_mixtral(n_experts=2**31, n_layers=n), w).total for n in (1, 2))
    assert model_flops(big, w).total == f1 + (10**6 - 1) * (f2 - f1)


@pytest.mark.parametrize("routing", [dict(capacity_factor=1.25), dict(capacity_factor=0.5, aux_loss_coef=0.01),
                                     dict(z_loss_coef=0.001)])
def test_lumped_experts_with_capacity_buffers_and_router_losses(routing, monkeypatch):
    # with a capacity every expert runs on its C-row buffer and its output is held until the
    # concatenation: the lump holds the lumped copies' outputs too (activations.run_outputs)
    for workload in (Workload(batch=2, seq=8), Workload(batch=1, seq=4, precision="bf16-mixed", checkpointing="full")):
        model = _mixtral(n_layers=2, n_experts=16, **routing)
        lumped = _reading(model, workload)
        monkeypatch.setattr(activations, "LUMP_OVER", 10**9)
        whole = _reading(model, workload)
        monkeypatch.setattr(activations, "LUMP_OVER", 4)
        assert lumped == whole, (routing, workload)
    big = _mixtral(n_experts=2**31, **routing)
    assert training_memory(big, Workload(batch=1, seq=4)).components.weights == 4 * big.params().total
