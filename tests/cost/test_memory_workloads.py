"""The workloads issue #9 found the cost reading wrong on, against the measure reading (fake tensors):
LoRA (frozen norms keep no weight-gradient input; a frozen layer fed by frozen layers has no
gradients), Adafactor (factored second moments need the real parameter shapes), 8-bit Adam
(bitsandbytes' layout, measured on layerwise.train.adam8bit) and Lion (lion-pytorch).
Peak within 2%, each component within 5% of the peak, as tests/cost/test_memory.py."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from layerwise.cost.memory import training_memory  # noqa: E402
from layerwise.measure.step import measure_step  # noqa: E402
from layerwise.presets import get_preset  # noqa: E402
from layerwise.workload import Workload  # noqa: E402

LLAMA = dict(n_layers=2, d_model=256, n_heads=4, d_ff=512, vocab_size=1000)
CASES = {
    # issue #9: llama-2-7b bf16 adamw --lora-rank 16 was +22.9% on activations (frozen RMSNorms)
    "llama-bf16-lora16": ("llama-2-7b", LLAMA, dict(batch=1, seq=128, precision="bf16", lora_rank=16)),
    # issue #9: tiny-gpt --lora-rank 8 peak -2.48% (the FFN activation's gradients in backward)
    "tiny-gpt-lora8": ("tiny-gpt", {}, dict(lora_rank=8)),
    "tiny-gpt-lora4-bf16-mixed-full": ("tiny-gpt", {}, dict(lora_rank=4, seq=64, batch=2, precision="bf16-mixed",
                                                          checkpointing="full")),
    # issue #9: gpt2 fp16 Adafactor selective: optimizer state +4904% (flattened shapes)
    "gpt2-fp16-adafactor-selective": ("gpt2", dict(n_layers=2), dict(seq=128, precision="fp16", optimizer="adafactor",
                                                                     checkpointing="selective")),
    "llama-adafactor-foreach": ("llama-2-7b", LLAMA, dict(seq=32, optimizer="adafactor", optimizer_impl="foreach")),
    "llama-adam8bit": ("llama-2-7b", LLAMA, dict(seq=64, optimizer="adam-8bit")),
    "llama-adam8bit-bf16": ("llama-2-7b", LLAMA, dict(seq=64, optimizer="adam-8bit", precision="bf16")),
    "llama-lion": ("llama-2-7b", LLAMA, dict(seq=64, optimizer="lion")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_memory_matches_measure(case):
    preset, overrides, fields = CASES[case]
    model, workload = get_preset(preset, **overrides), Workload(**fields)
    report, truth = training_memory(model, workload), measure_step(model, workload, count_flops=False)
    peak = truth.peak_bytes
    assert abs(report.peak_bytes - peak) <= 0.02 * peak, (report.peak_bytes, peak, report.peak_phase, truth.peak_phase)
    comps = report.components.as_dict()
    for key, value in truth.components.items():
        assert abs(comps[key] - value) <= 0.05 * peak, (key, comps[key], value)


def test_adafactor_state_is_factored():
    """Rows + columns per matrix, not a full second moment: far below Adam's 2 x params."""
    model = get_preset("llama-2-7b", **LLAMA)
    ada = training_memory(model, Workload(seq=32, optimizer="adafactor")).components.optimizer_states
    assert ada < 0.05 * 4 * model.params().trainable
