"""The planner: its per-device memory against the memory model, what it returns fits, the ranking
follows the step-time model, and the JSON contract."""
import json

import pytest

from layerwise.cli import main
from layerwise.cost.hardware import get_gpu
from layerwise.cost.memory import training_memory
from layerwise.cost.step_time import Layout
from layerwise.plan import plan
from layerwise.plan.memory import memory_parts, per_device_bytes
from layerwise.presets import get_preset
from layerwise.workload import Workload


@pytest.mark.parametrize("name", ["llama-2-7b", "gpt2", "mixtral-8x7b"])
@pytest.mark.parametrize("ckpt", ["none", "selective", "full"])
def test_unsharded_layout_memory_equals_the_memory_model(name, ckpt):
    # the planner rescales the memory model's layer and rest shares; unsharded, it must give its peak
    model = get_preset(name, n_layers=6)
    for batch in (1, 2):
        w = Workload(batch=batch, seq=256, precision="bf16-mixed", device="cuda", checkpointing=ckpt)
        ref = training_memory(model, w).peak_bytes
        got = per_device_bytes(memory_parts(model, w), Layout(micro_batch=batch, checkpointing=ckpt), (6,))
        assert got == pytest.approx(ref, rel=0.01)


def test_candidates_fit_and_are_ranked_by_predicted_tokens_per_second():
    gpu = get_gpu("a100-80gb")
    result = plan(get_preset("llama-2-7b"), gpu, n_gpus=16, seq=4096, top=50)
    assert result.candidates and result.searched >= result.fitting >= len(result.candidates)
    speeds = [c.tokens_per_second for c in result.candidates]
    assert speeds == sorted(speeds, reverse=True)
    assert all(c.device_bytes <= gpu.memory_bytes for c in result.candidates)
    # llama-2-7b's 16 bytes/param of model state cannot sit unsharded on one 80 GB device
    assert all(c.layout.zero > 0 or c.layout.tp * c.layout.pp > 1 for c in result.candidates)


def test_a_small_model_needs_no_tricks_on_one_gpu():
    best = plan(get_preset("gpt2"), get_gpu("h100-sxm"), n_gpus=1, seq=1024).candidates[0].layout
    assert (best.zero, best.tp, best.pp, best.checkpointing) == (0, 1, 1, "none")


def test_llama_3_70b_on_512_h100_ranks_tp_and_pp_layouts(capsys):
    assert main(["plan", "llama-3-70b", "--gpu", "h100-sxm", "--gpus", "512", "--seq", "8192", "--top", "20",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["searched"] > 1000 and len(data["setups"]) == 20
    setups = data["setups"]
    assert {"tokens_per_second", "per_device_bytes", "dp", "tp", "pp", "zero", "checkpointing"} <= set(setups[0])
    assert any(s["pp"] > 1 and s["tp"] > 1 for s in setups)
    assert all(s["dp"] * s["tp"] * s["pp"] == 512 for s in setups)


def test_nothing_fits_is_said_and_bad_gpu_is_one_line(capsys):
    assert main(["plan", "llama-3-70b", "--gpu", "rtx-4090", "--gpus", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["setups"] == [] and data["searched"] > 0
    assert main(["plan", "gpt2", "--gpu", "a1000-80gb"]) == 2
    assert "did you mean" in capsys.readouterr().err
