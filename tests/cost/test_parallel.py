"""Tensor/pipeline parallelism, offload, and the Korthikanti closed form (memory_flops_facts.md §4)."""
from __future__ import annotations

from fractions import Fraction

import pytest

from layerwise.cost.korthikanti import korthikanti_layer_bytes, korthikanti_model_bytes
from layerwise.cost.parallel import (Parallel, ParamSplit, device_model_states, inflight_microbatches,
                                     layers_per_stage, stage_params)
from layerwise.spec.errors import WorkloadError


def test_tp_divides_sharded_params_and_keeps_replicated():
    # a GPT layer at h=64: 12h^2 + 9h matrices/biases split, 4h LayerNorm + 2h row-parallel biases kept
    h = 64
    split = ParamSplit(tp_sharded=12 * h * h + 7 * h, tp_replicated=6 * h)
    got = device_model_states(split, Parallel(tp=4)).gpu
    per_rank = (12 * h * h + 7 * h) // 4 + 6 * h
    assert got.total == 16 * per_rank
    with pytest.raises(WorkloadError, match="--tp 3"):
        device_model_states(ParamSplit(10), Parallel(tp=3))


def test_zero3_with_optimizer_and_param_offload():
    n, dp = 1_000_000, 8
    on_gpu = device_model_states(ParamSplit(n), Parallel(dp=dp, zero=3, offload_optimizer=True))
    assert on_gpu.gpu.total == 2 * n // dp  # only the fp16 weight shard remains
    assert on_gpu.cpu.total == 14 * n // dp  # grads 2 + master 4 + Adam 8 (zero-16)
    both = device_model_states(ParamSplit(n), Parallel(dp=dp, zero=3, offload_optimizer=True, offload_params=True))
    assert both.gpu.total == 0 and both.cpu.total == 16 * n // dp
    with pytest.raises(WorkloadError, match="--zero 3"):
        Parallel(dp=2, zero=2, offload_params=True)


def test_zero_shards_round_up_like_padded_flat_buffers():
    got = device_model_states(ParamSplit(10), Parallel(dp=4, zero=3)).gpu
    assert got.total == 16 * 3  # ceil(10 / 4) elements per rank


def test_pipeline_stages_and_inflight_microbatches():
    assert layers_per_stage(96, 8) == (12,) * 8
    assert layers_per_stage(10, 4) == (3, 3, 2, 2)
    layer, emb, head = ParamSplit(100, 4), ParamSplit(1000), ParamSplit(10, 2)
    assert stage_params(layer, 10, 4, 0, first=emb, last=head) == ParamSplit(1300, 12)
    assert stage_params(layer, 10, 4, 3, first=emb, last=head) == ParamSplit(210, 10)
    # 1F1B: the first stage holds pp micro-batches (Korthikanti §4.2.3; Narayanan et al. 2021)
    assert [inflight_microbatches(4, s, 16) for s in range(4)] == [4, 3, 2, 1]
    assert inflight_microbatches(8, 0, 2) == 2
    assert inflight_microbatches(4, 0, 16, "gpipe") == 16


# ---- Korthikanti et al. 2022, Table 2 and the derived per-layer table (facts §4) --------------

# (heads a, hidden h): Table 3 configurations; s = 2048, b = 1, t = 8
CONFIGS = {"22B": (64, 6144), "175B": (96, 12288), "530B": (128, 20480), "1T": (160, 25600)}
DERIVED_GB = {  # no parallel, TP, TP+SP, TP+selective, TP+SP+selective, full recompute
    "22B": (1.770, 0.331, 0.221, 0.164, 0.0535, 0.0252),
    "175B": (2.869, 0.579, 0.359, 0.327, 0.107, 0.0503),
    "530B": (4.110, 0.881, 0.514, 0.545, 0.178, 0.0839),
    "1T": (5.138, 1.101, 0.642, 0.682, 0.223, 0.105),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_korthikanti_per_layer_table(name):
    a, h = CONFIGS[name]
    s, b, t = 2048, 1, 8
    got = [korthikanti_layer_bytes(s, b, h, a),
           korthikanti_layer_bytes(s, b, h, a, t=t),
           korthikanti_layer_bytes(s, b, h, a, t=t, sequence_parallel=True),
           korthikanti_layer_bytes(s, b, h, a, t=t, recompute="selective"),
           korthikanti_layer_bytes(s, b, h, a, t=t, sequence_parallel=True, recompute="selective"),
           korthikanti_layer_bytes(s, b, h, a, t=t, recompute="full")]
    assert [float(g) / 1e9 for g in got] == pytest.approx(DERIVED_GB[name], rel=3e-3)


def test_korthikanti_closed_forms_of_table2():
    s, b, h, a, t = 2048, 2, 1024, 16, 4
    sbh = s * b * h
    assert korthikanti_layer_bytes(s, b, h, a) == sbh * (34 + Fraction(5 * a * s, h))
    assert korthikanti_layer_bytes(s, b, h, a, t=t) == sbh * (10 + Fraction(24, t) + Fraction(5 * a * s, h * t))
    assert korthikanti_layer_bytes(s, b, h, a, t=t, sequence_parallel=True) == sbh * (Fraction(34, t) + Fraction(5 * a * s, h * t))
    # the model total for the first 1F1B stage is L layers' worth, whatever p is; interleaving adds
    L, p, m = 24, 4, 2
    base = korthikanti_model_bytes(s, b, h, a, L, t=t, p=p)
    assert base == L * korthikanti_layer_bytes(s, b, h, a, t=t)
    assert korthikanti_model_bytes(s, b, h, a, L, t=t, p=p, interleaved_m=m) == base * (1 + Fraction(p - 1, p * m))


def test_shard_model_states_agrees_with_the_convention_path():
    from layerwise.cost.model_states import torch_model_states
    from layerwise.cost.parallel import shard_model_states

    n = 4096 * 1024
    exact = torch_model_states([(4096, 1024)], precision="bf16-mixed", optimizer="adamw")
    for zero in (0, 1, 2, 3):
        par = Parallel(dp=8, zero=zero)
        got = shard_model_states(exact, par).gpu
        conv = device_model_states(ParamSplit(n), par, "torch-autocast").gpu
        # the only difference: the 4-byte step tensor, sharded along with the Adam moments
        assert got.total - conv.total == (-(-4 // 8) if zero else 4)
    off = shard_model_states(exact, Parallel(dp=2, zero=3, offload_optimizer=True, offload_params=True))
    half = [-(-x // 2) for x in (exact.weights, exact.master_weights, exact.gradients, exact.optimizer_states)]
    assert off.gpu.total == 0 and off.cpu.total == sum(half)
