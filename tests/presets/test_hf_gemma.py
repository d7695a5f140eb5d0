"""Gemma 1/2/3 as transformers computes them (issue 10): the sqrt(d_model) embedding scale, the tanh
soft-capping of scores and logits, query_pre_attn_scalar, sliding-window and global layers
(layer_types) with their own rope bases. Tiny configs: our built module's logits equal
GemmaForCausalLM / Gemma2ForCausalLM / Gemma3ForCausalLM's with the same weights (HF's eager
attention, which applies soft-capping); the cost reading against the measure reading (memory,
KV cache of the rolling window buffers, FLOPs against FlopCounterMode)."""
from __future__ import annotations

import pytest
import torch

from layerwise.build.runtime import set_attention_impl
from layerwise.cost.flops import model_flops
from layerwise.cost.memory import inference_memory, kv_groups, training_memory
from layerwise.measure.step import measure_step
from layerwise.presets import get_preset
from layerwise.presets.hf import from_hf_config
from layerwise.spec.errors import LayerwiseError
from layerwise.workload import Workload

transformers = pytest.importorskip("transformers", reason="transformers comes with the test extra")

_BASE = dict(vocab_size=96, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             intermediate_size=64, max_position_embeddings=64)
# caps small enough to bend the scores and logits of random weights; a window of 4 over 11 tokens
GEMMA = dict(_BASE, model_type="gemma", num_hidden_layers=2)
GEMMA2 = dict(_BASE, model_type="gemma2", num_hidden_layers=4, sliding_window=4, query_pre_attn_scalar=24,
              attn_logit_softcapping=2.0, final_logit_softcapping=1.5)
GEMMA3 = dict(_BASE, model_type="gemma3_text", num_hidden_layers=5, sliding_window=4, query_pre_attn_scalar=24,
              layer_types=["sliding_attention", "sliding_attention", "full_attention"] + ["sliding_attention"] * 2,
              rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                               "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}})
# HF name -> ours (Gemma 1's post_attention_layernorm is the norm before the MLP)
_NAMES = [("model.embed_tokens", "embed"), ("model.layers", "blocks"), ("model.norm", "final_norm"),
          ("self_attn", "attn"), ("mlp", "ffn"), ("input_layernorm", "attn_norm"),
          ("pre_feedforward_layernorm", "ffn_norm"), ("post_feedforward_layernorm", "ffn_post_norm")]


def _ours_and_theirs(config: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    ref = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), attn_implementation="eager").eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "norm" in name:  # HF initialises (1 + w) norms at w = 0: give them some shape
                p.normal_(0, 0.3)
    ours = from_hf_config(config).build().eval()
    post = "ffn_norm" if config["model_type"] == "gemma" else "attn_post_norm"
    state = {}
    for key, value in ref.state_dict().items():
        if key == "lm_head.weight":  # tied to the embeddings
            continue
        for theirs, mine in [*_NAMES, ("post_attention_layernorm", post)]:
            key = key.replace(theirs, mine)
        state[key] = value + 1 if "norm" in key else value  # HF's RMSNorm scales by (1 + w)
    ours.load_state_dict(state, strict=True)
    return ours, ref


@pytest.mark.parametrize("config", [GEMMA, GEMMA2, GEMMA3], ids=["gemma", "gemma2", "gemma3_text"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_logits_equal_transformers(config, impl):
    ours, ref = _ours_and_theirs(config)
    set_attention_impl(ours, impl)
    ids = torch.randint(0, 96, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), ref(ids).logits, atol=1e-5, rtol=1e-5)


def test_each_feature_changes_the_logits():
    """The comparison above can fail: dropping any one feature moves the logits off HF's."""
    from dataclasses import replace

    ids = torch.randint(0, 96, (1, 11))
    base = from_hf_config(GEMMA2)
    body = base.body
    variants = [replace(body, logit_softcap=0.0), replace(body, scale_embeddings=False),
                replace(body, local_block=None, global_every=0),
                replace(body, block=replace(body.block, attn=replace(body.block.attn, softcap=0.0)))]
    torch.manual_seed(1)
    ref = base.build().eval()
    with torch.no_grad():
        want = ref(ids)
        for variant in variants:
            other = replace(base, body=variant).build().eval()
            other.load_state_dict(ref.state_dict())
            assert not torch.allclose(other(ids), want, atol=1e-3)


def test_import_reads_the_layer_pattern_and_names_a_bad_one():
    g2 = from_hf_config(GEMMA2).body
    assert (g2.global_every, g2.local_block.attn.sliding_window, g2.block.attn.sliding_window) == (2, 4, 0)
    assert g2.block.attn.softcap == 2.0 and g2.logit_softcap == 1.5 and g2.scale_embeddings
    assert g2.block.attn.score_scale == 24 ** -0.5
    g3 = from_hf_config(GEMMA3).body
    assert g3.global_every == 3 and g3.block.attn.rope.base == 1e6 and g3.local_block.attn.rope.base == 100.0
    assert g3.block.attn.softcap == 0 and g3.logit_softcap == 0
    old_style = dict(GEMMA3, layer_types=None, sliding_window_pattern=2, rope_parameters=None, rope_theta=5e5,
                     rope_local_base_freq=1e3)
    g3 = from_hf_config(old_style).body
    assert (g3.global_every, g3.block.attn.rope.base, g3.local_block.attn.rope.base) == (2, 5e5, 1e3)
    default = from_hf_config(dict(GEMMA2, layer_types=None)).body  # Gemma2Config: every 2nd layer global
    assert default.global_every == 2
    all_local = from_hf_config(dict(GEMMA2, layer_types=["sliding_attention"] * 4)).body
    assert all_local.local_block is None and all_local.block.attn.sliding_window == 4
    with pytest.raises(LayerwiseError, match=r"'layer_types' puts full attention on layers \[0, 2, 3\]"):
        from_hf_config(dict(GEMMA2, layer_types=["full_attention", "sliding_attention", "full_attention",
                                                 "full_attention"]))
    with pytest.raises(LayerwiseError, match=r"'layer_types' must list"):
        from_hf_config(dict(GEMMA2, layer_types=["full_attention"]))


SMALL = dict(n_layers=4, vocab_size=512, d_model=64, d_ff=128, n_heads=4, d_head=16, n_kv_heads=2, sliding_window=8)


@pytest.mark.parametrize("name", ["gemma-2-2b", "gemma-3-1b"])
@pytest.mark.parametrize("workload", [Workload(batch=2, seq=32), Workload(batch=2, seq=32, attention="eager"),
                                      Workload(batch=2, seq=32, precision="bf16-mixed", attention="eager")],
                         ids=["fp32-sdpa", "fp32-eager", "bf16mixed-eager"])
def test_training_memory_and_flops_match_the_built_module(name, workload):
    model = get_preset(name, **SMALL, **({"global_every": 2} if name == "gemma-3-1b" else {}))
    measured = measure_step(model, workload)
    analytic = training_memory(model, workload)
    assert abs(analytic.peak_bytes / measured.peak_bytes - 1) < 1e-4
    assert abs(analytic.components.activations - measured.components["activations"]) <= 8
    flops = model_flops(model, workload).flops
    assert (flops.fwd_matmul, flops.bwd_matmul) == (measured.flops_forward, measured.flops_backward)


def test_soft_capping_costs_what_eager_saves():
    """tanh's output per layer ((B, H, S, S) scores) and per logit: the activations grow by exactly
    what the measure reading sees them grow by."""
    from dataclasses import replace

    model = get_preset("gemma-2-2b", **SMALL)
    body = model.body
    uncapped = replace(model, body=replace(body, logit_softcap=0.0,
                                           block=replace(body.block, attn=replace(body.block.attn, softcap=0.0)),
                                           local_block=replace(body.local_block,
                                                               attn=replace(body.local_block.attn, softcap=0.0))))
    w = Workload(batch=2, seq=32, attention="eager")
    grown = training_memory(model, w).components.activations - training_memory(uncapped, w).components.activations
    truth = measure_step(model, w).components["activations"] - measure_step(uncapped, w).components["activations"]
    tanh_bytes = 4 * (4 * 2 * 4 * 32 * 32 + 2 * 32 * 512)  # 4 layers' (B, H, S, S) + the (B, S, V) logits, fp32
    assert grown == truth == tanh_bytes


@pytest.mark.parametrize("name", ["gemma-2-2b", "gemma-3-1b"])
def test_inference_kv_cache_keeps_the_window_on_sliding_layers(name):
    model = get_preset(name, **SMALL, **({"global_every": 2} if name == "gemma-3-1b" else {}))
    w = Workload(batch=2, seq=32, mode="infer", new_tokens=8, precision="fp32")
    measured = measure_step(model, w)
    analytic = inference_memory(model, w)
    per_token = 2 * 2 * 16 * 4  # K and V, 2 kv heads x 16, fp32, per layer
    assert analytic.components.kv_cache == measured.components["kv_cache"] == 2 * per_token * (2 * 40 + 2 * 8)
    assert abs(analytic.peak_bytes / measured.peak_bytes - 1) < 0.01
    assert sorted((g.n_layers, g.sliding_window) for g in kv_groups(model, "fp32")) == [(2, 0), (2, 8)]


def test_rolling_cache_decodes_as_the_full_sequence_does():
    """Greedy decoding through the window-sized buffers gives the tokens (and logits) that running
    the whole sequence again gives, past the point where the buffers wrap around."""
    torch.manual_seed(0)
    module = get_preset("gemma-2-2b", **SMALL).build().eval()
    ids = torch.randint(0, 512, (2, 11))
    with torch.no_grad():
        cache = module.init_kv_cache(2, 11 + 12, torch.float32)
        assert [t.shape[2] for t in cache[::2]] == [8, 23, 8, 23]
        out = module(ids, kv_cache=cache, start_pos=0)
        seq = ids
        for i in range(12):
            nxt = out[:, -1:].argmax(-1)
            full = module(seq)
            torch.testing.assert_close(out[:, -1], full[:, -1], atol=1e-5, rtol=1e-5)
            seq = torch.cat([seq, nxt], dim=1)
            out = module(nxt, kv_cache=cache, start_pos=11 + i)
        with pytest.raises(ValueError, match="one token at a time"):
            module(seq[:, :2], kv_cache=cache, start_pos=seq.shape[1])


def test_rewindable_cache_keeps_every_position():
    module = get_preset("gemma-2-2b", **SMALL).build()
    cache = module.init_kv_cache(1, 20, torch.float32, rolling=False)
    assert {t.shape[2] for t in cache} == {20}


def test_decode_flops_match_flop_counter():
    """Prefill longer than the window, then decode steps over the rolling buffers (eager: the
    scores are soft-capped): the cost reading's keys per step are min(L, window) there."""
    model = get_preset("gemma-2-2b", **SMALL)
    workload = Workload(mode="infer", batch=2, seq=12, new_tokens=7)
    report, truth = model_flops(model, workload), measure_step(model, workload)
    assert report.flops.fwd_matmul + report.decode.fwd_matmul == truth.flops_forward
