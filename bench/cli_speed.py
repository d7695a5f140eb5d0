"""End-to-end wall time of the pure-Python cost path, as a user runs it (new process each time),
and one in-process step-time estimate next to llm-analysis's (cli99/llm-analysis `train()`) when it
can be imported (`--llm-analysis DIR` adds DIR to sys.path: it pins transformers < 5, so install it
apart, e.g. `pip install --target DIR --no-deps llm-analysis "fire<0.6" termcolor six`).

    .venv/bin/python bench/cli_speed.py [--llm-analysis DIR]

Prints the median and max of 5 runs per command and the CPU seconds (user + sys: the machine is
shared, so wall time varies with its load); checks that no torch was imported along the way.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

LAYERWISE = str(Path(sys.executable).with_name("layerwise"))
COMMANDS = [
    ["summary", "llama-3-70b", "--json"],
    ["flops", "llama-3-70b", "--seq", "8192", "--json"],
    ["memory", "llama-3-70b", "--zero", "3", "--dp", "64", "--precision", "bf16-mixed", "--checkpointing", "full", "--json"],
    ["memory", "llama-2-7b", "--mode", "infer", "--seq", "4096", "--new-tokens", "512", "--json"],
    ["time", "llama-3-70b", "--gpu", "h100-sxm", "--gpus", "512", "--tp", "8", "--pp", "4", "--sp", "--seq", "8192",
     "--global-batch", "512", "--json"],
    ["plan", "llama-3-70b", "--gpu", "h100-sxm", "--gpus", "512", "--seq", "8192", "--json"],
]
NO_TORCH = ("import sys, io, contextlib; from layerwise.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main({args!r})\n"
            "print('torch' in sys.modules)")


def wall(args: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child)."""
    before = os.times()
    start = time.perf_counter()
    subprocess.run([LAYERWISE, *args], check=True, capture_output=True)
    after = os.times()
    return time.perf_counter() - start, (after.children_user - before.children_user) + (
        after.children_system - before.children_system)


def in_process(llm_analysis: str | None) -> None:
    """One 70B estimate on 512 H100s (tp 8, pp 4, full recompute), best of 5, cold and warm."""
    from layerwise.cost.hardware import get_gpu
    from layerwise.cost.step_time import Layout, step_time
    from layerwise.presets import get_preset

    model, gpu = get_preset("llama-2-70b"), get_gpu("h100-sxm")
    layout = Layout(dp=16, tp=8, pp=4, micro_batch=1, grad_accum=32, checkpointing="full")
    start = time.perf_counter()
    ours = step_time(model, gpu, layout, seq=4096)
    cold = time.perf_counter() - start
    warm = best(lambda: step_time(model, gpu, layout, seq=4096))
    print(f"\nin process, llama-2-70b on 512 x h100-sxm (tp 8, pp 4, full recompute, global batch 512 x 4096):")
    print(f"  layerwise step_time: cold {cold * 1000:.1f} ms, warm {warm * 1000:.2f} ms; step {ours.step_seconds:.2f} s")
    if llm_analysis:
        sys.path.insert(0, llm_analysis)
    try:
        from llm_analysis.analysis import train
    except ImportError:
        print("  llm-analysis: not importable (see --llm-analysis)")
        return
    kw = dict(model_name="upstage_Llama-2-70b-instruct-v2", gpu_name="h100-sxm-80gb", dtype_name="w16a16e16",
              log_level="ERROR", batch_size_per_gpu=1, global_batch_size=512, seq_len=4096, tp_size=8, pp_size=4,
              total_num_gpus=512, activation_recomputation=2, flops_efficiency=0.5)
    theirs = best(lambda: train(**kw))
    print(f"  llm-analysis train(): {theirs * 1000:.2f} ms (its step {train(**kw)['latency_per_iter']:.2f} s at "
          f"its flops_efficiency 0.5, which it needs as an input); layerwise warm / llm-analysis = {warm / theirs:.1f}")


def best(fn, n: int = 5) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    llm_analysis = sys.argv[sys.argv.index("--llm-analysis") + 1] if "--llm-analysis" in sys.argv else None
    print(f"{'command':<100} {'median':>8} {'max':>8} {'CPU':>8} torch")
    for args in COMMANDS:
        runs = [wall(args) for _ in range(5)]
        times, cpu = [w for w, _ in runs], [c for _, c in runs]
        torch_loaded = subprocess.run([sys.executable, "-c", NO_TORCH.format(args=args)], capture_output=True,
                                      text=True, check=True).stdout.strip()
        print(f"{'layerwise ' + ' '.join(args):<100} {statistics.median(times) * 1000:>6.0f}ms "
              f"{max(times) * 1000:>6.0f}ms {statistics.median(cpu) * 1000:>6.0f}ms "
              f"{'yes' if torch_loaded == 'True' else 'no'}")
    in_process(llm_analysis)


if __name__ == "__main__":
    main()
