"""The CUDA caching allocator's view, cost reading against measure reading (no GPU needed): a
seeded random sample of small models x workloads with --device cuda; each reading's allocations
replayed through cost/cuda_alloc.py, "allocated" and "reserved" compared (target 2%).

    .venv/bin/python bench/cuda_allocator.py [--random N] [--seed S]

Prints one row per case and a summary (median/max |error|, count within 2%). bench/gpu_truth.py
holds both against torch.cuda's own counters where a GPU exists.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys

MODELS = {  # preset, overrides, workload fields
    "gpt2": ("gpt2", dict(n_layers=2), dict(seq=256)),
    "llama": ("llama-2-7b", dict(n_layers=2, d_model=512, n_heads=8, d_ff=1376, vocab_size=8000), dict(seq=512)),
    "mixtral": ("mixtral-8x7b", dict(n_layers=2, d_model=256, n_heads=4, n_kv_heads=2, d_ff=512, vocab_size=1000,
                                     n_experts=4, top_k=2), dict(seq=256)),
    "bert": ("bert-base", dict(n_layers=2), dict(seq=256)),
    "vit": ("vit-b-16", dict(n_layers=2), {}),
    "resnet": ("resnet-18", {}, dict(image=(128, 128))),
    "tiny-gpt": ("tiny-gpt", {}, dict(seq=128)),
    "gru": ("text-gru", {}, {}),
}
GRID = dict(model=sorted(MODELS), mode=["train", "train", "train", "infer"],
            precision=["fp32", "bf16-mixed", "fp16-mixed", "bf16"],
            optimizer=["adamw", "adam", "sgd", "sgd-momentum", "rmsprop", "adagrad"],
            checkpointing=["none", "full", "selective"], attention=["sdpa", "eager"],
            optimizer_impl=["foreach", "loop", "fused"], batch=[1, 2, 4], grad_accum=[1, 1, 2], lora_rank=[0, 0, 8])


def cases(n: int, seed: int):
    rng = random.Random(seed)
    for _ in range(n):
        yield {k: rng.choice(v) for k, v in GRID.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from layerwise.cost.memory import inference_memory, training_memory
    from layerwise.measure.step import measure_step
    from layerwise.presets import get_preset
    from layerwise.spec.errors import LayerwiseError
    from layerwise.workload import Workload

    errs = {"peak": [], "allocated": [], "reserved": []}
    skipped = 0
    for case in cases(args.random, args.seed):
        preset, overrides, fields = MODELS[case["model"]]
        settings = {k: v for k, v in case.items() if k != "model"}
        if settings["mode"] == "infer":
            settings = {k: settings[k] for k in ("mode", "precision", "attention", "batch")}
        try:
            model = get_preset(preset, **overrides)
            w = Workload(device="cuda", **settings, **fields)
            a = (training_memory if w.mode == "train" else inference_memory)(model, w)
            m = measure_step(model, w, count_flops=False)
        except LayerwiseError as exc:  # a combination the model cannot run (no repeat to checkpoint, ...)
            skipped += 1
            print(f"{case}: not applicable ({exc})")
            continue
        row = {"peak": (a.peak_bytes, m.peak_bytes), "allocated": (a.cuda_allocator.allocated, m.cuda_allocator.allocated),
               "reserved": (a.cuda_allocator.reserved, m.cuda_allocator.reserved)}
        for key, (x, y) in row.items():
            errs[key].append(x / y - 1)
        print(f"{case}: " + "  ".join(f"{k} {x:,} vs {y:,} ({x / y - 1:+.2%})" for k, (x, y) in row.items()))
    print(f"\n{len(errs['peak'])} cases ({skipped} not applicable), seed {args.seed}")
    _summary(errs)
    # the allocator view cannot be closer than the tensor bytes it replays: the same, over the cases
    # whose tensor peaks already agree within 2%
    agree = [i for i, e in enumerate(errs["peak"]) if abs(e) <= 0.02]
    print(f"\nthe {len(agree)} cases whose tensor peaks agree within 2%:")
    _summary({k: [v[i] for i in agree] for k, v in errs.items() if k != "peak"})
    return 0


def _summary(errs: dict) -> None:
    for key, values in errs.items():
        absolute = [abs(v) for v in values]
        print(f"{key:9s}: median |error| {statistics.median(absolute):.2%}, max {max(absolute):.2%}, "
              f"within 2%: {sum(v <= 0.02 for v in absolute)}/{len(absolute)}")


if __name__ == "__main__":
    sys.exit(main())
