"""DeepSeek-V2 / V3 (issue 10): multi-head latent attention and fine-grained + shared experts after
dense layers, against transformers' DeepseekV2ForCausalLM / DeepseekV3ForCausalLM: the parameter
counts at full size (the presets, the configs in refdata/hf-configs) and at tiny sizes, and, on the
tiny ones, the logits of our built module with transformers' weights copied in."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from layerwise.presets import get_preset
from layerwise.presets.hf import from_hf_config, load_hf_config
from layerwise.spec.errors import LayerwiseError

transformers = pytest.importorskip("transformers", reason="transformers comes with the test extra")

CONFIGS = Path(__file__).resolve().parents[2] / "refdata" / "hf-configs"
FULL = {"deepseek-v2-lite": "deepseek-v2-lite.json", "deepseek-v3": "deepseek-v3.json"}

_TINY = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=4, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6,
             moe_intermediate_size=12, max_position_embeddings=64, tie_word_embeddings=False)
TINY = {
    # V2-Lite's shape: one q_proj, softmax greedy top-k without renormalisation, one dense layer
    "v2-lite-like": dict(_TINY, model_type="deepseek_v2", q_lora_rank=None, n_routed_experts=6, num_experts_per_tok=2,
                         n_shared_experts=2, first_k_dense_replace=1, topk_method="greedy"),
    # V2's: a low-rank q, group-limited choice, a routed scale, biased projections
    "v2-groups": dict(_TINY, model_type="deepseek_v2", q_lora_rank=12, n_routed_experts=8, num_experts_per_tok=2,
                      n_shared_experts=1, first_k_dense_replace=2, topk_method="group_limited_greedy", n_group=4,
                      topk_group=2, routed_scaling_factor=16.0, attention_bias=True),
    # V3's: sigmoid scores with the correction bias, group-limited by top-2 sums, renormalised and scaled
    "v3": dict(_TINY, model_type="deepseek_v3", q_lora_rank=12, n_routed_experts=8, num_experts_per_tok=3,
               n_shared_experts=1, first_k_dense_replace=1, n_group=4, topk_group=2, routed_scaling_factor=2.5,
               norm_topk_prob=True),
}


def hf_model(config: dict, meta: bool = False):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config)
    cfg._attn_implementation = "eager"
    if meta:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(cfg)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval()


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(FULL))
def test_presets_and_their_configs_count_what_transformers_counts(name):
    config = json.loads((CONFIGS / FULL[name]).read_text())
    expected = count(hf_model(config, meta=True))
    assert get_preset(name).params().total == expected
    assert load_hf_config(CONFIGS / FULL[name]).params().total == expected


def test_published_totals():
    """DeepSeek-V2 paper (arXiv 2405.04434) sec. 3.1 / V2-Lite model card: 15.7B total; DeepSeek-V3
    technical report (arXiv 2412.19437) sec. 4.2: 671B total (the MTP module's 14B not included)."""
    assert round(get_preset("deepseek-v2-lite").params().total / 1e9, 1) == 15.7
    assert round(get_preset("deepseek-v3").params().total / 1e9) == 671


def test_softmax_scale_follows_yarn_mscale():
    """DeepseekV2/V3Attention.scaling: (qk_nope + qk_rope)^-0.5 times mscale(factor, mscale_all_dim)^2."""
    for name in FULL:
        config = json.loads((CONFIGS / FULL[name]).read_text())
        theirs = hf_model(dict(config, num_hidden_layers=1), meta=True).model.layers[0].self_attn.scaling
        assert get_preset(name).body.block.attn.softmax_scale == pytest.approx(theirs, rel=1e-12)


def _rope_rows(n_heads: int, d_head: int, d_nope: int, d_rope: int) -> torch.Tensor:
    """Row order that turns a checkpoint's interleaved rotary pairs (x0, x1), (x2, x3), ... into the
    rotate-half layout (x0, x2, ..., x1, x3, ...) for each head (the same function)."""
    perm = list(range(0, d_rope, 2)) + list(range(1, d_rope, 2))
    rows = []
    for h in range(n_heads):
        base = h * d_head
        rows += [base + j for j in range(d_nope)] + [base + d_nope + j for j in perm]
    return torch.tensor(rows)


def _theirs(name: str, p: torch.Tensor, hf: dict, c: dict) -> torch.Tensor:
    """Our parameter or buffer `name` from transformers' state dict."""
    i_ffn = c["moe_intermediate_size"]
    parts = name.split(".")
    if parts[0] in ("embed", "final_norm", "lm_head"):
        return hf[{"embed": "model.embed_tokens", "final_norm": "model.norm", "lm_head": "lm_head"}[parts[0]]
                  + "." + parts[-1]]
    layer, rest = parts[1], ".".join(parts[2:])
    pre = f"model.layers.{layer}."
    rest = rest.replace("attn_norm.", "input_layernorm.").replace("ffn_norm.", "post_attention_layernorm.")
    rest = rest.replace("attn.", "self_attn.", 1) if rest.startswith("attn.") else rest
    rest = rest.replace("ffn.", "mlp.", 1).replace("shared_expert.", "shared_experts.").replace("router.", "gate.")
    rest = rest.replace("mlp.e_score_correction_bias", "mlp.gate.e_score_correction_bias")
    if ".experts." in rest:
        e, proj, _ = rest.split(".experts.")[1].split(".")  # "3.gate_proj.weight"
        e = int(e)
        if proj == "down_proj":
            return hf[pre + "mlp.experts.down_proj"][e]
        gate_up = hf[pre + "mlp.experts.gate_up_proj"][e]
        return gate_up[:i_ffn] if proj == "gate_proj" else gate_up[i_ffn:]
    t = hf[pre + rest]
    d_nope, d_rope, heads = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["num_attention_heads"]
    if rest in ("self_attn.q_proj.weight", "self_attn.q_b_proj.weight"):
        t = t[_rope_rows(heads, d_nope + d_rope, d_nope, d_rope)]
    elif rest.startswith("self_attn.kv_a_proj_with_mqa."):
        t = t[_rope_rows(1, c["kv_lora_rank"] + d_rope, c["kv_lora_rank"], d_rope)]
    return t


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_configs_count_build_and_compute_like_transformers(name):
    config = TINY[name]
    reference = hf_model(config)
    with torch.no_grad():  # a correction bias that changes the choice (transformers starts it at 0)
        for layer in reference.model.layers:
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None and hasattr(gate, "e_score_correction_bias"):
                gate.e_score_correction_bias.copy_(torch.randn(gate.e_score_correction_bias.shape) * 0.3)
    model = from_hf_config(config, name=name)
    assert model.params().total == count(reference)
    module = model.build().eval()
    assert count(module) == count(reference)
    hf = dict(reference.state_dict())
    with torch.no_grad():
        for ours, t in [*module.named_parameters(), *module.named_buffers()]:
            t.copy_(_theirs(ours, t, hf, config).reshape(t.shape))
    ids = torch.randint(0, config["vocab_size"], (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        torch.testing.assert_close(module(ids), expected, rtol=1e-4, atol=1e-5)
        from layerwise.build.runtime import set_attention_impl

        set_attention_impl(module, "eager")
        torch.testing.assert_close(module(ids), expected, rtol=1e-4, atol=1e-5)


def test_import_errors_name_the_field():
    base = TINY["v3"]
    cases = {
        "num_key_value_heads": dict(base, num_key_value_heads=2),
        "mlp_bias": dict(TINY["v2-lite-like"], mlp_bias=True),
        "hidden_act": dict(base, hidden_act="gelu"),
        "topk_method": dict(TINY["v2-lite-like"], topk_method="noaux_tc"),
        "scoring_func": dict(base, scoring_func="softmax"),
        "kv_lora_rank": dict(base, kv_lora_rank=0),
        "n_group": dict(base, n_group=3),
        "rope_scaling.factor": dict(base, rope_scaling=dict(type="yarn", factor="x", mscale_all_dim=1.0)),
    }
    for field, config in cases.items():
        with pytest.raises(LayerwiseError, match=field.replace(".", r"\.") if "." in field else field):
            from_hf_config(config)


# ---- the cost reading against the built module (tiny-deepseek: DeepSeek-V3's wiring) ------------
from layerwise.cost.flops import model_flops  # noqa: E402
from layerwise.cost.memory import inference_memory, training_memory  # noqa: E402
from layerwise.measure.step import measure_step  # noqa: E402
from layerwise.workload import Workload  # noqa: E402

TRAIN = [Workload(batch=2, seq=32), Workload(batch=2, seq=32, precision="bf16-mixed", attention="eager"),
         Workload(batch=2, seq=32, checkpointing="full"), Workload(batch=2, seq=32, checkpointing="selective")]


@pytest.mark.parametrize("workload", TRAIN, ids=["fp32-sdpa", "bf16mixed-eager", "ckpt-full", "ckpt-selective"])
def test_training_memory_and_flops_match_the_built_module(workload):
    model = get_preset("tiny-deepseek")
    measured = measure_step(model, workload)
    assert abs(training_memory(model, workload).peak_bytes / measured.peak_bytes - 1) < 0.01
    flops = model_flops(model, workload).flops
    assert flops.fwd_matmul == measured.flops_forward
    assert flops.fwd_matmul + flops.bwd_matmul == measured.flops_forward + measured.flops_backward


@pytest.mark.parametrize("over", [{}, dict(d_v=24, q_rank=0)], ids=["math-sdpa", "fused-sdpa"])
def test_inference_memory_kv_cache_and_decode_flops_match_the_built_module(over):
    """The compressed cache (kv_rank + d_rope values per token and layer, in the compute dtype) is what
    the built module allocates, to the byte; prefill peak and decode FLOPs as measured."""
    model = get_preset("tiny-deepseek", **over)
    workload = Workload(mode="infer", batch=2, seq=24, new_tokens=4)
    measured = measure_step(model, workload)
    analytic = inference_memory(model, workload)
    attn = model.body.block.attn
    assert analytic.components.kv_cache == measured.components["kv_cache"] == \
        2 * (24 + 4) * 3 * (attn.kv_rank + attn.d_rope) * 2  # batch, tokens, layers, values, bf16
    assert abs(analytic.peak_bytes / measured.peak_bytes - 1) < 0.02  # the prefill's transient peak
    report = model_flops(model, workload)
    assert report.flops.fwd_matmul + report.decode.fwd_matmul == measured.flops_forward


def test_incremental_decode_through_the_latent_cache_equals_full_forward():
    torch.manual_seed(0)
    module = get_preset("tiny-deepseek").build().eval()
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        full = module(ids)
        cache = module.init_kv_cache(2, 12, torch.float32)
        assert [tuple(t.shape) for t in cache[:2]] == [(2, 1, 12, 32), (2, 1, 12, 8)]  # latents, rotary keys
        steps = [module(ids[:, :7], kv_cache=cache, start_pos=0)]
        steps += [module(ids[:, t:t + 1], kv_cache=cache, start_pos=t) for t in range(7, 12)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)


def test_mla_caches_less_than_the_gqa_of_the_same_width():
    """DeepSeek-V2 paper Table 1: MLA caches (d_c + d_h^R) l elements per token, against GQA's
    2 n_g d_h l. DeepSeek-V2-Lite: (512 + 64) x 27 layers x 2 bytes = 31,104 B per token in bf16."""
    from layerwise.cost.kv_cache import kv_bytes_per_token, kv_configs

    (cfg,) = kv_configs(get_preset("deepseek-v2-lite").body, "bf16")
    assert kv_bytes_per_token(cfg) == (512 + 64) * 27 * 2
    (v3,) = kv_configs(get_preset("deepseek-v3").body, "bf16")
    assert kv_bytes_per_token(v3) == (512 + 64) * 61 * 2  # 70,272 B: a 128-head MHA would be 2 x 128 x 128 x 61 x 2


def test_time_infer_reads_the_latent_cache_every_decode_step():
    """`time --mode infer`: the last decode step reads the weights and the compressed cache of
    prompt + new tokens (+ the token being decoded), (512 + 64) x 27 layers x 2 bytes per token."""
    from layerwise.cost.hardware import get_gpu
    from layerwise.cost.infer_time import inference_time

    model = get_preset("deepseek-v2-lite")
    workload = Workload(mode="infer", batch=2, seq=1024, new_tokens=8)
    t = inference_time(model, workload, get_gpu("h100-sxm"))
    weights = inference_memory(model, workload).components.weights
    assert t.last_step.bytes_moved == weights + 2 * (1024 + 8 + 1) * (512 + 64) * 27 * 2


def test_training_time_counts_both_kinds_of_layers_and_the_planner_refuses_them():
    """`time`: the FLOPs of a stack of two kinds extrapolated from small copies equal the whole
    stack's; its layers are timed as their mean (dense and MoE each as often as they occur). The
    planner's per-layer memory takes identical layers: refused in one line."""
    from layerwise.cost.block_time import block_time
    from layerwise.cost.hardware import get_gpu
    from layerwise.cost.step_time import Layout, _sample_flops, model_parts, time_ctx
    from layerwise.plan.memory import memory_parts
    from layerwise.plan.search import plan
    from layerwise.spec.errors import WorkloadError

    model = get_preset("tiny-deepseek", n_layers=7, n_dense=2)
    whole = model_flops(model, Workload(batch=1, seq=64, attention="eager", device="cuda")).total
    assert _sample_flops(model, 64, "none")[0] == whole
    ctx = time_ctx(get_gpu("h100-sxm"), "bf16-mixed", Layout())
    parts = model_parts(model, 1, 64, ctx)
    body = model.body
    dense, moe = (block_time(b, (1, 64, body.d_model), ctx) for b in (body.first_block, body.block))
    assert parts.layer.fwd * 7 == pytest.approx(2 * dense.fwd + 5 * moe.fwd, rel=1e-12)
    with pytest.raises(WorkloadError, match="identical layers"):
        memory_parts(model, Workload())
    with pytest.raises(WorkloadError, match="identical layers"):
        plan(get_preset("deepseek-v3"), get_gpu("h100-sxm"), n_gpus=64)
