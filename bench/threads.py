"""Training-step time against torch's thread count, for models from tiny to small; the measurement
behind the `--threads` default (layerwise/threads.py). Prints one table: ms per optimizer step
(median of `--steps` after 3 warm-up steps) and the forward matmul FLOPs of one step.
Run: python bench/threads.py [--steps 20]  (under a minute on 2 CPU cores)
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from layerwise.presets import get_preset

# (preset, overrides, batch): the demo models at the batches the README trains them with
CASES = [("digits-cnn", {}, 32), ("text-gru", {}, 64), ("digits-vit", {}, 32), ("tiny-gpt", {"max_seq": 64}, 16)]


def step_ms(model, batch: int, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    module = model.build()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    shape = model.input_shape(batch)
    x = torch.randint(0, model.input.vocab_size, shape) if model.input.kind == "tokens" else torch.randn(shape)
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        out = module(x)
        out.float().square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    counts = sorted({1, 2, cores})
    print(f"{os.cpu_count()} CPUs, {cores} usable, load average {os.getloadavg()[0]:.1f}")
    head = f"{'model':<12}{'batch':>6}{'fwd matmul FLOPs':>18}" + "".join(f"{f'{n} thr ms':>11}" for n in counts) + "  best"
    print(head)
    print("-" * len(head))
    for name, over, batch in CASES:
        model = get_preset(name, **over)
        flops = model.body.flops(model.input_shape(batch)).fwd_matmul
        ms = {n: step_ms(model, batch, n, args.steps) for n in counts}
        best = min(ms, key=ms.get)
        print(f"{name + ('*' if over else ''):<12}{batch:>6}{flops:>18,}" + "".join(f"{ms[n]:>11.2f}" for n in counts)
              + f"  {best}", flush=True)
    print("* tiny-gpt at max_seq 64")


if __name__ == "__main__":
    main()
