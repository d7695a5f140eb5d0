"""The CUDA caching allocator's view against a GPU: for a grid of small models and workloads, the
cost reading's and the measure reading's predicted "allocated" and "reserved" (cost/cuda_alloc.py
replaying each reading's allocations, the `cuda_allocated_bytes` / `cuda_reserved_bytes` JSON keys)
next to torch.cuda.max_memory_allocated() / max_memory_reserved() of a real training step on the
GPU (the measure reading with fake=False: step 1 warms up, step 2 is measured after
reset_peak_memory_stats).

    .venv/bin/python bench/gpu_truth.py [--quick]

Without a CUDA device it prints "no CUDA device" and exits 0. Not a test. What the predictions
leave out, and so what the errors show: cuBLAS/cuDNN workspaces taken from the allocator, the
real CUDA kernels' choices (the fake step runs CPU kernels with CUDA's defaults), CPU-side
optimizer `step` scalars (counted on the device by the prediction).
"""
from __future__ import annotations

import argparse
import statistics
import sys

CASES = [  # (preset, overrides, workload fields)
    ("tiny-gpt", {}, dict(batch=8, seq=128)),
    ("gpt2", dict(n_layers=2), dict(batch=2, seq=256)),
    ("gpt2", dict(n_layers=2), dict(batch=4, seq=256, precision="bf16-mixed", attention="eager")),
    ("llama-2-7b", dict(n_layers=2, d_model=512, n_heads=8, d_ff=1376, vocab_size=8000),
     dict(batch=2, seq=512, precision="bf16-mixed")),
    ("llama-2-7b", dict(n_layers=2, d_model=512, n_heads=8, d_ff=1376, vocab_size=8000),
     dict(batch=2, seq=512, checkpointing="full")),
    ("bert-base", dict(n_layers=2), dict(batch=4, seq=256, checkpointing="selective")),
    ("vit-b-16", dict(n_layers=2), dict(batch=4, optimizer="sgd-momentum")),
    ("resnet-18", {}, dict(batch=4)),
    ("gpt2", dict(n_layers=2), dict(batch=2, seq=256, mode="infer")),
]
WORKLOADS = [dict(), dict(optimizer_impl="loop")]  # CUDA's default (foreach) and the for-loop step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CUDA's default optimizer implementation only")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device")
        return 0
    from layerwise.cost.memory import inference_memory, training_memory
    from layerwise.measure.step import measure_step
    from layerwise.presets import get_preset
    from layerwise.workload import Workload

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    header = ("case", "GPU alloc", "cost", "err", "measure", "err", "GPU reserved", "cost", "err", "measure", "err")
    print(" | ".join(header))
    errors = {k: [] for k in ("cost_alloc", "meas_alloc", "cost_res", "meas_res")}
    for preset, overrides, fields in CASES:
        for extra in WORKLOADS[:1] if args.quick else WORKLOADS:
            w = Workload(device="cuda", **fields, **extra)
            model = get_preset(preset, **overrides)
            cost = (training_memory if w.mode == "train" else inference_memory)(model, w).cuda_allocator
            fake = measure_step(model, w, count_flops=False).cuda_allocator
            real = measure_step(model, w, fake=False, count_flops=False).cuda
            torch.cuda.empty_cache()
            row = [f"{preset} {fields} {extra}", f"{real.max_allocated:,}"]
            for key, pred, truth in (("cost_alloc", cost.allocated, real.max_allocated),
                                     ("meas_alloc", fake.allocated, real.max_allocated)):
                errors[key].append(pred / truth - 1)
                row += [f"{pred:,}", f"{pred / truth - 1:+.2%}"]
            row.append(f"{real.max_reserved:,}")
            for key, pred, truth in (("cost_res", cost.reserved, real.max_reserved),
                                     ("meas_res", fake.reserved, real.max_reserved)):
                errors[key].append(pred / truth - 1)
                row += [f"{pred:,}", f"{pred / truth - 1:+.2%}"]
            print(" | ".join(row))
    for key, errs in errors.items():
        absolute = [abs(e) for e in errs]
        print(f"{key}: median |error| {statistics.median(absolute):.2%}, max {max(absolute):.2%}, "
              f"within 2%: {sum(a <= 0.02 for a in absolute)}/{len(absolute)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
