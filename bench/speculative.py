"""Speculative decoding on this CPU: a small target LM and a smaller draft, both trained here on the
built-in text (the Python standard library's source, byte-level), then decoded plainly and with the
draft proposing K = 2, 4, 8 tokens per round. Prints the draft's acceptance rate, tokens per target
forward, plain and speculative tokens/s and the speed-up, greedy and sampled; greedy rows also say
whether the output is the plain greedy output (it must be).

Timing: one torch thread; each decode is repeated and the median taken, plain and speculative
interleaved so a change in the machine's load hits both.
Run: python bench/speculative.py [--out runs/speculative] [--steps 400]   (about 5-10 minutes on 2 cores)
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from layerwise.generate.decode import plain, speculative
from layerwise.generate.sampling import Sampling
from layerwise.generate.text import run_text
from layerwise.presets import get_preset
from layerwise.train.config import DataConfig, TrainConfig
from layerwise.train.run import load_run
from layerwise.train.trainer import train

# tiny-gpt's shape (README, Training quality) made deeper, and a one-layer draft a fifth of its width
TARGET = dict(n_layers=8)  # d_model 128, 4 heads, d_ff 512, 8 layers: 1.6M parameters
DRAFT = dict(d_model=64, n_layers=1, n_heads=2, d_ff=256)  # 0.05M parameters
PROMPTS = ("def __init__(self, ", "import os\nimport sys\n\n", "    for i in range(len(", "class Error(Exception):\n",
           "        if not isinstance(", "    return self.")
NEW_TOKENS, REPEATS = 96, 3


def train_pair(out: Path, steps: int) -> tuple[Path, Path]:
    cfg = TrainConfig(data=DataConfig(source="pystdlib", max_bytes=400_000), max_steps=steps, lr=2e-3, warmup_steps=40,
                      batch_size=16, grad_clip=1.0, eval_every=steps)
    for name, kw in (("target", TARGET), ("draft", DRAFT)):
        if not (out / name / "result.json").exists():
            print(f"training the {name} ({steps} steps)...", flush=True)
            train(get_preset("tiny-gpt", **kw), cfg, out / name, overwrite=True)
    return out / "target", out / "draft"


def median_seconds(fn) -> tuple[float, object]:
    runs = [fn() for _ in range(REPEATS)]
    return statistics.median(r.seconds for r in runs), runs[0]


def measure(target, draft, prompts, k: int, s: Sampling) -> dict:
    plain_s = spec_s = 0.0
    drafted = accepted = rounds = tokens = 0
    same = True
    for i, ids in enumerate(prompts):
        t_plain, base = median_seconds(lambda: plain(target, ids, NEW_TOKENS, s, seed=i))
        t_spec, spec = median_seconds(lambda: speculative(target, draft, ids, NEW_TOKENS, k, s, seed=i))
        plain_s, spec_s = plain_s + t_plain, spec_s + t_spec
        drafted, accepted, rounds, tokens = (drafted + spec.drafted, accepted + spec.accepted, rounds + spec.rounds,
                                             tokens + len(spec.tokens))
        same &= spec.tokens == base.tokens
    return {"k": k, "acceptance": accepted / drafted, "per_forward": tokens / rounds,
            "plain_tps": tokens / plain_s, "spec_tps": tokens / spec_s, "speedup": plain_s / spec_s,
            "same": ("yes" if same else "NO") if s.greedy else "-"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/speculative", help="where the two runs are trained (reused if there)")
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_dir, d_dir = train_pair(Path(args.out), args.steps)
    target, draft = load_run(t_dir).module, load_run(d_dir).module
    text = run_text(t_dir)
    prompts = [text.encode(p) for p in PROMPTS]
    n_t = sum(p.numel() for p in target.parameters())
    n_d = sum(p.numel() for p in draft.parameters())
    print(f"target {n_t:,} parameters, draft {n_d:,}; {len(PROMPTS)} prompts x {NEW_TOKENS} new tokens, "
          f"median of {REPEATS}, 1 thread")
    head = f"{'decoding':<26}{'K':>3}{'accepted':>10}{'tok/fwd':>9}{'plain tok/s':>13}{'spec tok/s':>12}{'speed-up':>10}{'same':>6}"
    print(head)
    print("-" * len(head), flush=True)
    for label, s in (("greedy", Sampling()), ("sampled T=0.8 top-p 0.95", Sampling(0.8, 0, 0.95))):
        for k in (2, 4, 8):
            r = measure(target, draft, prompts, k, s)
            print(f"{label:<26}{k:>3}{r['acceptance']:>10.1%}{r['per_forward']:>9.2f}{r['plain_tps']:>13,.0f}"
                  f"{r['spec_tps']:>12,.0f}{r['speedup']:>9.2f}x{r['same']:>6}", flush=True)
    print(f"try: layerwise generate {t_dir} --prompt 'def main(' --draft {d_dir} --lookahead 4")


if __name__ == "__main__":
    main()
