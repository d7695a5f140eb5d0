"""Training time and rooflines against published numbers (memory_flops_facts.md §4, §6)."""
from __future__ import annotations

import pytest

from layerwise.cost.hardware import get_gpu
from layerwise.cost.korthikanti import korthikanti_model_flops
from layerwise.cost.time import (DecoderCost, decode_step, decode_throughput, megatron_flops_with_recompute,
                                 prefill, six_nd, training_time)
from layerwise.spec.errors import WorkloadError


def test_gpt3_training_compute_6nd():
    # GPT-3 Table D.1: 3.14E+23 FLOPs = 3.64E+03 PF-days for 174.6B params, 300B tokens
    flops = six_nd(174_600_000_000, 300_000_000_000)
    assert flops / 1e23 == pytest.approx(3.14, abs=0.005)
    assert flops / (1e15 * 86_400) == pytest.approx(3640, rel=2e-3)


def test_chinchilla_budget_6nd():
    # Chinchilla: 70B params x 1.4T tokens = 5.88e23 (facts §6)
    assert six_nd(70_000_000_000, 1_400_000_000_000) == 588 * 10**21


def test_megatron_gpt3_34_days_on_1024_a100():
    # Narayanan et al. 2021: 8TP/(nX), GPT-3 175B, 300B tokens, 1024 A100 at 140 TFLOP/s -> 34 days
    a100 = get_gpu("a100-80gb")
    flops = megatron_flops_with_recompute(175_000_000_000, 300_000_000_000)
    t = training_time(flops, n_gpus=1024, peak_flops=a100.peak_flops("bf16"), mfu=140 / 312)
    assert t.days == pytest.approx(33.9, abs=0.05)
    # and the 1T model: 3072 A100 at 163 TFLOP/s, 450B tokens -> 84 days (formula 83.2)
    t1 = training_time(megatron_flops_with_recompute(10**12, 450 * 10**9), n_gpus=3072,
                       peak_flops=a100.peak_flops("bf16"), mfu=163 / 312)
    assert t1.days == pytest.approx(83.2, abs=0.1)


def test_korthikanti_table5_iteration_time_from_mfu():
    # 175B, 64 GPUs, global batch 64, s=2048, v=51200: 13.75 s/iteration at MFU 51.4% of 312 TFLOP/s
    flops = korthikanti_model_flops(64, 96, 2048, 12288, 51200)
    t = training_time(int(flops), n_gpus=64, peak_flops=get_gpu("a100").peak_flops("bf16"), mfu=0.514)
    assert t.seconds == pytest.approx(13.75, rel=0.01)


def test_mfu_must_be_a_fraction():
    with pytest.raises(WorkloadError, match="--mfu"):
        training_time(10, n_gpus=1, peak_flops=1e12, mfu=45)


LLAMA2_7B = DecoderCost(n_params=6_738_415_616, weight_bytes=2 * 6_738_415_616, n_layers=32, d_attn=4096,
                        kv_bytes_per_token=524_288)


def test_decode_is_bandwidth_bound_and_prefill_compute_bound():
    a100 = get_gpu("a100-80gb")
    step = decode_step(LLAMA2_7B, a100, batch=1, context=512)
    assert step.bound == "bandwidth"
    # all weights + the cache read once per token at 2,039 GB/s
    assert step.seconds == pytest.approx((2 * 6_738_415_616 + 512 * 524_288) / 2.039e12)
    assert decode_throughput(step, 1) == pytest.approx(1 / step.seconds)
    pre = prefill(LLAMA2_7B, a100, batch=1, prompt=2048)
    assert pre.bound == "compute"
    assert pre.flops == 2 * 6_738_415_616 * 2048 + 2 * 32 * 4096 * 2048 * 2048
    # a big enough decode batch crosses over to compute-bound (arithmetic intensity ~ batch)
    assert decode_step(LLAMA2_7B, a100, batch=1024, context=1).bound == "compute"
