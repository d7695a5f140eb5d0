"""The memory timeline of one step in both readings: the cost reading's (its symbolic trace) against
the measure reading's (its storage tracker, every aten op) at every phase boundary, within 2% of the
measured peak, over a random sample (fixed seed) of models and workloads."""
from __future__ import annotations

import json
import random

import pytest

torch = pytest.importorskip("torch")

from layerwise.cli import main  # noqa: E402
from layerwise.cost.memory import inference_memory, training_memory  # noqa: E402
from layerwise.cost.timeline import BOUNDARIES, from_report  # noqa: E402
from layerwise.measure.step import measure_step  # noqa: E402
from layerwise.presets import get_preset  # noqa: E402
from layerwise.workload import Workload  # noqa: E402

MODELS = {  # preset -> (overrides, workload fields): sizes that run in a second
    "tiny-gpt": ({}, dict(batch=4, seq=64)),
    "llama-2-7b": (dict(n_layers=2, d_model=128, n_heads=4, d_ff=256, vocab_size=500), dict(batch=2, seq=32)),
    "vit-b-16": (dict(n_layers=2, d_model=64, n_heads=4, d_ff=128), dict(batch=2)),
    "digits-cnn": ({}, dict(batch=8)),
    "resnet-18": ({}, dict(batch=2, image=(32, 32))),
    "text-gru": ({}, dict(batch=4)),
}
CHOICES = dict(precision=("fp32", "bf16-mixed"), optimizer=("adamw", "sgd", "sgd-momentum"),
               checkpointing=("none", "full"), attention=("sdpa", "eager"), grad_accum=(1, 1, 2))
_rng = random.Random(11)
SAMPLE = [(name, {k: _rng.choice(v) for k, v in CHOICES.items()}) for name in MODELS for _ in range(2)]


def _workload(name: str, choice: dict) -> Workload:
    fields = dict(MODELS[name][1], **choice)
    if name in ("digits-cnn", "resnet-18", "text-gru"):
        fields["checkpointing"] = "none"  # no repeated blocks to checkpoint
        fields["attention"] = "sdpa"  # no attention: --attention eager is refused (spec/applies.py)
    return Workload(**fields)


@pytest.mark.parametrize("name, choice", SAMPLE, ids=[f"{n}-{'-'.join(map(str, c.values()))}" for n, c in SAMPLE])
def test_the_two_timelines_agree_at_every_phase_boundary(name, choice):
    model, work = get_preset(name, **MODELS[name][0]), _workload(name, choice)
    report = training_memory(model, work, timeline=True)
    analytic = from_report(report)
    measured = measure_step(model, work, timeline=True, count_flops=False)
    line = measured.timeline
    peak = measured.peak_bytes
    assert set(analytic.boundaries) == set(line.boundaries) == set(BOUNDARIES)
    a, m = analytic.boundary_totals(), line.boundary_totals()
    for boundary in BOUNDARIES:
        assert abs(a[boundary] - m[boundary]) <= 0.02 * peak, (boundary, a[boundary], m[boundary], peak)
    # each timeline's highest moment is its reading's peak
    assert analytic.total(analytic.peak_index) == report.peak_bytes
    assert line.total(line.peak_index) == peak
    # the moments run forward, then backward, then the optimizer
    order = {"forward": 0, "backward": 1, "optimizer": 2}
    assert [order[p] for p in line.phase] == sorted(order[p] for p in line.phase)
    assert [order[p] for p in analytic.phase] == sorted(order[p] for p in analytic.phase)


def test_moments_name_the_block_paths_of_the_built_module():
    model, work = get_preset("tiny-gpt"), Workload(batch=2, seq=32)
    line = measure_step(model, work, timeline=True, count_flops=False).timeline
    names = {n for n, _ in model.build().named_modules()}
    assert set(line.path) <= names  # "" (the root: the loss, the optimizer) is the root's name
    backward = {p for p, ph in zip(line.path, line.phase) if ph == "backward"}
    assert "blocks.0.attn.q_proj" in backward and "blocks.1.ffn.down_proj" in backward
    analytic = from_report(training_memory(model, work, timeline=True))
    assert "blocks.0.attn.q_proj" in analytic.path
    ops = dict(zip(analytic.path, analytic.op))
    assert ops["blocks.0.attn.q_proj"] == "linear" and ops["blocks.0.attn_norm"] == "layernorm"


def test_inference_timelines_agree_at_the_boundaries():
    model, work = get_preset("tiny-gpt"), Workload(mode="infer", batch=2, seq=64)
    analytic = from_report(inference_memory(model, work, timeline=True))
    measured = measure_step(model, work, timeline=True, count_flops=False)
    a, m = analytic.boundary_totals(), measured.timeline.boundary_totals()
    assert set(a) == set(m) == {"forward_start", "forward_end"}
    assert all(abs(a[k] - m[k]) <= 0.02 * measured.peak_bytes for k in a)


def test_timeline_files_from_memory_and_verify(tmp_path, capsys):
    path = tmp_path / "t.json"
    assert main(["memory", "tiny-gpt", "--seq", "32", "--timeline", str(path)]) == 0
    assert "timeline (" in capsys.readouterr().out  # the sparkline
    data = json.loads(path.read_text())
    assert data["reading"] == "analytic" and len(data["total"]) == len(data["path"]) == len(data["series"]["weights"])
    assert data["peak"]["bytes"] == max(data["total"])
    assert [sum(col) for col in zip(*data["series"].values())] == data["total"]
    both = tmp_path / "v.json"
    assert main(["verify", "tiny-gpt", "--seq", "32", "--batch", "2", "--timeline", str(both)]) == 0
    data = json.loads(both.read_text())
    assert data["measured"]["reading"] == "measured" and set(data["boundaries"]) == set(BOUNDARIES)
    assert all(abs(b["of_peak"]) <= 0.02 for b in data["boundaries"].values())
