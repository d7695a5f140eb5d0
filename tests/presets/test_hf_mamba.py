"""Mamba (layerwise.blocks.mamba): parameters counted exactly as transformers' MambaForCausalLM counts
them, and our built module computes the same logits as transformers' with the same weights (its
slow path: the same selective scan); matmul FLOPs equal FlopCounterMode's on the built module; the
memory reading models what the scan's loop over positions saves (cost/act_mamba.py) against the
measure reading."""
from __future__ import annotations

import pytest
import torch

from layerwise.cost.flops import model_flops
from layerwise.cost.memory import inference_memory, training_memory
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


@pytest.mark.parametrize("config", [dict(TINY, intermediate_size=40), dict(TINY, expand=3)],
                         ids=["intermediate_size", "expand"])
def test_the_inner_width_is_the_one_transformers_builds(config):
    # MambaConfig computes intermediate_size = expand * hidden_size, but a config.json's own value
    # wins, and MambaMixer reads intermediate_size: the importer took expand alone (64, not 40)
    ref = reference(config)
    model = from_hf_config(config)
    assert model.body.block.mixer.d_inner == ref.backbone.layers[0].mixer.intermediate_size
    assert model.params().total == sum(p.numel() for p in ref.parameters())


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


def test_matmul_flops_match_flop_counter():
    model = from_hf_config(TINY)
    workload = Workload(batch=2, seq=12)
    truth = measure_step(model, workload)
    flops = model_flops(model, workload).flops
    assert (flops.fwd_matmul, flops.bwd_matmul) == (truth.flops_forward, truth.flops_backward)


@pytest.mark.parametrize("workload", [Workload(batch=2, seq=16), Workload(batch=4, seq=32, precision="bf16-mixed"),
                                      Workload(batch=2, seq=16, checkpointing="full", optimizer="sgd"),
                                      Workload(batch=2, seq=24, mode="infer"),
                                      Workload(batch=2, seq=24, mode="infer", precision="fp32")],
                         ids=["fp32", "bf16-mixed", "ckpt-full", "infer-bf16", "infer-fp32"])
@pytest.mark.parametrize("size", [dict(n_layers=2, d_model=32, vocab_size=96, d_state=8),
                                  dict(n_layers=3, d_model=64, vocab_size=1000, d_state=4, tie_embeddings=False)],
                         ids=["tied", "untied"])
def test_memory_reading_matches_the_built_module(size, workload):
    """Training within 1% (the scan's backward is modelled at its per-position peak, see
    cost/act_mamba.py); inference, where nothing is saved, to the byte; the saved tensors of the
    scan's loop (S + 1 states of (B, Di, N), dA, ...) exactly at the start of backward."""
    model = get_preset("mamba-130m", **size)
    measured = measure_step(model, workload, count_flops=False)
    analytic = (training_memory if workload.mode == "train" else inference_memory)(model, workload)
    if workload.mode == "infer":
        assert analytic.peak_bytes == measured.peak_bytes
    else:
        assert abs(analytic.peak_bytes / measured.peak_bytes - 1) < 0.01


@pytest.mark.parametrize("seq", [8, 16])
@pytest.mark.parametrize("autocast", [None, "bf16"])
def test_a_block_saves_what_autograd_saves(seq, autocast):
    """One mamba_block's saved bytes, cost reading vs the storages autograd's pack hook sees: the
    loop over positions keeps S + 1 states (B, Di, N), so the count moves with S."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "cost"))
    from _saved import block_input, measured_saved

    from layerwise.cost.act_trace import ActPolicy
    from layerwise.cost.activations import activations

    block = get_preset("mamba-130m", n_layers=1, d_model=32, vocab_size=96, d_state=8).body.block
    shape = (2, seq, 32)
    truth = measured_saved(block.build(), block_input(shape), autocast=autocast)
    ours = activations(block, shape, ActPolicy(autocast=autocast))
    assert ours.saved == truth


def _tiny_module():
    torch.manual_seed(0)
    return get_preset("mamba-130m", n_layers=2, d_model=32, vocab_size=96, d_state=8).build().eval()


@pytest.mark.parametrize("prompt", [2, 9])  # shorter and longer than the conv kernel (4)
def test_decoding_through_the_states_equals_recomputing_the_sequence(prompt):
    """Greedy decoding with the conv and scan states (build/mamba.py) gives, step by step, the
    logits of running the whole sequence again; and `layerwise.generate`'s plain decoding, which
    steps the same states, the same tokens."""
    from layerwise.generate.decode import plain
    from layerwise.generate.sampling import Sampling

    module = _tiny_module()
    ids = torch.randint(0, 96, (2, prompt))
    with torch.no_grad():
        cache = module.init_kv_cache(2, prompt + 8, torch.float32)
        assert [tuple(t.shape) for t in cache[:2]] == [(2, 64, 4), (2, 64, 8)]  # (B, Di, K), (B, Di, N)
        out, seq = module(ids, kv_cache=cache, start_pos=0), ids
        for _ in range(8):
            torch.testing.assert_close(out[:, -1], module(seq)[:, -1], atol=1e-5, rtol=1e-5)
            seq = torch.cat([seq, out[:, -1:].argmax(-1)], dim=1)
            out = module(seq[:, -1:], kv_cache=cache, start_pos=seq.shape[1] - 1)
    generated = plain(module, ids[0].tolist(), 8, Sampling())
    assert list(generated.tokens) == seq[0, prompt:].tolist()


def test_states_cannot_step_back_or_take_several_tokens():
    from layerwise.generate.cache import CachedLM

    lm = CachedLM(_tiny_module(), 12, "target")
    lm.feed([1, 2, 3])
    with pytest.raises(LayerwiseError, match="one token at a time"):
        lm.feed([4, 5])
    with pytest.raises(LayerwiseError, match="cannot step back"):
        lm.rewind(2)


@pytest.mark.parametrize("workload", [Workload(mode="infer", batch=2, seq=12, new_tokens=7),
                                      Workload(mode="infer", batch=3, seq=2, new_tokens=5, precision="fp32")])
def test_inference_memory_and_decode_flops_read_the_states(workload):
    """--new-tokens: the states (B, Di, K + N) per layer in the KV cache's place, to the byte, and
    the decode steps' FLOPs (the conv as one output position) as FlopCounterMode counts them."""
    model = get_preset("mamba-130m", n_layers=2, d_model=32, vocab_size=96, d_state=8)
    measured = measure_step(model, workload)
    analytic = inference_memory(model, workload)
    dtype_bytes = 4 if workload.precision == "fp32" else 2
    assert analytic.components.kv_cache == measured.components["kv_cache"] == \
        workload.batch * 2 * 64 * (4 + 8) * dtype_bytes
    assert analytic.peak_bytes == measured.peak_bytes
    flops = model_flops(model, workload)
    assert flops.flops.fwd_matmul + flops.decode.fwd_matmul == measured.flops_forward


def test_the_scan_alone_is_refused_by_name():
    from layerwise.cost.activations import activations

    scan = dict(get_preset("mamba-130m", n_layers=1, d_model=32, vocab_size=96).body.block.mixer.children())["scan"]
    with pytest.raises(LayerwiseError, match="selective_scan runs inside a mamba_mixer"):
        activations(scan, (2, 8, 64))
