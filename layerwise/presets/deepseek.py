"""The DeepSeek-V2/V3 family: a decoder_lm whose layers use multi-head latent attention (`mla`)
and fine-grained + shared experts (`moe`), the first `n_dense` layers with a dense SwiGLU instead
(first_k_dense_replace: one Repeat whose first copies are another block). RMSNorm, untied head.
Pure Python. Also the HF importer of `model_type` deepseek_v2 / deepseek_v3 (transformers'
DeepseekV2ForCausalLM / DeepseekV3ForCausalLM):
  attention  q_lora_rank (null: one q_proj), kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim,
             v_head_dim, attention_bias (q_a_proj, kv_a_proj_with_mqa, o_proj); the latents'
             RMSNorms use eps 1e-6 whatever rms_norm_eps is (transformers builds them so); the
             softmax scale (qk_nope + qk_rope)^-0.5 times YaRN's mscale^2 when rope_scaling says
             yarn with mscale_all_dim (yarn_get_mscale). RoPE frequencies: rope_theta; YaRN's
             frequency ramp is not imported (no parameters, no matmul FLOPs; as the other importers)
  experts    n_routed_experts of moe_intermediate_size, num_experts_per_tok, n_shared_experts x
             moe_intermediate_size shared (ungated); v2: softmax scores, topk_method greedy or
             group_limited_greedy (n_group, topk_group), no renormalisation (transformers' V2
             router ignores norm_topk_prob); v3: sigmoid scores + e_score_correction_bias,
             group-limited always, norm_topk_prob; routed_scaling_factor
  dense      first_k_dense_replace layers with intermediate_size
Refused by name: num_key_value_heads != num_attention_heads (transformers repeats the decompressed
heads, which no released config does), mlp_bias true (v2: biased dense and shared MLPs but not the
experts), a hidden_act other than silu, moe_layer_freq != 1 (not read by transformers).
"""
from __future__ import annotations

import math

from layerwise.spec.base import block_class
from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import InputSpec, Model

REQUIRED = object()

DEEPSEEK = dict(
    vocab_size=REQUIRED, d_model=REQUIRED, n_layers=REQUIRED, n_heads=REQUIRED, max_seq=REQUIRED,
    d_ff=REQUIRED,  # the dense layers' SwiGLU width (HF intermediate_size)
    kv_rank=512, q_rank=0, d_nope=128, d_rope=64, d_v=128,  # MLA (layerwise.blocks.mla)
    attn_bias=False, scale=0.0, rope_base=10000.0, norm_eps=1e-6, attn_dropout=0.0,
    n_experts=REQUIRED, top_k=REQUIRED, d_expert=REQUIRED,  # routed experts (moe_intermediate_size)
    n_shared=0,  # shared experts, each d_expert wide: one shared FFN of n_shared * d_expert
    n_dense=0,  # the first layers are dense (first_k_dense_replace)
    scoring="softmax", norm_topk=False, routed_scale=1.0, n_groups=0, topk_groups=0,
    capacity_factor=0.0, aux_loss_coef=0.0,
    tie_embeddings=False,
)


def build_deepseek(name: str, source: str, k: dict) -> Model:
    d = k["d_model"]
    leaf = block_class
    rope = leaf("rope")(d_head=k["d_rope"], base=float(k["rope_base"]))
    attn = leaf("mla")(d_model=d, n_heads=k["n_heads"], kv_rank=k["kv_rank"], q_rank=k["q_rank"], d_nope=k["d_nope"],
                       d_rope=k["d_rope"], d_v=k["d_v"], qkv_bias=k["attn_bias"], o_bias=k["attn_bias"],
                       scale=float(k["scale"]), rope=rope, dropout=k["attn_dropout"])
    moe = leaf("moe")(d_model=d, d_ff=k["d_expert"], n_experts=k["n_experts"], top_k=k["top_k"], activation="silu",
                      gated=True, bias=False, shared_d_ff=k["n_shared"] * k["d_expert"], scoring=k["scoring"],
                      norm_topk=k["norm_topk"], routed_scale=float(k["routed_scale"]), n_groups=k["n_groups"],
                      topk_groups=k["topk_groups"], capacity_factor=k["capacity_factor"],
                      aux_loss_coef=k["aux_loss_coef"])

    def layer(ffn):
        return leaf("transformer_block")(attn=attn, ffn=ffn, norm="rmsnorm", norm_eps=k["norm_eps"])

    dense = None
    if k["n_dense"]:
        dense = layer(leaf("ffn")(d_model=d, d_ff=k["d_ff"], activation="silu", gated=True, bias=False))
    n_dense = min(k["n_dense"], k["n_layers"])
    if n_dense == k["n_layers"]:  # every layer dense (a override of n_layers below first_k_dense_replace)
        block, dense, n_dense = dense, None, 0
    else:
        block = layer(moe)
    body = leaf("decoder_lm")(vocab_size=k["vocab_size"], d_model=d, n_layers=k["n_layers"], block=block,
                              first_block=dense, n_first=n_dense, max_seq=k["max_seq"], positions="rope",
                              tie_embeddings=k["tie_embeddings"], final_norm="rmsnorm", norm_eps=k["norm_eps"])
    inp = InputSpec(kind="tokens", shape=(k["max_seq"],), vocab_size=k["vocab_size"], max_seq=k["max_seq"])
    return Model(name=name, body=body, input=inp, task="lm", source=source)


# ---- the HF importer ------------------------------------------------------------------------------
def _refuse(c, key: str, ok, why: str) -> None:
    if key in c.data and c.data[key] is not None and not ok(c.data[key]):
        raise LayerwiseError(f"{c.where}: {key!r} {c.data[key]!r} is not supported ({why})")


def yarn_mscale(c, base_scale: float) -> float:
    """transformers' yarn_apply_mscale: the softmax scale times mscale(factor, mscale_all_dim)^2,
    mscale(s, m) = 0.1 m ln(s) + 1 (s > 1), for a yarn rope_scaling / rope_parameters."""
    rope = c.data.get("rope_parameters") or c.data.get("rope_scaling")
    if rope is None:
        return base_scale
    if not isinstance(rope, dict):
        raise LayerwiseError(f"{c.where}: 'rope_scaling' must be a mapping, got {rope!r}")
    kind = rope.get("rope_type", rope.get("type", "default"))
    m = rope.get("mscale_all_dim", 0)
    if kind == "default" or not m:
        return base_scale
    factor = rope.get("factor")
    for key, value in (("factor", factor), ("mscale_all_dim", m)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise LayerwiseError(f"{c.where}: 'rope_scaling.{key}' must be a positive number, got {value!r}")
    mscale = 0.1 * m * math.log(factor) + 1.0 if factor > 1 else 1.0
    return base_scale * mscale * mscale


def hf_deepseek(c) -> tuple[str, dict]:
    """deepseek_v2 / deepseek_v3 config.json -> the deepseek family's keywords."""
    v3 = c.model_type == "deepseek_v3"
    heads = c.int("num_attention_heads")
    _refuse(c, "num_key_value_heads", lambda v: v == heads, "MLA decompresses one key/value per query head; "
            "transformers repeats them again when it differs from num_attention_heads")
    _refuse(c, "mlp_bias", lambda v: v is False, "biased dense and shared MLPs beside unbiased experts")
    _refuse(c, "hidden_act", lambda v: v in ("silu", "swish"), "the experts are SwiGLU")
    _refuse(c, "moe_layer_freq", lambda v: v == 1, "every layer after first_k_dense_replace is MoE")
    _refuse(c, "scoring_func", lambda v: v == ("sigmoid" if v3 else "softmax"),
            f"transformers' {c.model_type} router scores with {'sigmoid' if v3 else 'softmax'}")
    if v3:
        _refuse(c, "topk_method", lambda v: v == "noaux_tc", "transformers' DeepseekV3 router is noaux_tc")
    d_nope, d_rope = c.int("qk_nope_head_dim", 128), c.int("qk_rope_head_dim", 64)
    q_rank = c.data.get("q_lora_rank", 1536)
    n_experts = c.int("n_routed_experts", 256 if v3 else 64)
    k = dict(vocab_size=c.int("vocab_size"), d_model=c.int("hidden_size"), n_layers=c.int("num_hidden_layers"),
             n_heads=heads, max_seq=c.int("max_position_embeddings", 4096 if v3 else 2048),
             d_ff=c.int("intermediate_size"), kv_rank=c.int("kv_lora_rank", 512),
             q_rank=0 if q_rank is None else c.int("q_lora_rank"), d_nope=d_nope, d_rope=d_rope,
             d_v=c.int("v_head_dim", 128), attn_bias=c.bool("attention_bias", False),
             scale=yarn_mscale(c, (d_nope + d_rope) ** -0.5), rope_base=_theta(c),
             norm_eps=c.float("rms_norm_eps", 1e-6), n_experts=n_experts,
             top_k=c.int("num_experts_per_tok", 8 if v3 else 6), d_expert=c.int("moe_intermediate_size", 2048 if v3 else 1407),
             n_shared=c.index("n_shared_experts", 1 if v3 else 2), n_dense=c.index("first_k_dense_replace", 3 if v3 else 0),
             routed_scale=c.float("routed_scaling_factor", 2.5 if v3 else 1.0),
             tie_embeddings=c.bool("tie_word_embeddings", False))
    if v3:
        k.update(scoring="sigmoid", norm_topk=c.bool("norm_topk_prob", True), **_groups(c, n_experts, 8, 4))
    else:
        method = c.str("topk_method", "greedy")
        if method not in ("greedy", "group_limited_greedy"):
            raise LayerwiseError(f"{c.where}: 'topk_method' {method!r} is not supported by transformers' DeepseekV2 "
                                 f"router (greedy, group_limited_greedy)")
        if method == "group_limited_greedy":
            k.update(_groups(c, n_experts))
    return "deepseek", k


def _groups(c, n_experts: int, groups=None, best=None) -> dict:
    """n_group equal groups of the routed experts, the choice within the best topk_group."""
    g = c.int("n_group", *(() if groups is None else (groups,)))
    if n_experts % g:
        raise LayerwiseError(f"{c.where}: 'n_group' {g} does not divide n_routed_experts {n_experts}")
    top = c.int("topk_group", *(() if best is None else (best,)))
    if top > g:
        raise LayerwiseError(f"{c.where}: 'topk_group' {top} exceeds n_group {g}")
    return dict(n_groups=g, topk_groups=top)


def _theta(c) -> float:
    rope = c.data.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        value = rope["rope_theta"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise LayerwiseError(f"{c.where}: 'rope_parameters.rope_theta' must be a positive number, got {value!r}")
        return float(value)
    return c.float("rope_theta", 10000.0)
