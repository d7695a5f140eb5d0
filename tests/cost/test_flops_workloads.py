"""`flops` honours --lora-rank and --new-tokens (issue #9: both were accepted and ignored), against
FlopCounterMode's formulas counted on the built module (layerwise.measure.step): the LoRA model's
training step, and a KV-cached generation (prefill + one forward per new token)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from layerwise.cost.flops import model_flops  # noqa: E402
from layerwise.measure.step import measure_step  # noqa: E402
from layerwise.presets import get_preset  # noqa: E402
from layerwise.spec.errors import WorkloadError  # noqa: E402
from layerwise.workload import Workload  # noqa: E402

SMALL = dict(n_layers=2, d_model=64, n_heads=4, d_ff=96, vocab_size=97)
MODELS = {
    "tiny-gpt": ("tiny-gpt", {}),
    "llama-gqa": ("llama-2-7b", dict(SMALL, n_kv_heads=2)),
    "mistral-window": ("mistral-7b", dict(SMALL, n_kv_heads=2, sliding_window=8)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("rank", [4])
def test_lora_step_flops_match_flop_counter(name, rank):
    preset, over = MODELS[name]
    model, workload = get_preset(preset, **over), Workload(batch=2, seq=16, lora_rank=rank)
    report, truth = model_flops(model, workload), measure_step(model, workload)
    assert report.flops.fwd_matmul == truth.flops_forward
    assert report.flops.bwd_matmul == truth.flops_backward
    full = model_flops(model, workload.with_(lora_rank=0))
    assert report.flops.bwd_matmul < 0.6 * full.flops.bwd_matmul  # frozen weights: no weight gradients


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("seq,new_tokens", [(16, 1), (12, 7)])
def test_decode_flops_match_flop_counter(name, seq, new_tokens):
    preset, over = MODELS[name]
    model = get_preset(preset, **over)
    workload = Workload(mode="infer", batch=2, seq=seq, new_tokens=new_tokens)
    report, truth = model_flops(model, workload), measure_step(model, workload)
    assert report.flops.fwd_matmul + report.decode.fwd_matmul == truth.flops_forward
    assert report.decode_per_token == report.decode.forward // new_tokens > 0


def test_decode_grows_with_the_cache():
    model = get_preset("tiny-gpt")
    short = model_flops(model, Workload(mode="infer", seq=16, new_tokens=4)).decode_per_token
    long = model_flops(model, Workload(mode="infer", seq=128, new_tokens=4)).decode_per_token
    assert long > short


def test_new_tokens_without_a_kv_cache_is_refused():
    with pytest.raises(WorkloadError, match="--new-tokens"):
        model_flops(get_preset("bert-base", n_layers=1), Workload(mode="infer", seq=16, new_tokens=2))
