"""A long fuzz campaign: mutated spec files, HF config.json files and training configs (the engine of
tests/test_fuzz.py, tests/fuzz_specs.py), driven by a seeded random generator instead of hypothesis.

    .venv/bin/python bench/fuzz.py [--cases 20000] [--seed 0] [--workers 2]

A case is one mutated input: a spec or HF config runs summary, flops and memory (main() in
process, --json); a training config is loaded. Prints the count of cases, how many answered and how
many were refused (one LayerwiseError line, exit 2), the tracebacks (anything else: must be 0, each
printed with the input that caused it), the cases over 5 s of wall time (must be 0; a case still
running after 60 s is stopped and counted there) and the longest case's wall and CPU seconds.
"""
from __future__ import annotations

import argparse
import multiprocessing
import random
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SLOW = 5.0  # seconds: a case over this counts as too slow
STOP = 60  # seconds: a case still running is stopped
MEMORY = 4 * 2**30  # bytes of address space per worker: a case that would use more raises MemoryError,
# counted as a traceback (the machine is shared: a runaway case must not take it down)


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def _worker(args: tuple[int, int, int]) -> dict:
    seed, start, count = args
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    import fuzz_specs as fz

    seeds = [("spec", s) for s in fz.spec_seeds()] + [("hf", s) for s in fz.hf_seeds()] + \
            [("train", s) for s in fz.train_seeds()]
    rng = random.Random(f"{seed}-{start}")
    pick = fz.Pick(rng.randrange)
    tmp = Path(tempfile.mkdtemp(prefix="layerwise-fuzz-bench-"))
    signal.signal(signal.SIGALRM, _alarm)
    out = {"cases": 0, "answered": 0, "refused": 0, "tracebacks": [], "slow": [], "seconds": 0.0, "max": 0.0, "max_cpu": 0.0,
           "by_kind": {}}
    for i in range(count):
        kind, base = pick.one(seeds)
        data = fz.mutate(base, pick, 1 + rng.randrange(3))
        as_json = kind == "hf" or rng.random() < 0.5
        path = fz.write(data, tmp / f"case{kind}", as_json and kind != "train")
        t, c = time.perf_counter(), time.process_time()
        signal.alarm(STOP)
        try:
            if kind == "train":
                ok = fz.check_train_config(path)
            else:
                ok = all(code == 0 for code in fz.check_commands(path))
        except _Timeout:
            ok = None
            out["slow"].append((kind, f">{STOP}s", path.read_text()[:2000]))
        except BaseException as err:  # noqa: BLE001 - counting what escaped is the point
            ok = None
            out["tracebacks"].append((kind, "".join(traceback.format_exception(err))[-3000:], path.read_text()[:2000]))
        finally:
            signal.alarm(0)
        dt = time.perf_counter() - t
        out["max"], out["max_cpu"] = max(out["max"], dt), max(out["max_cpu"], time.process_time() - c)
        out["seconds"] += dt
        if dt > SLOW and not (out["slow"] and out["slow"][-1][1].startswith(">")):
            out["slow"].append((kind, f"{dt:.1f}s", path.read_text()[:2000]))
        out["cases"] += 1
        out["by_kind"][kind] = out["by_kind"].get(kind, 0) + 1
        if ok is True:
            out["answered"] += 1
        elif ok is False:
            out["refused"] += 1
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    chunk = -(-args.cases // (4 * args.workers))
    jobs = [(args.seed, s, min(chunk, args.cases - s)) for s in range(0, args.cases, chunk)]
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        parts = pool.map(_worker, jobs)
    wall = time.perf_counter() - start
    total = {k: sum(p[k] for p in parts) for k in ("cases", "answered", "refused", "seconds")}
    tracebacks = [t for p in parts for t in p["tracebacks"]]
    slow = [s for p in parts for s in p["slow"]]
    longest, longest_cpu = max(p["max"] for p in parts), max(p["max_cpu"] for p in parts)
    kinds: dict[str, int] = {}
    for p in parts:
        for k, n in p["by_kind"].items():
            kinds[k] = kinds.get(k, 0) + n
    for kind, text, case in tracebacks[:10]:
        print(f"--- traceback ({kind}) ---\n{text}\n--- input ---\n{case}\n")
    for kind, took, case in slow[:10]:
        print(f"--- slow ({kind}, {took}) ---\n{case}\n")
    print(f"| cases | specs | HF configs | training configs | answered | refused (exit 2) | tracebacks | over {SLOW:.0f} s "
          f"| mean per case | longest case (wall / CPU) | wall ({args.workers} workers) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {total['cases']:,} | {kinds.get('spec', 0):,} | {kinds.get('hf', 0):,} | {kinds.get('train', 0):,} "
          f"| {total['answered']:,} | {total['refused']:,} | {len(tracebacks)} | {len(slow)} "
          f"| {1000 * total['seconds'] / max(total['cases'], 1):.1f} ms | {longest:.2f} s / {longest_cpu:.2f} s "
          f"| {wall:.0f} s |")
    return 1 if tracebacks or slow else 0


if __name__ == "__main__":
    sys.exit(main())
