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
def test_data_parallel_layout_memory_equals_the_memory_model(name, ckpt):
    # the planner extrapolates the memory model's phases (2 and 3 layers, micro-batch 1 and 2) and
    # rescales them; without tp/pp it must give the memory model's own peak, at any depth and batch
    model = get_preset(name, n_layers=7)
    parts = memory_parts(model, Workload(seq=128, precision="bf16-mixed", device="cuda", checkpointing=ckpt))
    for batch, dp, zero, accum in ((1, 1, 0, 1), (3, 1, 0, 1), (2, 4, 0, 4), (5, 4, 1, 1), (2, 4, 2, 1),
                                   (1, 8, 3, 2)):
        w = Workload(batch=batch, seq=128, precision="bf16-mixed", device="cuda", checkpointing=ckpt, dp=dp,
                     zero=zero, grad_accum=accum)
        lay = Layout(dp=dp, zero=zero, micro_batch=batch, grad_accum=accum, checkpointing=ckpt)
        assert per_device_bytes(parts, lay, (7,)) == pytest.approx(training_memory(model, w).peak_bytes, rel=0.01)


def test_pipeline_stages_hold_unequal_activations():
    model = get_preset("llama-2-7b", n_layers=8)
    parts = memory_parts(model, Workload(seq=512, precision="bf16-mixed", device="cuda"))
    lay = Layout(pp=4, micro_batch=1, grad_accum=8)
    from layerwise.plan.memory import _stage_bytes

    first, last = _stage_bytes(parts, lay, 0, 2, 4), _stage_bytes(parts, lay, 3, 2, 4)
    middle = _stage_bytes(parts, lay, 1, 2, 4)
    assert first > middle  # 1F1B: stage 0 holds 4 micro-batches, stage 1 holds 3
    gpipe = _stage_bytes(parts, Layout(pp=4, micro_batch=1, grad_accum=8, schedule="gpipe"), 1, 2, 4)
    assert gpipe > middle and last != first


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


def test_a_model_without_repeated_blocks_is_planned_without_checkpointing():
    """digits-cnn has no `repeat` to recompute: the planner searches without checkpointing instead
    of refusing the whole search."""
    result = plan(get_preset("digits-cnn"), get_gpu("h100-sxm"), n_gpus=8)
    assert result.candidates
    assert {c.layout.checkpointing for c in result.candidates} == {"none"}


def test_an_image_model_defaults_to_an_image_batch_not_4m_tokens_as_samples():
    """Without --global-batch a token model gets ~4M tokens per step; a model that reads images
    must not get 4M images: it gets 256 (the ImageNet ResNet batch), split over the GPUs."""
    result = plan(get_preset("digits-cnn"), get_gpu("h100-sxm"), n_gpus=8)
    assert result.global_batch == 256
    for c in result.candidates:
        assert c.layout.global_batch == 256
    assert plan(get_preset("gpt2"), get_gpu("h100-sxm"), n_gpus=8, seq=1024).global_batch == (1 << 22) // 1024
