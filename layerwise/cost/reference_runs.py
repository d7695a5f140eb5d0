"""Published Megatron-LM runs as step-time predictions: the GPT model they trained, the layout they
used, and the figure they reported (refdata/step_time_runs.csv names each source). Used by
bench/time_accuracy.py and tests/cost/test_step_time.py. Pure Python.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

from layerwise.cost.hardware import get_gpu
from layerwise.cost.step_time import Layout, layer_seconds, step_time
from layerwise.spec.model import Model

SEQ, VOCAB = 2048, 51200  # every run: Narayanan et al. 2021 Table 1, Korthikanti et al. 2022 Table 3
# The row Efficiency.eager_attention is derived from: a calibration of the model, not a check of it.
CALIBRATION = {"22B layer selective recompute"}
PRECISION = "fp16-mixed"  # Megatron-LM's --fp16 (loss scaling: the optimizer's unscale pass is counted)


@dataclass(frozen=True)
class Run:
    name: str
    source: str
    hidden: int
    heads: int
    layers: int
    tp: int
    pp: int
    gpus: int
    global_batch: int
    micro_batch: int
    interleave: int
    ddp: str  # torch (PyTorch DDP: overlaps the gradient all-reduce) | local (Megatron's: after backward)
    tp_overlap: bool  # Megatron-LM's async tensor-parallel communication in backward (since Sep 2021)
    recompute: str
    sequence_parallel: bool
    metric: str  # tflops_per_gpu | layer_ms | step_s
    value: float
    tag: str


def read_runs(path: Path) -> list[Run]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    out = []
    for row in csv.DictReader(lines):
        ints = {k: int(row[k]) for k in ("hidden", "heads", "layers", "tp", "pp", "gpus", "global_batch",
                                         "micro_batch", "interleave")}
        out.append(Run(row["run"], row["source"], **ints, ddp=row["ddp"], tp_overlap=row["tp_overlap"] == "1",
                       recompute=row["recompute"],
                       sequence_parallel=row["sequence_parallel"] == "1", metric=row["metric"],
                       value=float(row["value"]), tag=row["tag"]))
    return out


def megatron_gpt(hidden: int, heads: int, layers: int) -> Model:
    """Megatron-LM's GPT: pre-LN, learned positions, GeLU MLP of 4h, tied head, dropout 0.1 on the
    hidden states and on the attention probabilities (its defaults)."""
    from layerwise.presets import get_preset

    m = get_preset("gpt2", d_model=hidden, n_heads=heads, n_layers=layers, vocab_size=VOCAB, max_seq=SEQ, dropout=0.1)
    block = replace(m.body.block, attn=replace(m.body.block.attn, dropout=0.1))
    return replace(m, body=replace(m.body, block=block))


def megatron_flops(run: Run) -> int:
    """Narayanan et al. 2021 eq. (3): F = 96 B s l h^2 (1 + s/(6h) + V/(16 l h)), recompute included."""
    b, s, l, h, v = run.global_batch, SEQ, run.layers, run.hidden, VOCAB
    return 96 * b * s * l * h * h + 16 * b * s * s * l * h + 6 * b * s * h * v


def layout_of(run: Run) -> Layout:
    dp = run.gpus // (run.tp * run.pp)
    return Layout(dp=dp, tp=run.tp, pp=run.pp, sequence_parallel=run.sequence_parallel,
                  schedule="interleaved" if run.interleave > 1 else "1f1b", interleave=run.interleave,
                  micro_batch=run.micro_batch, grad_accum=run.global_batch // (run.micro_batch * dp),
                  checkpointing=run.recompute, tp_overlap=run.tp_overlap)


def predict(run: Run) -> float:
    """The model's figure for `run`, in the run's metric."""
    gpu = get_gpu("a100-80gb")
    model = megatron_gpt(run.hidden, run.heads, run.layers)
    layout = layout_of(run)
    if run.metric == "layer_ms":
        return 1e3 * layer_seconds(model, gpu, layout, seq=SEQ, precision=PRECISION, attention="eager")
    st = step_time(model, gpu, layout, seq=SEQ, precision=PRECISION, attention="eager",
                   overlap_grad_reduce=run.ddp == "torch")
    if run.metric == "step_s":
        return st.step_seconds
    return megatron_flops(run) / st.step_seconds / run.gpus / 1e12

