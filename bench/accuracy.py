"""Accuracy of the analytic memory model (layerwise.cost.memory) against the measure reading
(layerwise.measure.step.measure_step, fake tensors): every preset at small overrides x {fp32,
bf16-mixed} x {adamw, sgd} x {checkpointing none, full} x {eager, sdpa}, plus full-size runs.

    .venv/bin/python bench/accuracy.py [--quick] [--only NAME ...]
    .venv/bin/python bench/accuracy.py --random N [--seed S] [--only NAME ...] [--jobs J]   (suite II:
        bench/random_cases.py; --only keeps the drawn cases of those presets)

Prints one row per case (peak error, worst component error relative to the peak) and a summary
(median and max of |peak error|). Not a test; it takes minutes.
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from contextlib import nullcontext

from layerwise.cost.memory import inference_memory, training_memory
from layerwise.presets import get_preset, list_presets
from layerwise.spec.applies import has_attention
from layerwise.workload import Workload

SMALL = {  # family -> (overrides, workload fields)
    "decoder": ({"n_layers": 2}, {"batch": 2, "seq": 128}),
    "encoder": ({"n_layers": 2}, {"batch": 2, "seq": 128}),
    "vit": ({"n_layers": 2}, {"batch": 2}),
    "resnet": ({}, {"batch": 2, "image": (64, 64)}),
    "text_rnn": ({}, {"batch": 4}),
    "cnn": ({}, {"batch": 8}),
    "seq2seq": ({"n_layers": 2}, {"batch": 2, "seq": 64}),
    "mamba": ({"n_layers": 2}, {"batch": 2, "seq": 64}),
    # DeepSeek (MLA + experts): 4 layers so V3's 3 dense layers are followed by a MoE one; 16 experts keep V3's
    # 8 groups of 2 whole
    "deepseek": ({"n_layers": 4, "d_model": 64, "n_heads": 4, "d_ff": 128, "vocab_size": 256, "max_seq": 128,
                  "kv_rank": 32, "d_nope": 16, "d_rope": 8, "d_v": 16, "d_expert": 32, "n_experts": 16},
                 {"batch": 2, "seq": 128}),
}
FULL = [  # (preset, workload fields), the models at their real size
    ("llama-2-7b", {"batch": 1, "seq": 2048, "precision": "bf16-mixed", "optimizer": "adamw"}),
    ("bert-base", {"batch": 8, "seq": 512}),
    ("vit-b-16", {"batch": 32}),
    ("resnet-50", {"batch": 32}),
    ("text-gru", {"batch": 32}),
]


def grid(quick: bool):
    for precision in ("fp32", "bf16-mixed"):
        for optimizer in ("adamw", "sgd"):
            for ckpt in ("none", "full"):
                for attention in ("eager", "sdpa"):
                    if quick and attention == "eager" and ckpt == "full":
                        continue
                    yield dict(precision=precision, optimizer=optimizer, checkpointing=ckpt, attention=attention)


def compare(model, workload):
    from layerwise.measure.step import measure_step

    truth = measure_step(model, workload, count_flops=False)
    report = (training_memory if workload.mode == "train" else inference_memory)(model, workload)
    peak_err = (report.peak_bytes - truth.peak_bytes) / truth.peak_bytes
    comps = report.components.as_dict()
    worst = max(truth.components, key=lambda k: abs(comps[k] - truth.components[k]))
    comp_err = (comps[worst] - truth.components[worst]) / truth.peak_bytes
    return truth, report, peak_err, worst, comp_err


def cases(quick: bool, only: list[str]):
    for info in list_presets():
        if only and info.name not in only:
            continue
        overrides, fields = SMALL.get(info.family, ({}, {"batch": 2}))
        if info.family == "deepseek" and get_preset(info.name).body.block.attn.q_rank:
            overrides = dict(overrides, q_rank=48)  # V3's 1536-wide query bottleneck at d_model 64
        if "seq" in fields:  # no longer than the preset's positions (tiny-seq2seq: 12)
            fields = dict(fields, seq=min(fields["seq"], get_preset(info.name, **overrides).input.max_seq or fields["seq"]))
        attention = has_attention(get_preset(info.name, **overrides).body)
        for g in grid(quick):
            if g["attention"] == "eager" and not attention:  # refused: the model has no attention
                continue
            yield info.name, overrides, Workload(**fields, **g)
        yield info.name, overrides, Workload(mode="infer", **fields)
        if info.family in ("seq2seq", "deepseek"):  # greedy decoding through the caches (MLA: its latents)
            yield info.name, overrides, Workload(mode="infer", new_tokens=16, **fields)
    if not quick:
        for name, fields in FULL:
            if not only or name in only:
                yield name + " (full size)", {}, Workload(**fields)


def _one_case(indexed):
    """(index, label, (peak error, worst component, its error) or the reason it was not measured)."""
    from random_cases import compare as compare_case

    i, case = indexed
    try:
        _, _, peak_err, worst, comp_err = compare_case(case)
    except Exception as exc:  # listed, not fatal
        return i, case.label(), f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
    return i, case.label(), (peak_err, worst, comp_err)


def random_suite(n: int, seed: int, only: list[str] = (), jobs: int = 1, index: list[int] = ()) -> int:
    """Seeded random combinations of every workload setting (bench/random_cases.py); `only`: the
    cases of these presets among the n drawn (the same draws as the whole suite's); `jobs`: cases
    measured in that many processes at once (printed in order); `index`: only these of the n."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from random_cases import cases

    todo = [(i, c) for i, c in enumerate(cases(n, seed))
            if (not only or c.preset in only) and (not index or i in index)]
    errors, comp_errors, failed = [], [], []
    start = time.time()
    with multiprocessing.get_context("spawn").Pool(jobs) if jobs > 1 else nullcontext() as pool:
        results = pool.imap(_one_case, todo) if pool else map(_one_case, todo)
        for i, label, result in results:
            if isinstance(result, str):
                failed.append((label, result))
                continue
            peak_err, worst, comp_err = result
            errors.append(abs(peak_err))
            comp_errors.append(abs(comp_err))
            miss = "" if abs(peak_err) <= 0.02 and abs(comp_err) <= 0.05 else "  MISS"
            print(f"{i:5} {100 * peak_err:+7.2f}% {worst:>16} {100 * comp_err:+7.2f}%  {label}{miss}", flush=True)
    _summary(errors, comp_errors, start)
    for label, why in failed:
        print(f"not measured: {label}: {why}")
    return 0


def _summary(errors, comp_errors, start) -> None:
    print()
    if not errors:
        return
    print(f"{len(errors)} cases in {time.time() - start:.0f} s: |peak error| median "
          f"{100 * statistics.median(errors):.2f}%, max {100 * max(errors):.2f}%; "
          f"within 2%: {sum(e <= 0.02 for e in errors)}/{len(errors)}")
    print(f"|worst component error| (of the peak): median {100 * statistics.median(comp_errors):.2f}%, "
          f"max {100 * max(comp_errors):.2f}%; within 5%: {sum(e <= 0.05 for e in comp_errors)}/{len(comp_errors)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer combinations, no full-size runs")
    parser.add_argument("--only", nargs="*", default=[], help="preset names")
    parser.add_argument("--random", type=int, default=0, metavar="N", help="N seeded random cases (suite II)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random")
    parser.add_argument("--jobs", type=int, default=1, help="--random: cases measured in parallel processes")
    parser.add_argument("--index", type=int, nargs="*", default=[], help="--random: only the cases of these indices")
    args = parser.parse_args(argv)
    if args.random:
        return random_suite(args.random, args.seed, args.only, args.jobs, args.index)
    errors, comp_errors, failed = [], [], []
    header = f"{'model':28} {'mode':5} {'precision':10} {'opt':5} {'ckpt':4} {'attn':5} " \
             f"{'measured':>14} {'analytic':>14} {'peak err':>9} {'worst component':>28}"
    print(header)
    print("-" * len(header))
    start = time.time()
    for name, overrides, w in cases(args.quick, args.only):
        model = get_preset(name.split(" ")[0], **overrides)
        try:
            truth, report, peak_err, worst, comp_err = compare(model, w)
        except Exception as exc:  # a case the measure (or the model) cannot run: listed, not fatal
            failed.append((name, w, f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"))
            continue
        errors.append(abs(peak_err))
        comp_errors.append(abs(comp_err))
        print(f"{name:28} {w.mode:5} {w.precision:10} {w.optimizer:5} {w.checkpointing:4} {w.attention:5} "
              f"{truth.peak_bytes:14,} {report.peak_bytes:14,} {100 * peak_err:+8.2f}% "
              f"{worst:>17} {100 * comp_err:+8.2f}%", flush=True)
    _summary(errors, comp_errors, start)
    for name, w, why in failed:
        print(f"not measured: {name} {w.mode} {w.precision} {w.optimizer} ckpt={w.checkpointing}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
