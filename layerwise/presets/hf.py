"""Hugging Face `config.json` -> Model, without transformers.

Each supported `model_type` maps the config's keys to a family's keywords (presets/families.py),
adding what the transformers implementation implies but the config does not say:
  gpt2      tied head (GPT2LMHeadModel), biases everywhere, n_inner null = 4 * n_embd
  llama     attention_bias / mlp_bias flags (default false), untied unless tie_word_embeddings
  qwen2     bias on q, k, v only (Qwen2Attention), o_proj and MLP without
  mistral, mixtral, phi3   no biases; mixtral: num_local_experts, num_experts_per_tok, router without bias
  gpt_neox  biases (attention_bias default true), rotary_pct of the head, use_parallel_residual with
            two norms, untied embed_out without bias
  opt       learned positions with 2 extra rows (OPTLearnedPositionalEmbedding offset), biases, ReLU,
            tied head; word_embed_proj_dim != hidden_size (project_in/out) is not supported
  phi       parallel attention + MLP behind one LayerNorm, partial_rotary_factor, biases, lm_head bias
  bert, roberta   BertModel/RobertaModel with pooler; RoBERTa's max_position_embeddings already
            holds padding_idx + 1 extra rows, so its usable length is max_position_embeddings - 2
  vit       ViTForImageClassification (head, no pooler) if the architectures say so, else ViTModel
            (pooler, no head)
  qwen3     llama-like with RMSNorm on each head's q and k (q_norm, k_norm), explicit head_dim
  gemma     llama-like, GeGLU, head_dim 256, tied head, embeddings times sqrt(hidden_size)
            ((1 + w) RMSNorm: the same parameters, stored as w here, 1 + w there)
  gemma2, gemma3_text   + sandwich norms (4 per layer), query_pre_attn_scalar, soft-capping of the
            scores and logits, sliding/global layers (layer_types); gemma3: + q/k norm and a local
            rope base (see _gemma2)
  qwen2_moe all-MoE layers of small experts + a sigmoid-gated shared expert; qwen3_moe: + q/k norm,
            no shared expert; mixed dense/MoE layers (mlp_only_layers) refused
  clip_vision_model   ViT with no patch bias, pre_layrnorm, quick_gelu, post_layernorm on CLS only
  falcon    parallel attention + MLP behind one LayerNorm (7B) or two (new_decoder_architecture),
            multi-query or grouped keys/values, `bias` on every linear, tied head; ALiBi refused
  deepseek_v2, deepseek_v3   multi-head latent attention, fine-grained + shared experts after
            first_k_dense_replace dense layers (layerwise/presets/deepseek.py)
rope_scaling does not change parameters or matmul FLOPs and is not imported.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path

from layerwise.presets.families import make
from layerwise.spec.errors import LayerwiseError
from layerwise.spec.fieldtypes import conforms, describe, shown
from layerwise.spec.model import Model

_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
                "gelu_tanh": "gelu_tanh", "silu": "silu", "swish": "silu", "relu": "relu", "tanh": "tanh"}
_MISSING = object()


class _Config:
    """Typed reads of one config dict; errors name the file and the key."""

    def __init__(self, data: dict, where: str):
        self.data, self.where = data, where
        self.model_type = data.get("model_type")

    def get(self, key: str, default=_MISSING):
        value = self.data.get(key, default)
        if value is None and default is not _MISSING:  # e.g. "n_inner": null means "the default"
            value = default
        if value is _MISSING or value is None:
            raise LayerwiseError(f"{self.where}: model_type {self.model_type!r} needs {key!r}, which is missing")
        return value

    def _typed(self, key: str, default, hint, minimum=None):
        """The value of `key`, checked against `hint` as spec fields are (spec/fieldtypes.py)."""
        value = self.get(key, default)
        if not conforms(value, hint) or (minimum is not None and value < minimum):
            what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, describe(hint))
            raise LayerwiseError(f"{self.where}: {key!r} must be {what}, got {shown(value)}")
        return value

    def int(self, key: str, default=_MISSING) -> int:
        return self._typed(key, default, int, minimum=1)

    def index(self, key: str, default=_MISSING) -> int:
        return self._typed(key, default, int, minimum=0)

    def float(self, key: str, default=_MISSING) -> float:
        return float(self._typed(key, default, float))

    def bool(self, key: str, default=_MISSING) -> bool:
        return self._typed(key, default, bool)

    def str(self, key: str, default=_MISSING) -> str:
        return self._typed(key, default, str)

    def strings(self, key: str, default=_MISSING) -> tuple:
        return tuple(self._typed(key, default, tuple[str, ...]))

    def activation(self, key: str, default=_MISSING) -> str:
        value = self.str(key, default)
        if value not in _ACTIVATIONS:
            raise LayerwiseError(f"{self.where}: {key!r} {value!r} is not supported (supported: {', '.join(sorted(_ACTIVATIONS))})")
        return _ACTIVATIONS[value]


def _head_dim(c: _Config, d_model: int, n_heads: int) -> int:
    d_head = c.data.get("head_dim")
    if d_head is None:
        if d_model % n_heads:
            raise LayerwiseError(f"{c.where}: hidden_size {d_model} is not divisible by num_attention_heads {n_heads}")
        return 0
    return c.int("head_dim")


def _kv_heads(c: _Config, heads: int) -> int:
    """0 (= n_heads, plain MHA) unless the config groups the keys and values (GQA/MQA)."""
    kv = c.int("num_key_value_heads", heads)
    return 0 if kv == heads else kv


def _llama_like(c: _Config) -> dict:
    """Llama, Mistral, Mixtral, Qwen2, Phi-3: RMSNorm, SwiGLU, RoPE, GQA."""
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    k = dict(vocab_size=c.int("vocab_size"), d_model=d, n_layers=c.int("num_hidden_layers"), n_heads=heads,
             n_kv_heads=_kv_heads(c, heads), d_head=_head_dim(c, d, heads),
             d_ff=c.int("intermediate_size"), max_seq=c.int("max_position_embeddings"), norm="rmsnorm",
             norm_eps=c.float("rms_norm_eps", 1e-6), activation=c.activation("hidden_act", "silu"), gated=True,
             ffn_bias=False, qkv_bias=False, o_bias=False, positions="rope", rope_base=c.float("rope_theta", 10000.0),
             tie_embeddings=c.bool("tie_word_embeddings", False))
    window = c.data.get("sliding_window")
    if c.model_type in ("mistral", "mixtral") and window:
        k["sliding_window"] = c.int("sliding_window")
    return k


def _llama(c):
    k = _llama_like(c)
    attn_bias = c.bool("attention_bias", False)
    return "decoder", dict(k, qkv_bias=attn_bias, o_bias=attn_bias, ffn_bias=c.bool("mlp_bias", False))


def _mixtral(c):
    return "decoder", dict(_llama_like(c), n_experts=c.int("num_local_experts"), top_k=c.int("num_experts_per_tok"))


def _qwen2(c):
    return "decoder", dict(_llama_like(c), qkv_bias=True)


def _phi3(c):
    k = _llama_like(c)
    return "decoder", dict(k, rotary_pct=c.float("partial_rotary_factor", 1.0))


def _qwen3(c):
    """Qwen3Attention: RMSNorm over each head's q and k (q_norm, k_norm) before RoPE; an explicit
    head_dim (Qwen3-0.6B: 16 heads x 128 > hidden 1024); attention_bias default false."""
    bias = c.bool("attention_bias", False)
    return "decoder", dict(_llama_like(c), qk_norm="rmsnorm", qkv_bias=bias, o_bias=bias)


def _moe_keys(c) -> dict:
    """Qwen2-MoE / Qwen3-MoE experts: every layer sparse (mixed dense layers are refused by name)."""
    if c.data.get("mlp_only_layers") or c.int("decoder_sparse_step", 1) != 1:
        raise LayerwiseError(f"{c.where}: 'mlp_only_layers' / 'decoder_sparse_step' mix dense and MoE layers, "
                             f"which a repeated block cannot hold; only all-MoE configs are supported")
    return dict(d_ff=c.int("moe_intermediate_size"), n_experts=c.int("num_experts"), top_k=c.int("num_experts_per_tok"))


def _qwen2_moe(c):
    """Qwen2MoeForCausalLM: Qwen2 attention (qkv_bias), num_experts small SwiGLU experts of
    moe_intermediate_size, plus a shared expert of shared_expert_intermediate_size scaled by
    sigmoid(shared_expert_gate(x)), a Linear(hidden, 1)."""
    k = dict(_llama_like(c), qkv_bias=c.bool("qkv_bias", True), **_moe_keys(c))
    return "decoder", dict(k, shared_d_ff=c.int("shared_expert_intermediate_size"), shared_gate=True)


def _qwen3_moe(c):
    """Qwen3MoeForCausalLM: Qwen3 attention (q/k norm), experts only (no shared expert)."""
    _, k = _qwen3(c)
    return "decoder", dict(k, **_moe_keys(c))


def _gemma(c):
    """GemmaForCausalLM: GeGLU (gelu_pytorch_tanh gate), head_dim 256, tied head, the embeddings
    times sqrt(hidden_size) (GemmaModel's normalizer); RMSNorm as (1 + w): the same parameters."""
    k = _llama_like(c)
    act = c.data.get("hidden_activation") or c.data.get("hidden_act") or "gelu_pytorch_tanh"
    if act == "gelu":  # GemmaConfig: the released configs' "gelu" means the tanh approximation
        act = "gelu_pytorch_tanh"
    if not isinstance(act, str) or act not in _ACTIVATIONS:
        raise LayerwiseError(f"{c.where}: 'hidden_activation' {act!r} is not supported "
                             f"(supported: {', '.join(sorted(_ACTIVATIONS))})")
    bias = c.bool("attention_bias", False)
    return "decoder", dict(k, activation=_ACTIVATIONS[act], tie_embeddings=c.bool("tie_word_embeddings", True),
                           qkv_bias=bias, o_bias=bias, scale_embeddings=True, rope_base=_rope_theta(c))


# Gemma2Config / Gemma3TextConfig defaults (transformers 5.23) for keys a config may leave out
_GEMMA_DEFAULTS = {"gemma2": dict(attn_logit_softcapping=50.0, final_logit_softcapping=30.0, pattern=2),
                   "gemma3_text": dict(attn_logit_softcapping=None, final_logit_softcapping=None, pattern=6)}


def _gemma2(c):
    """Gemma2/Gemma3 text: Gemma's wiring plus a norm on each branch's output (post_attention_ and
    post_feedforward_layernorm: 4 RMSNorms a layer); gemma3_text adds q_norm/k_norm. Scores scaled
    by query_pre_attn_scalar ** -0.5; tanh soft-capping of the scores (attn_logit_softcapping) and
    the logits (final_logit_softcapping), null: none; layer_types (default: gemma2 every 2nd,
    gemma3 every sliding_window_pattern-th layer "full_attention", the others "sliding_attention"
    over sliding_window keys). gemma3: global layers rotate with rope_theta, local ones with
    rope_local_base_freq (or rope_parameters' full_attention / sliding_attention rope_theta)."""
    family, k = _gemma(c)
    defaults = _GEMMA_DEFAULTS[c.model_type]
    if c.data.get("use_bidirectional_attention"):
        raise LayerwiseError(f"{c.where}: 'use_bidirectional_attention' true (an embedding model) is not "
                             f"supported; causal Gemma configs are")
    k = dict(k, sandwich=True, query_scale=c.int("query_pre_attn_scalar", 256),
             attn_softcap=_optional_float(c, "attn_logit_softcapping", defaults["attn_logit_softcapping"]),
             logit_softcap=_optional_float(c, "final_logit_softcapping", defaults["final_logit_softcapping"]))
    k.update(_layer_types(c, defaults["pattern"]))
    if c.model_type == "gemma3_text":
        k["qk_norm"] = "rmsnorm"
        k.update(_gemma3_rope(c))
        if not k.get("global_every") and k["sliding_window"]:  # every layer local
            k["rope_base"] = k["local_rope_base"]
    return family, k


def _optional_float(c: _Config, key: str, default) -> float:
    """A positive number, or null (or left out with a null default): 0.0, off."""
    value = c.data.get(key, default)
    return 0.0 if value is None else c.float(key, default)


def _layer_types(c: _Config, pattern: int) -> dict:
    """{sliding_window, global_every} from layer_types: every layer global -> no window; every layer
    sliding -> the window on all; else "full_attention" exactly on every k-th layer."""
    n = c.int("num_hidden_layers")
    types = c.data.get("layer_types")
    if types is None:
        pattern = c.int("sliding_window_pattern", pattern)
        types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)]
    if (not isinstance(types, list) or len(types) != n
            or any(t not in ("full_attention", "sliding_attention") for t in types)):
        raise LayerwiseError(f"{c.where}: 'layer_types' must list 'full_attention' or 'sliding_attention' for each "
                             f"of the {n} layers, got {shown(types)}")
        
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    if len(full) == n:
        return {"sliding_window": 0}
    window = c.int("sliding_window", 4096)
    if not full:
        return {"sliding_window": window}
    every = full[0] + 1
    if full != list(range(every - 1, n, every)):
        raise LayerwiseError(f"{c.where}: 'layer_types' puts full attention on layers {full}; only every k-th "
                             f"layer global (the others sliding) is supported")
    if every > n:
        return {"sliding_window": window}
    return {"sliding_window": window, "global_every": every}


def _gemma3_rope(c: _Config) -> dict:
    """rope bases of the global and the local layers: rope_parameters' full_attention /
    sliding_attention entries (transformers 5), else rope_theta and rope_local_base_freq."""
    params = c.data.get("rope_parameters")
    if isinstance(params, dict) and ("full_attention" in params or "sliding_attention" in params):
        bases = {}
        for kind, default in (("full_attention", 1e6), ("sliding_attention", 1e4)):
            entry = params.get(kind) or {}
            theta = entry.get("rope_theta", default) if isinstance(entry, dict) else None
            if not conforms(theta, float) or theta <= 0:
                raise LayerwiseError(f"{c.where}: 'rope_parameters.{kind}.rope_theta' must be a positive number, "
                                     f"got {shown(theta)}")
            bases[kind] = float(theta)
        return {"rope_base": bases["full_attention"], "local_rope_base": bases["sliding_attention"]}
    return {"rope_base": c.float("rope_theta", 1e6), "local_rope_base": c.float("rope_local_base_freq", 1e4)}


def _clip_vision(c):
    """CLIPVisionModel (model_type clip_vision_model, or a CLIP config's vision_config): a ViT whose
    patch conv has no bias, with a LayerNorm before the blocks (pre_layrnorm), quick_gelu MLPs, and
    the final LayerNorm (post_layernorm) on the CLS token only; no head, no pooler dense. A whole
    CLIP config (model_type clip) is refused: its text tower and projections are another model."""
    if c.model_type == "clip":
        raise LayerwiseError(f"{c.where}: model_type 'clip' holds a text and a vision tower; pass its "
                             f"vision_config (model_type clip_vision_model) to size the image encoder")
    return "vit", dict(image_size=c.int("image_size", 224), patch=c.int("patch_size", 32), c_in=c.int("num_channels", 3),
                       d_model=c.int("hidden_size"), n_layers=c.int("num_hidden_layers"),
                       n_heads=c.int("num_attention_heads"), d_ff=c.int("intermediate_size"),
                       activation=c.activation("hidden_act", "quick_gelu"), norm_eps=c.float("layer_norm_eps", 1e-5),
                       n_classes=0, clip=True)


def _falcon(c):
    """FalconForCausalLM. Keys and values: new_decoder_architecture -> num_kv_heads groups; else
    multi_query (default true) -> one; else one per head. parallel_attn (default true): attention
    and MLP read the same input, behind one LayerNorm (input_layernorm) or two (ln_attn, ln_mlp:
    num_ln_in_parallel_attn, 2 by default in the new architecture). `bias` covers every linear;
    the MLP is ffn_hidden_size (default 4 x hidden) with exact GELU; the head is tied."""
    if c.data.get("alibi"):
        raise LayerwiseError(f"{c.where}: 'alibi' true (ALiBi positions, falcon-rw) is not supported; "
                             f"rotary Falcon configs are")
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    new = c.bool("new_decoder_architecture", False)
    if new:
        kv = c.int("num_kv_heads", heads)
    else:
        kv = 1 if c.bool("multi_query", True) else heads
    parallel = c.bool("parallel_attn", True)
    n_norms = 2 if new else 1  # FalconConfig's default is null
    if c.data.get("num_ln_in_parallel_attn") is not None:
        n_norms = c.int("num_ln_in_parallel_attn")
    bias = c.bool("bias", False)
    return "decoder", dict(vocab_size=c.int("vocab_size"), d_model=d, n_layers=c.int("num_hidden_layers"),
                           n_heads=heads, n_kv_heads=0 if kv == heads else kv, d_ff=c.int("ffn_hidden_size", 4 * d),
                           max_seq=c.int("max_position_embeddings", 2048), norm="layernorm",
                           norm_eps=c.float("layer_norm_epsilon", 1e-5), activation=c.activation("activation", "gelu"),
                           qkv_bias=bias, o_bias=bias, ffn_bias=bias, positions="rope", rope_base=_rope_theta(c),
                           parallel=parallel, shared_norm=n_norms == 1,
                           tie_embeddings=c.bool("tie_word_embeddings", True))


def _rope_theta(c) -> float:
    """rope_theta, or (transformers >= 5 configs) rope_parameters.rope_theta; 10000 by default."""
    params = c.data.get("rope_parameters")
    if isinstance(params, dict) and "rope_theta" in params:
        if not conforms(params["rope_theta"], float):
            raise LayerwiseError(f"{c.where}: 'rope_parameters.rope_theta' must be a finite number, "
                                 f"got {shown(params['rope_theta'])}")
        return float(params["rope_theta"])
    return c.float("rope_theta", 10000.0)


def _gpt2(c):
    d = c.int("n_embd")
    return "decoder", dict(vocab_size=c.int("vocab_size"), d_model=d, n_layers=c.int("n_layer"), n_heads=c.int("n_head"),
                           d_ff=c.int("n_inner", 4 * d), max_seq=c.int("n_positions"), norm="layernorm",
                           norm_eps=c.float("layer_norm_epsilon", 1e-5), activation=c.activation("activation_function", "gelu_new"),
                           tie_embeddings=c.bool("tie_word_embeddings", True))


def _gpt_neox(c):
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    bias = c.bool("attention_bias", True)
    return "decoder", dict(vocab_size=c.int("vocab_size"), d_model=d, n_layers=c.int("num_hidden_layers"), n_heads=heads,
                           d_ff=c.int("intermediate_size"), max_seq=c.int("max_position_embeddings"), norm="layernorm",
                           norm_eps=c.float("layer_norm_eps", 1e-5), activation=c.activation("hidden_act", "gelu"),
                           qkv_bias=bias, o_bias=bias, positions="rope", rope_base=c.float("rotary_emb_base", 10000.0),
                           rotary_pct=c.float("rotary_pct", 0.25),
                           parallel=c.bool("use_parallel_residual", True), shared_norm=False,
                           tie_embeddings=c.bool("tie_word_embeddings", False))


def _opt(c):
    d = c.int("hidden_size")
    if c.int("word_embed_proj_dim", d) != d:
        raise LayerwiseError(f"{c.where}: OPT with word_embed_proj_dim {c.data['word_embed_proj_dim']} != hidden_size {d} "
                             f"(project_in/project_out) is not supported")
    if not c.bool("layer_norm_elementwise_affine", True):
        raise LayerwiseError(f"{c.where}: OPT with layer_norm_elementwise_affine false is not supported")
    pre = c.bool("do_layer_norm_before", True)
    max_seq = c.int("max_position_embeddings")
    return "decoder", dict(vocab_size=c.int("vocab_size"), d_model=d, n_layers=c.int("num_hidden_layers"),
                           n_heads=c.int("num_attention_heads"), d_ff=c.int("ffn_dim"), max_seq=max_seq,
                           pos_rows=max_seq + 2,  # OPTLearnedPositionalEmbedding: offset 2
                           norm="layernorm", activation=c.activation("activation_function", "relu"),
                           ffn_bias=c.bool("enable_bias", True), qkv_bias=c.bool("enable_bias", True),
                           o_bias=c.bool("enable_bias", True), norm_position="pre" if pre else "post",
                           final_norm=pre and not c.bool("_remove_final_layer_norm", False),
                           tie_embeddings=c.bool("tie_word_embeddings", True))


def _phi(c):
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    return "decoder", dict(vocab_size=c.int("vocab_size"), d_model=d, n_layers=c.int("num_hidden_layers"), n_heads=heads,
                           n_kv_heads=_kv_heads(c, heads), d_ff=c.int("intermediate_size"),
                           max_seq=c.int("max_position_embeddings"), norm="layernorm",
                           norm_eps=c.float("layer_norm_eps", 1e-5), activation=c.activation("hidden_act", "gelu_new"),
                           positions="rope", rope_base=c.float("rope_theta", 10000.0),
                           rotary_pct=c.float("partial_rotary_factor", 0.5),
                           qk_norm="layernorm" if c.bool("qk_layernorm", False) else "none",
                           parallel=True, tie_embeddings=c.bool("tie_word_embeddings", False), head_bias=True)


def _bert(c):
    kind = c.str("position_embedding_type", "absolute")
    if kind != "absolute":
        raise LayerwiseError(f"{c.where}: position_embedding_type {kind!r} is not supported (only 'absolute')")
    k = dict(vocab_size=c.int("vocab_size"), d_model=c.int("hidden_size"), n_layers=c.int("num_hidden_layers"),
             n_heads=c.int("num_attention_heads"), d_ff=c.int("intermediate_size"), max_seq=c.int("max_position_embeddings"),
             activation=c.activation("hidden_act", "gelu"), norm_eps=c.float("layer_norm_eps", 1e-12),
             type_vocab_size=c.int("type_vocab_size", 2))
    if c.model_type == "roberta":
        pad = c.index("pad_token_id", 1)
        k.update(padding_idx=pad, pos_offset=pad + 1)  # RobertaEmbeddings: positions start at padding_idx + 1
    return "encoder", k


def _vit(c):
    archs = c.strings("architectures", ())
    classify = any("ForImageClassification" in a for a in archs)
    labels = c.data.get("id2label")
    if labels is not None and not isinstance(labels, dict):
        raise LayerwiseError(f"{c.where}: 'id2label' must be a mapping of class ids to names, got {shown(labels)}")
    n_classes = (len(labels) if labels else c.int("num_labels", 2)) if classify else 0
    return "vit", dict(image_size=c.int("image_size", 224), patch=c.int("patch_size", 16), c_in=c.int("num_channels", 3),
                       d_model=c.int("hidden_size"), n_layers=c.int("num_hidden_layers"),
                       n_heads=c.int("num_attention_heads"), d_ff=c.int("intermediate_size"),
                       activation=c.activation("hidden_act", "gelu"), norm_eps=c.float("layer_norm_eps", 1e-12),
                       qkv_bias=c.bool("qkv_bias", True), n_classes=n_classes, pooler=not classify)


IMPORTERS = {"llama": _llama, "mistral": _llama, "mixtral": _mixtral, "qwen2": _qwen2, "phi3": _phi3, "gpt2": _gpt2,
             "gpt_neox": _gpt_neox, "opt": _opt, "phi": _phi, "bert": _bert, "roberta": _bert, "vit": _vit,
             "qwen3": _qwen3, "gemma": _gemma, "gemma2": _gemma2, "gemma3_text": _gemma2, "falcon": _falcon,
             "qwen2_moe": _qwen2_moe, "qwen3_moe": _qwen3_moe, "clip_vision_model": _clip_vision, "clip": _clip_vision}


def _add_seq2seq() -> None:
    from layerwise.presets.hf_seq2seq import IMPORTERS as SEQ2SEQ

    IMPORTERS.update(SEQ2SEQ)
    from layerwise.presets.deepseek import hf_deepseek

    IMPORTERS.update(deepseek_v2=hf_deepseek, deepseek_v3=hf_deepseek)


_add_seq2seq()


def hf_keywords(data, where: str = "config.json") -> tuple[str, dict]:
    """(family, keywords) for an HF config dict."""
    if not isinstance(data, dict):
        raise LayerwiseError(f"{where}: expected a JSON object (a Hugging Face config), got {type(data).__name__}")
    model_type = data.get("model_type")
    if model_type is None:
        raise LayerwiseError(f"{where}: no 'model_type' key; not a Hugging Face config.json")
    if not isinstance(model_type, str) or model_type not in IMPORTERS:
        close = difflib.get_close_matches(str(model_type), sorted(IMPORTERS), n=1, cutoff=0.0)
        nearest = f"; the nearest supported is {close[0]!r}" if close else ""
        raise LayerwiseError(f"{where}: model_type {model_type!r} is not supported{nearest} "
                             f"(supported: {', '.join(sorted(IMPORTERS))})")
    config = _Config(data, where)
    family, keywords = IMPORTERS[model_type](config)
    return family, {**keywords, **_attention_dropout(config)}


# The config field of attention-probability dropout, by the name each architecture's HF code reads
# (GPT2Attention: attn_pdrop; BertSelfAttention / ViTSelfAttention: attention_probs_dropout_prob;
# Llama, Mistral, Qwen2, Phi, Phi-3, OPT, GPT-NeoX: attention_dropout).
_ATTN_DROPOUT_KEYS = ("attn_pdrop", "attention_probs_dropout_prob", "attention_dropout")


def _attention_dropout(c: _Config) -> dict:
    for key in _ATTN_DROPOUT_KEYS:
        if key in c.data:
            return {"attn_dropout": c.float(key)}
    return {}


def from_hf_config(data, name: str = "hf-model", where: str = "config.json", **overrides) -> Model:
    family, keywords = hf_keywords(data, where)
    source = f"Hugging Face config.json ({where}, model_type {data['model_type']!r})"
    return make(family, name, source, {**keywords, **overrides})


def read_hf_config(path: str | Path) -> dict:
    """The JSON of a config.json file; errors name the file (and the line)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise LayerwiseError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise LayerwiseError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
    except (OSError, UnicodeDecodeError, RecursionError) as err:
        raise LayerwiseError(f"{path}: cannot read the config: {type(err).__name__}") from None


def load_hf_config(path: str | Path, **overrides) -> Model:
    data = read_hf_config(path)
    name = data.get("_name_or_path") if isinstance(data, dict) else None
    return from_hf_config(data, name=str(name or Path(path).stem), where=str(path), **overrides)


def hf_reference(name: str) -> tuple[dict, Model]:
    """`--impl hf`: MODEL must be a Hugging Face config.json, which transformers builds from.
    Returns the config dict and the importer's Model of it (the same input, the same parameters)."""
    path = Path(name)
    if path.suffix != ".json":
        raise LayerwiseError(f"--impl hf needs a Hugging Face config.json as MODEL (transformers builds "
                             f"its model from it); got {name!r}")
    data = read_hf_config(path)
    if not isinstance(data, dict) or "model_type" not in data:
        raise LayerwiseError(f"{path}: --impl hf needs a Hugging Face config.json (with 'model_type')")
    label = data.get("_name_or_path")
    return data, from_hf_config(data, name=str(label or path.stem), where=str(path))
