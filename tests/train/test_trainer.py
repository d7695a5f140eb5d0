"""The loop: accumulation, resume, NaN stop, Ctrl-C, LoRA, activation checkpointing, run files."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch

from layerwise.spec.errors import LayerwiseError
from layerwise.train.config import DataConfig
from layerwise.train.run import load_run
from layerwise.train.trainer import DivergedError, train

from _train_models import config, mlp


def weights(run_dir, which="last"):
    return {k: v.clone() for k, v in load_run(run_dir, which).module.state_dict().items()}


def test_grad_accumulation_equals_one_larger_batch(tmp_path):
    big = train(mlp(), config(batch_size=32, grad_accum=1, max_steps=6, optimizer="sgd"), tmp_path / "a")
    acc = train(mlp(), config(batch_size=8, grad_accum=4, max_steps=6, optimizer="sgd"), tmp_path / "b")
    assert big.steps == acc.steps == 6
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k
    torch.manual_seed(0)
    init = mlp().build().state_dict()  # the trainer seeds with config.seed (0) before build()
    assert all(torch.equal(init[k], load_run(tmp_path / "a").module.state_dict()[k]) is False for k in init)


class Killed(Exception):
    pass


def _kill_at(step):
    def hook(s, module):
        if s == step:
            raise Killed
    return hook


def test_kill_and_resume_is_bitwise_identical(tmp_path):
    # dropout and mixup draw from the RNG, AdamW has state, cosine depends on the step: all must resume
    model = mlp(dropout=0.2)
    cfg = config(max_steps=10, checkpoint_every=3, optimizer="adamw", lr=3e-3, mixup_alpha=0.4, warmup_steps=2,
                 eval_every=5, keep_last=1)
    train(model, cfg, tmp_path / "full")
    with pytest.raises(Killed):
        train(model, cfg, tmp_path / "killed", hooks={"after_step": _kill_at(8)})
    assert (tmp_path / "killed/checkpoints/last/state.pt").exists()
    assert load_run(tmp_path / "killed", "last").step == 6
    r = train(model, cfg, tmp_path / "killed", resume=True)
    assert r.status == "finished" and r.steps == 10
    full, resumed = weights(tmp_path / "full"), weights(tmp_path / "killed")
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    rows = [json.loads(line) for line in (tmp_path / "killed/metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (tmp_path / "full/metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["kind"]) for r in rows] == [(r["step"], r["kind"]) for r in ref]


def test_ctrl_c_saves_and_resume_matches(tmp_path):
    cfg = config(max_steps=8, checkpoint_every=100, eval_every=100)
    train(mlp(), cfg, tmp_path / "full")

    def hook(s, module):
        if s == 5:
            os.kill(os.getpid(), signal.SIGINT)

    r = train(mlp(), cfg, tmp_path / "int", hooks={"after_step": hook})
    assert r.status == "interrupted" and r.steps == 5 and load_run(tmp_path / "int", "last").step == 5
    train(mlp(), cfg, tmp_path / "int", resume=True)
    full, resumed = weights(tmp_path / "full"), weights(tmp_path / "int")
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_nan_loss_stops_and_keeps_a_loadable_checkpoint(tmp_path):
    x = np.random.default_rng(0).random((64, 8, 8)).astype(np.float32)
    x[:, 0, 0] = np.nan  # every sample poisoned: the first step's loss is NaN
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(64) % 10)
    with pytest.raises(DivergedError, match="loss became nan at step 1.*last good checkpoint"):
        train(mlp(), config(data=DataConfig(source=str(tmp_path / "nan.npz"))), tmp_path / "run")
    run = load_run(tmp_path / "run", "last")
    assert run.step == 0 and all(torch.isfinite(p).all() for p in run.module.parameters())


def test_nan_weights_keep_the_previous_good_checkpoint(tmp_path):
    def poison(s, module):
        if s == 4:
            with torch.no_grad():
                module[1].weight[0, 0] = float("nan")

    with pytest.raises(DivergedError, match="weights became nan at step 4"):
        train(mlp(), config(checkpoint_every=2, eval_every=100), tmp_path / "run", hooks={"after_step": poison})
    run = load_run(tmp_path / "run", "last")
    assert run.step == 2 and all(torch.isfinite(p).all() for p in run.module.parameters())


def test_lora_starts_at_base_trains_only_adapters_and_merges(tmp_path):
    base_run = train(mlp(), config(max_steps=4), tmp_path / "base")
    base = load_run(tmp_path / "base", "last").module
    cfg = config(max_steps=6, lora_rank=2, lora_alpha=4.0, init_from=str(tmp_path / "base"), lr=5e-2)
    # starts equal to the base: zero-initialised lora_b
    from layerwise.train.finetune import load_initial, transform

    lora_model = transform(mlp(), cfg)
    start = lora_model.build()
    load_initial(start, lora_model.body, str(tmp_path / "base"))
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(start(x), base(x), atol=1e-6)
    r = train(mlp(), cfg, tmp_path / "lora")
    assert base_run.status == r.status == "finished"
    tuned = load_run(tmp_path / "lora", "last").module.state_dict()
    for path in ("1", "3"):
        assert torch.equal(tuned[f"{path}.base.weight"], base.state_dict()[f"{path}.weight"])
        assert torch.equal(tuned[f"{path}.base.bias"], base.state_dict()[f"{path}.bias"])
        assert tuned[f"{path}.lora_b.weight"].abs().sum() > 0
    merged = load_run(tmp_path / "lora", "merged")
    lora_mod = load_run(tmp_path / "lora", "best").module
    assert torch.allclose(merged.module(x), lora_mod(x), atol=1e-5)
    assert "lora" not in (tmp_path / "lora/merged/spec.yaml").read_text()


def test_activation_checkpointing_gives_the_same_run(tmp_path):
    a = train(mlp(), config(max_steps=3), tmp_path / "a")
    b = train(mlp(), config(max_steps=3, checkpointing=True), tmp_path / "b")
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.steps == b.steps and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_run_dir_files_early_stopping_and_rerunning_into_a_run_dir(tmp_path):
    r = train(mlp(), config(max_steps=40, eval_every=1, patience=2, lr=5.0, optimizer="sgd", monitor="val_accuracy",
                            keep_last=2), tmp_path / "run")
    assert r.status == "early_stopped" and r.steps < 40
    ck = sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir())
    assert "best" in ck and "last" in ck and len([c for c in ck if c.startswith("step-")]) <= 2
    state = torch.load(tmp_path / "run/checkpoints/last/state.pt", weights_only=True)
    assert state["step"] == r.steps and "optimizer" in state and "rng" in state
    header = (tmp_path / "run/metrics.csv").read_text().splitlines()[0]
    assert header.startswith("step,epoch,kind,loss,lr,accuracy")
    from layerwise.spec import io as spec_io

    assert spec_io.load(tmp_path / "run/spec.yaml") == mlp()
    with pytest.raises(LayerwiseError, match="holds a run \\(status: early_stopped\\); pass --resume.*--overwrite"):
        train(mlp(), config(max_steps=2), tmp_path / "run")
    assert load_run(tmp_path / "run", "last").step == r.steps  # untouched
    again = train(mlp(), config(max_steps=2), tmp_path / "run", overwrite=True)
    assert again.steps == 2 and load_run(tmp_path / "run", "last").step == 2
    assert not (tmp_path / "run.prev").exists()

    def kill(step, module):
        if step == 2:  # after the step-1 checkpoint
            raise KeyError("killed")

    with pytest.raises(KeyError):
        train(mlp(), config(checkpoint_every=1), tmp_path / "unfinished", hooks={"after_step": kill})
    with pytest.raises(LayerwiseError, match="holds a run \\(status: failed\\); pass --resume"):
        train(mlp(), config(), tmp_path / "unfinished")


def test_freeze_by_path_keeps_those_weights(tmp_path):
    r = train(mlp(), config(max_steps=3, freeze=("1",)), tmp_path / "run")
    assert r.decay_params == ["3.weight"] and r.no_decay_params == ["3.bias"]
    torch.manual_seed(0)
    init = mlp().build().state_dict()
    after = load_run(tmp_path / "run", "last").module.state_dict()
    assert torch.equal(init["1.weight"], after["1.weight"]) and not torch.equal(init["3.weight"], after["3.weight"])


def test_bf16_autocast_on_cpu_trains(tmp_path):
    r = train(mlp(), config(max_steps=4, precision="bf16-mixed"), tmp_path / "run")
    assert r.status == "finished" and r.val["loss"] < 10
    with pytest.raises(LayerwiseError, match="fp16-mixed needs a CUDA device"):
        train(mlp(), config(precision="fp16-mixed"), tmp_path / "fp16")


def test_the_runs_measured_step_memory_is_what_the_cost_reading_predicts(tmp_path):
    # The trainer tracks the live tensor storage of its own second step (the dataset a batch is
    # sliced from excluded); the cost reading predicts it from the spec alone.
    from layerwise.cost.memory import training_memory
    from layerwise.presets import get_preset
    from layerwise.train.config import DataConfig, TrainConfig
    from layerwise.train.trainer import train
    from layerwise.workload import Workload

    model = get_preset("digits-cnn")
    result = train(model, TrainConfig(data=DataConfig(source="digits"), max_steps=3, batch_size=16), tmp_path / "run")
    predicted = training_memory(model, Workload(batch=16)).peak_bytes
    assert result.predicted_peak_bytes == predicted
    assert abs(result.measured_peak_bytes - predicted) <= 0.02 * predicted


def _moe_mlp(**routing):
    from layerwise.blocks import Flatten, Linear, MoE, Sequential
    from layerwise.spec.model import InputSpec, Model

    body = Sequential(layers=(Flatten(), Linear(d_in=64, d_out=16), MoE(d_model=16, d_ff=16, n_experts=4, top_k=2, **routing),
                              Linear(d_in=16, d_out=10)))
    return Model(name="moe-mlp", body=body, input=InputSpec(kind="image", shape=(1, 8, 8)))


def test_moe_training_logs_expert_counts_and_overflow_and_adds_the_router_loss(tmp_path):
    cfg = config(max_steps=2, log_every=1, eval_every=100, optimizer="sgd")
    train(_moe_mlp(capacity_factor=0.5), cfg, tmp_path / "cap")
    rows = [json.loads(line) for line in (tmp_path / "cap/metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert len(train_rows) == 2
    for r in train_rows:
        assert sum(r["expert_counts"]) == 16 * 2  # batch 16, top-2: pairs routed before capacity
        # capacity ceil(0.5 * 2 * 16 / 4) = 4 per expert: at most 16 of the 32 pairs are kept
        assert 0.5 <= r["overflow_rate"] <= 1
    # the Switch aux loss (>= top_k = 2 at best balance, transformers' convention) joins the loss
    train(_moe_mlp(), cfg, tmp_path / "plain")
    train(_moe_mlp(aux_loss_coef=10.0), cfg, tmp_path / "aux")
    first = [json.loads((tmp_path / d / "metrics.jsonl").read_text().splitlines()[0])["loss"] for d in ("plain", "aux")]
    assert first[1] - first[0] >= 10.0 * 2 - 1e-4
