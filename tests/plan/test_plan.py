"""The planner: what it proposes fits, one micro-batch step more does not, and the ranking holds."""
import json

from layerwise.cli import main
from layerwise.cost.hardware import get_gpu
from layerwise.cost.memory import training_memory
from layerwise.cost.overhead import device_overhead_bytes
from layerwise.plan import plan
from layerwise.presets import get_preset


def _device_bytes(model, workload) -> int:
    peak = training_memory(model, workload).peak_bytes
    return peak + device_overhead_bytes(peak, device="cuda").total


def test_every_candidate_fits_and_its_micro_batch_is_the_largest():
    model, gpu = get_preset("llama-2-7b"), get_gpu("a100-80gb")
    result = plan(model, gpu, n_gpus=8, seq=2048, max_micro_batch=16, keep=4)
    assert result.candidates
    for c in result.candidates:
        assert _device_bytes(model, c.workload) == c.device_bytes <= gpu.memory_bytes
        if c.workload.batch < 16:
            assert _device_bytes(model, c.workload.with_(batch=2 * c.workload.batch)) > gpu.memory_bytes
    # llama-2-7b's 16 bytes/param of model state (108 GB) cannot sit unsharded on one 80 GB device
    assert all(c.workload.zero > 0 or c.workload.tp > 1 for c in result.candidates)


def test_a_small_model_needs_no_tricks():
    result = plan(get_preset("gpt2"), get_gpu("h100-sxm"), n_gpus=1, max_micro_batch=8)
    best = result.candidates[0].workload
    assert (best.checkpointing, best.zero, best.tp, best.batch) == ("none", 0, 1, 8)


def test_ranking_puts_less_recompute_first():
    result = plan(get_preset("llama-2-13b"), get_gpu("rtx-4090"), n_gpus=8, seq=4096, max_micro_batch=4)
    order = [("none", "selective", "full").index(c.workload.checkpointing) for c in result.candidates]
    assert order == sorted(order)
    per_token = [c.flops_per_token for c in result.candidates]
    assert per_token == sorted(per_token)


def test_nothing_fits_is_said_and_json_has_the_keys(capsys):
    assert main(["plan", "llama-3-70b", "--gpu", "rtx-4090", "--gpus", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["candidates"] == [] and data["tried"] > 0
    assert main(["plan", "gpt2", "--gpu", "a100-80gb", "--max-micro-batch", "2", "--json"]) == 0
    cand = json.loads(capsys.readouterr().out)["candidates"][0]
    assert {"zero", "tp", "dp", "checkpointing", "micro_batch", "peak_bytes", "seconds_per_billion_tokens"} <= set(cand)
    assert main(["plan", "gpt2", "--gpu", "a1000-80gb"]) == 2
    assert "did you mean" in capsys.readouterr().err
