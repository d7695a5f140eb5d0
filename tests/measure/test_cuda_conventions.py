"""`--device cuda` without a GPU: the measure reading keeps what CUDA's kernels keep (1-byte dropout
masks, attention dropout inside the sdpa kernel, fp32 layer_norm under autocast), and the cost
reading's CUDA convention agrees with it where dropout is on (issue #9: these cases missed by up to
30% when the measure reading kept CPU's masks and math-path attention)."""
from __future__ import annotations

import pytest

from layerwise.cost.memory import training_memory
from layerwise.measure.step import measure_step
from layerwise.presets import get_preset
from layerwise.workload import Workload

MODEL = get_preset("gpt2", n_layers=2, d_model=64, n_heads=4, d_ff=128, vocab_size=256, max_seq=128,
                   dropout=0.1, attn_dropout=0.1)


@pytest.mark.parametrize("attention, checkpointing, precision", [
    ("eager", "none", "fp32"), ("sdpa", "none", "fp32"), ("sdpa", "full", "fp32"),
    ("eager", "none", "bf16-mixed"), ("sdpa", "none", "fp16-mixed"),
])
def test_cuda_conventions_agree_with_the_cost_reading(attention, checkpointing, precision):
    # batch 8 x seq 128: the activations, not the optimizer step, hold the peak
    w = Workload(batch=8, seq=128, device="cuda", attention=attention, checkpointing=checkpointing,
                 precision=precision, optimizer="sgd")
    measured, analytic = measure_step(MODEL, w, count_flops=False), training_memory(MODEL, w)
    assert abs(analytic.peak_bytes - measured.peak_bytes) <= 0.02 * measured.peak_bytes
    comps = analytic.components.as_dict()
    for name, value in measured.components.items():
        assert abs(comps[name] - value) <= 0.05 * measured.peak_bytes, name


def test_cuda_dropout_masks_are_one_byte():
    """The same step on the CPU keeps fp32 masks: 3 bytes per masked element more."""
    w = Workload(batch=8, seq=128, attention="eager", optimizer="sgd")
    cpu = measure_step(MODEL, w, count_flops=False).components["activations"]
    cuda = measure_step(MODEL, w.with_(device="cuda"), count_flops=False).components["activations"]
    tokens = 8 * 128
    per_layer = 4 * 128 * tokens + 2 * 64 * tokens  # the (B, H, S, S) probs; after attention, after the FFN
    masked = 2 * per_layer + 64 * tokens  # two layers and the embeddings' dropout
    assert cpu - cuda == 3 * masked
