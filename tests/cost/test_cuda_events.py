"""The CUDA caching allocator's view (--device cuda): the cost reading's allocation sequence
(cost/cuda_events.py) and the measure reading's tracked storages (measure/tracker.py events), each
replayed through cost/cuda_alloc.py, give "allocated" (torch.cuda.max_memory_allocated) and
"reserved" (max_memory_reserved) within 2% of each other on small models, over a seeded random
sample of workloads; and each event log is complete (its live bytes reach the reading's own peak)."""
from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from layerwise.cost.memory import inference_memory, training_memory  # noqa: E402
from layerwise.measure import step as measure_module  # noqa: E402
from layerwise.measure.tracker import StorageTracker  # noqa: E402
from layerwise.presets import get_preset  # noqa: E402
from layerwise.workload import Workload  # noqa: E402

# sizes where activations cross the 1 MiB small/large boundary and the 10 MiB segment rule
MODELS = {
    "gpt2": ("gpt2", dict(n_layers=2), dict(seq=256)),
    "llama": ("llama-2-7b", dict(n_layers=2, d_model=512, n_heads=8, d_ff=1376, vocab_size=8000), dict(seq=512)),
    "bert": ("bert-base", dict(n_layers=2), dict(seq=256)),
    "vit": ("vit-b-16", dict(n_layers=2), {}),
    "resnet": ("resnet-18", {}, dict(image=(96, 96))),
    "tiny-gpt": ("tiny-gpt", {}, dict(seq=128)),
}
# Adafactor's and 8-bit Adam's tensor peaks are being corrected elsewhere (issue #9 defects), so
# they are left out of this sample: the allocator view cannot be closer than the bytes it replays.
GRID = dict(model=sorted(MODELS), precision=["fp32", "bf16-mixed", "fp16-mixed"],
            optimizer=["adamw", "sgd", "sgd-momentum", "rmsprop"], checkpointing=["none", "full", "selective"],
            attention=["sdpa", "eager"], optimizer_impl=["foreach", "loop"], batch=[1, 2, 4])


def _sample(n: int, seed: int):
    rng = random.Random(seed)
    return [{k: rng.choice(v) for k, v in GRID.items()} for _ in range(n)]


def _workload(case: dict, **extra) -> tuple:
    preset, overrides, fields = MODELS[case["model"]]
    model = get_preset(preset, **overrides)
    if case["checkpointing"] != "none" and case["model"] == "resnet":
        case = dict(case, checkpointing="none")  # no repeated transformer block to checkpoint
    w = Workload(device="cuda", **{k: v for k, v in case.items() if k != "model"}, **fields, **extra)
    return model, w


def _close(a: int, m: int, what: str, case) -> None:
    assert abs(a - m) <= 0.02 * m, (what, a, m, f"{a / m - 1:+.2%}", case)


@pytest.mark.parametrize("case", _sample(10, seed=9), ids=lambda c: "-".join(str(v) for v in c.values()))
def test_training_allocator_view_matches_the_measured_storages(case):
    model, w = _workload(case)
    analytic = training_memory(model, w)
    truth = measure_module.measure_step(model, w, count_flops=False)
    a, m = analytic.cuda_allocator, truth.cuda_allocator
    _close(a.allocated, m.allocated, "allocated", case)
    _close(a.reserved, m.reserved, "reserved", case)
    assert m.allocated >= truth.peak_bytes  # rounding only adds


@pytest.mark.parametrize("name", ["gpt2", "llama", "resnet"])
def test_inference_allocator_view_matches_the_measured_storages(name):
    model, w = _workload(dict(model=name, precision="bf16-mixed", optimizer="sgd", checkpointing="none",
                              attention="sdpa", optimizer_impl="foreach", batch=2), mode="infer")
    a = inference_memory(model, w).cuda_allocator
    m = measure_module.measure_step(model, w, count_flops=False).cuda_allocator
    _close(a.allocated, m.allocated, "allocated", name)
    _close(a.reserved, m.reserved, "reserved", name)


def _raw_peak(before, events) -> int:
    sizes = dict(before)
    live = sum(sizes.values())
    peak = live
    for key, n in events:
        if n:
            sizes[key] = n
            live += n
        elif key in sizes:
            live -= sizes.pop(key)
        peak = max(peak, live)
    return peak


def test_the_tracker_event_log_reaches_the_tracked_peak(monkeypatch):
    seen = {}
    original = StorageTracker.cuda_allocator_peaks

    def spy(self):
        seen["peak"], seen["raw"] = self.peak.total, _raw_peak(self.before, self.events)
        return original(self)

    monkeypatch.setattr(StorageTracker, "cuda_allocator_peaks", spy)
    model, w = _workload(dict(model="gpt2", precision="bf16-mixed", optimizer="adamw", checkpointing="full",
                              attention="eager", optimizer_impl="foreach", batch=2))
    measure_module.measure_step(model, w, count_flops=False)
    assert seen["raw"] == seen["peak"]


def test_the_cost_event_log_reaches_the_analytic_peak(monkeypatch):
    from layerwise.cost import cuda_events

    seen = {}
    original = cuda_events.steady_state_peaks

    def spy(persistent, step):
        seen["raw"] = _raw_peak(persistent, step)
        return original(persistent, step)

    monkeypatch.setattr(cuda_events, "steady_state_peaks", spy)
    for case in _sample(6, seed=3):
        model, w = _workload(case)
        peak = training_memory(model, w).peak_bytes
        assert abs(seen["raw"] - peak) <= 0.02 * peak, (case, seen["raw"], peak)


def test_no_allocator_view_without_cuda_or_on_sharded_setups():
    model, w = _workload(dict(model="tiny-gpt", precision="fp32", optimizer="adamw", checkpointing="none",
                              attention="sdpa", optimizer_impl="foreach", batch=2))
    assert "cuda_allocated_bytes" in training_memory(model, w).to_json()
    assert "cuda_allocated_bytes" not in training_memory(model, w.with_(device="cpu")).to_json()
    sharded = training_memory(model, w.with_(zero=2, dp=4))
    assert sharded.cuda_allocator is None and any("allocator" in n for n in sharded.notes)
