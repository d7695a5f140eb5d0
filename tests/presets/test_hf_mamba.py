"""Mamba (layerwise.blocks.mamba): parameters counted exactly as transformers' MambaForCausalLM counts
them, and our built module computes the same logits as transformers' with the same weights (its
slow path: the same selective scan); matmul FLOPs equal FlopCounterMode's on the built module; the
memory reading refuses the mixer by name."""
from __future__ import annotations

import pytest
import torch

from layerwise.cost.flops import model_flops
from layerwise.cost.memory import training_memory
from layerwise.measure.step import measure_step
from layerwise.presets import get_preset
from layerwise.presets.hf import from_hf_config
from layerwise.spec.errors import LayerwiseError
from layerwise.workload import Workload

transformers = pytest.importorskip("transformers", reason="transformers comes with the test extra")

MAMBA_130M = dict(model_type="mamba", vocab_size=50280, hidden_size=768, state_size=16, num_hidden_layers=24,
                  expand=2, conv_kernel=4, use_bias=False, use_conv_bias=True, time_step_rank=48,
                  layer_norm_epsilon=1e-5)  # state-spaces/mamba-130m-hf config.json
TINY = dict(model_type="mamba", vocab_size=96, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2,
            conv_kernel=3, use_bias=True, time_step_rank="auto", tie_word_embeddings=False)


def reference(config: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))


def test_mamba_130m_counts_what_transformers_counts():
    with torch.device("meta"):
        expected = sum(p.numel() for p in reference(MAMBA_130M).parameters())
    assert get_preset("mamba-130m").params().total == from_hf_config(MAMBA_130M).params().total == expected


def test_tiny_mamba_computes_transformers_logits():
    torch.manual_seed(0)
    ref = reference(TINY).eval()
    model = from_hf_config(TINY)
    ours = model.build().eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    names = {"backbone.embeddings": "embed", "backbone.layers": "blocks", "backbone.norm_f": "final_norm"}
    state = {}
    for key, value in ref.state_dict().items():
        for theirs, mine in names.items():
            key = key.replace(theirs, mine)
        key = key.replace("mixer.A_log", "mixer.scan.A_log").replace("mixer.D", "mixer.scan.D")
        state[key] = value
    ours.load_state_dict(state, strict=True)
    ids = torch.randint(0, 96, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), ref(ids).logits, atol=1e-4, rtol=1e-4)


def test_matmul_flops_match_flop_counter_and_memory_is_refused():
    model = from_hf_config(TINY)
    workload = Workload(batch=2, seq=12)
    truth = measure_step(model, workload)
    flops = model_flops(model, workload).flops
    assert (flops.fwd_matmul, flops.bwd_matmul) == (truth.flops_forward, truth.flops_backward)
    with pytest.raises(LayerwiseError, match="blocks.0: the memory reading has no model of Mamba"):
        training_memory(model, workload)
