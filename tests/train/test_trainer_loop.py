"""The loop's per-step shortcuts keep behaviour: training mode is set once (and restored when a
step finds the module in eval mode), and the "step" payload is built only for a listener."""
from __future__ import annotations

import torch

from layerwise.train.run import load_run
from layerwise.train.trainer import train

from _train_models import config, mlp


def test_every_step_runs_in_training_mode_across_evaluations(tmp_path):
    # validation after every step puts the module in eval mode and back; a hook that leaves it in
    # eval mode (step 3) must not make step 4 run without dropout
    modes = {}

    def hook(step, module):
        modes[step] = all(m.training for m in module.modules())
        if step == 3:
            module.eval()

    train(mlp(dropout=0.5), config(max_steps=6, eval_every=1), tmp_path / "r", hooks={"after_step": hook})
    assert modes == {s: True for s in range(1, 7)}


def test_a_listener_does_not_change_the_run(tmp_path):
    events = []
    cfg = config(max_steps=5, grad_accum=2, mixup_alpha=0.4)
    train(mlp(dropout=0.2), cfg, tmp_path / "quiet")
    train(mlp(dropout=0.2), cfg, tmp_path / "heard", on_event=lambda kind, payload: events.append((kind, payload)))
    steps = [p for k, p in events if k == "step"]
    assert [p["step"] for p in steps] == [1, 2, 3, 4, 5]
    assert set(steps[0]) == {"step", "total", "loss", "lr", "samples_per_s", "epoch"}
    a, b = load_run(tmp_path / "quiet").module.state_dict(), load_run(tmp_path / "heard").module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
