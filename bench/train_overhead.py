"""Trainer overhead: optimizer steps per second of `layerwise.train.trainer.train` against a
hand-written loop on the same model, data, optimizer and loss (target: < 5% slower).

Both loops are timed over the same steady-state window of steps (after warm-up steps), several
rounds alternating, best of each kept (the machine may be shared). Run: python bench/train_overhead.py
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from layerwise.presets import get_preset
from layerwise.train.config import DataConfig, TrainConfig
from layerwise.train.data import make_data
from layerwise.train.losses import LossFn
from layerwise.train.optim import lr_factor, make_optimizer, set_lr
from layerwise.train.trainer import train


def trainer_rate(model, cfg, warm: int) -> float:
    marks = {}

    def hook(step, module):
        if step in (warm, cfg.max_steps):
            marks[step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as d:
        train(model, cfg, d, hooks={"after_step": hook})
    return (cfg.max_steps - warm) / (marks[cfg.max_steps] - marks[warm])


def hand_rate(model, cfg, warm: int) -> float:
    """The loop a person would write: same pieces, no logging, checkpoints or checks."""
    torch.manual_seed(cfg.seed)
    module = model.build()
    data = make_data(cfg, model)
    opt, _ = make_optimizer(module, model.body, cfg)
    loss_fn = LossFn(cfg, model.task)
    module.train()
    step, epoch, t0 = 0, 0, None
    while step < cfg.max_steps:
        data.train.sampler.set_epoch(epoch)
        epoch += 1
        for x, y in data.train:
            set_lr(opt, lr_factor(step, cfg.max_steps, cfg.warmup_steps, cfg.schedule))
            loss = loss_fn(module(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step == warm:
                t0 = time.perf_counter()
            if step == cfg.max_steps:
                break
    return (cfg.max_steps - warm) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="digits-cnn")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)  # fewer threads: less noise from a shared machine
    model = get_preset(args.model)
    warm = 20
    # validation and checkpoints only at the end, as a hand loop would do them outside the window
    cfg = TrainConfig(data=DataConfig(source="digits"), max_steps=args.steps, batch_size=32, eval_every=10**9,
                      log_every=50)
    trainer, hand = [], []
    for _ in range(args.rounds):
        hand.append(hand_rate(model, cfg, warm))
        trainer.append(trainer_rate(model, cfg, warm))
    h, t = max(hand), max(trainer)
    print(f"{'loop':<10}{'steps/s (best of ' + str(args.rounds) + ')':>26}")
    print(f"{'hand':<10}{h:>26.1f}")
    print(f"{'trainer':<10}{t:>26.1f}")
    print(f"overhead: {100 * (h / t - 1):+.1f}% (target < 5%)  model {args.model}, batch 32, steps {warm}..{args.steps}")


if __name__ == "__main__":
    main()
