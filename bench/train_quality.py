"""Training quality on built-in data: digits CNN and ViT (target >= 97% test accuracy), the GRU text
classifier on stdlib code-vs-comment lines and the tiny GPT on stdlib source (validation loss well
below the untrained model's: at most 0.6 of it). Prints one table.
Run: python bench/train_quality.py [--only NAME]  (about 3-10 minutes on 2 CPU cores)
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch

from layerwise.presets import get_preset
from layerwise.train.config import DataConfig, TrainConfig
from layerwise.train.data import make_data
from layerwise.train.evaluate import evaluate
from layerwise.train.trainer import train

# name -> (preset overrides, training config, target)
RUNS = {
    "digits-cnn": ({}, TrainConfig(data=DataConfig(source="digits"), epochs=30, lr=3e-3, warmup_steps=20,
                                   batch_size=32), ("test_accuracy", 0.97)),
    # measured: 60 epochs at lr 2e-3 without smoothing gave 95.5%; this recipe 97.8% (seed 0)
    "digits-vit": ({}, TrainConfig(data=DataConfig(source="digits"), epochs=100, lr=3e-3, warmup_steps=100,
                                   batch_size=32, weight_decay=0.05, label_smoothing=0.1), ("test_accuracy", 0.97)),
    # stdlib lines are <= ~80 bytes: 64 byte positions instead of the preset's 256 (4x cheaper)
    "text-gru": ({"max_seq": 64}, TrainConfig(data=DataConfig(source="pystdlib-lines"), epochs=4, lr=3e-3,
                                              batch_size=64, grad_clip=1.0), ("val_loss_vs_untrained", 0.6)),
    "tiny-gpt": ({"max_seq": 64}, TrainConfig(data=DataConfig(source="pystdlib", max_bytes=400_000), max_steps=400,
                                              lr=2e-3, warmup_steps=40, batch_size=16, grad_clip=1.0,
                                              eval_every=100), ("val_loss_vs_untrained", 0.6)),
}


def untrained_val_loss(model, cfg: TrainConfig) -> float:
    torch.manual_seed(cfg.seed)
    module = model.build()
    data = make_data(cfg, model)
    return evaluate(module, data.val, model.task).loss


def run_one(name: str) -> dict:
    overrides, cfg, (metric, target) = RUNS[name]
    model = get_preset(name, **overrides)
    baseline = untrained_val_loss(model, cfg)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        r = train(model, cfg, d)
    seconds = time.perf_counter() - t0
    val_loss = r.val["loss"] if r.val else float("nan")
    row = {"model": name, "data": cfg.data.source, "steps": r.steps, "seconds": seconds, "untrained_val_loss": baseline,
           "val_loss": val_loss, "test_accuracy": r.test["accuracy"] if r.test else float("nan")}
    if metric == "test_accuracy":
        row["target"], row["ok"] = f"test acc >= {target:.2f}", row["test_accuracy"] >= target
    elif model.task == "lm":  # well below the untrained model, and below a uniform guess (ln V)
        uniform = math.log(model.input.vocab_size)
        row["target"] = f"val <= {target:.1f} x untrained, < ln V"
        row["ok"] = val_loss <= target * baseline and val_loss < uniform
    else:
        row["target"], row["ok"] = f"val loss <= {target:.1f} x untrained", val_loss <= target * baseline
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", action="append", choices=sorted(RUNS))
    args = ap.parse_args()
    head = (f"{'model':<12}{'data':<16}{'steps':>6}{'time s':>8}{'untrained':>11}{'val loss':>10}{'test acc':>10}"
            f"  {'target':<34}ok")
    print(head)
    print("-" * len(head), flush=True)
    for name in args.only or RUNS:
        r = run_one(name)
        print(f"{r['model']:<12}{r['data']:<16}{r['steps']:>6}{r['seconds']:>8.0f}{r['untrained_val_loss']:>11.3f}"
              f"{r['val_loss']:>10.3f}{r['test_accuracy']:>10.3f}  {r['target']:<34}{'yes' if r['ok'] else 'NO'}", flush=True)
    print(f"(a uniform guess over 256 byte ids: {math.log(256):.3f} nats; test acc of an LM is next-token accuracy)")


if __name__ == "__main__":
    main()
