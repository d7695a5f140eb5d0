"""`--impl hf` in the cost reading: the memory of transformers' own modeling classes built from a
config.json (the measure reading's measure/hf.py), modelled as our spec of the same config plus
what HF's code keeps that ours does not. Pure Python (no torch, no transformers).

Two parts, each read from transformers 5.23's models/<type>/modeling_<type>.py:
  - the dropouts HF's modules apply, from the config's own keys (`hf_dropouts`): GPT-2's embd_pdrop,
    resid_pdrop and attn_pdrop, BERT's hidden_dropout_prob and attention_probs_dropout_prob, ... Our
    importer leaves them out (it reads the architecture); HF's training step pays for their masks,
    and attention dropout sends CPU sdpa down its math path;
  - the ops that differ (`hf_ops`, cost/act_hf.py): eager softmax in fp32 with its low copy, the
    materialised causal mask of eager attention, rotary tables made once per forward, NewGELU in
    Python ops for hidden_act "gelu_new", LlamaRMSNorm's low saved input, Gemma 2/3's soft-capping
    and per-layer-type masks, Falcon's attention, the MoE router and grouped experts (act_hf_moe.py).
"""
from __future__ import annotations

from dataclasses import replace

from layerwise.cost.act_hf import HFOps
from layerwise.spec.base import Block
from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import Model
from layerwise.spec.transform import map_tree
from layerwise.workload import Workload

# model_type -> (embedding dropout key, residual dropout key, attention dropout key); None: no such
# dropout in that modeling file. Sources: each model's modeling_<type>.py (nn.Dropout / dropout=).
DROPOUT_KEYS = {
    "gpt2": ("embd_pdrop", "resid_pdrop", "attn_pdrop"),  # GPT2Model.drop, GPT2Attention/MLP
    "bert": ("hidden_dropout_prob", "hidden_dropout_prob", "attention_probs_dropout_prob"),  # BertEmbeddings,
    "roberta": ("hidden_dropout_prob", "hidden_dropout_prob", "attention_probs_dropout_prob"),  # Self/Output
    "vit": ("hidden_dropout_prob", "hidden_dropout_prob", "attention_probs_dropout_prob"),  # ViTEmbeddings, ...
    "opt": (None, "dropout", "attention_dropout"),  # OPTDecoderLayer: after self_attn and fc2
    "gpt_neox": ("hidden_dropout", "hidden_dropout", "attention_dropout"),  # emb_dropout, post_*_dropout
    "phi": ("embd_pdrop", "resid_pdrop", "attention_dropout"),  # PhiModel.embed_dropout, resid_dropout
    "phi3": (None, "resid_pdrop", "attention_dropout"),  # resid_attn_dropout, resid_mlp_dropout
    "llama": (None, None, "attention_dropout"),
    "mistral": (None, None, "attention_dropout"),
    "qwen2": (None, None, "attention_dropout"),
    "qwen3": (None, None, "attention_dropout"),
    "gemma": (None, None, "attention_dropout"),
    "gemma2": (None, None, "attention_dropout"),
    "gemma3_text": (None, None, "attention_dropout"),
    "mixtral": (None, None, "attention_dropout"),
    "qwen2_moe": (None, None, "attention_dropout"),
    "qwen3_moe": (None, None, "attention_dropout"),
    "falcon": (None, "hidden_dropout", None),  # dropout_add after the MLP; the rotary attention applies none
    "clip_vision_model": (None, None, "attention_dropout"),  # CLIPAttention; no hidden dropout
    # T5Stack.dropout, T5Layer*.dropout and the attention's dropout_rate; BartEncoder.dropout, BartAttention
    "t5": ("dropout_rate", "dropout_rate", "dropout_rate"),
    "bart": ("dropout", "dropout", "attention_dropout"),
    "deepseek_v2": (None, None, "attention_dropout"),
    "deepseek_v3": (None, None, "attention_dropout"),
    "mamba": (None, None, None),
}
# transformers' config defaults for those keys (configuration_<type>.py)
_DEFAULTS = {"embd_pdrop": 0.1, "resid_pdrop": 0.1, "attn_pdrop": 0.1, "hidden_dropout_prob": 0.1,
             "attention_probs_dropout_prob": 0.1, "dropout": 0.1, "attention_dropout": 0.0, "hidden_dropout": 0.0,
             "dropout_rate": 0.1}
_MODEL_DEFAULTS = {("phi", "resid_pdrop"): 0.0, ("phi", "embd_pdrop"): 0.0, ("phi3", "resid_pdrop"): 0.0,
                   ("vit", "hidden_dropout_prob"): 0.0, ("vit", "attention_probs_dropout_prob"): 0.0}
# eager_attention_forward without softmax(..., dtype=torch.float32): the scores' own dtype
_SOFTMAX_IN_SCORES_DTYPE = ("gpt2", "bert", "roberta", "t5", "bart")
_ENCODERS = ("bert", "roberta", "vit", "clip_vision_model")
# one matmul for q, k and v: GPT2Attention.c_attn, GPTNeoXAttention.query_key_value, Phi3Attention.qkv_proj
_FUSED_QKV = ("gpt2", "gpt_neox", "phi3", "falcon")
# *RMSNorm.forward as LlamaRMSNorm: `self.weight * hidden_states.to(input_dtype)` (Gemma's computes
# `output * (1.0 + self.weight.float())` in fp32 and casts back, as torch.rms_norm does)
_LLAMA_RMSNORM = ("llama", "mistral", "qwen2", "phi3", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe",
                  "t5", "deepseek_v2", "deepseek_v3", "mamba")  # T5LayerNorm: the same ops on T5's fp32 residual stream


def not_covered(model_type, where: str, supported) -> LayerwiseError:
    """The one-line refusal of a model_type --impl hf does not read (every type the importer reads is
    covered: this names the supported ones for anything else)."""
    return LayerwiseError(f"{where}: model_type {model_type!r} is not supported by --impl hf "
                          f"(supported: {', '.join(sorted(supported))})")


def _rate(data: dict, model_type: str, key: str | None) -> float:
    if key is None:
        return 0.0
    value = data.get(key)
    if value is None:
        value = _MODEL_DEFAULTS.get((model_type, key), _DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise LayerwiseError(f"config.json: {key!r} must be a probability in [0, 1), got {value!r}")
    return float(value)


def hf_dropouts(data: dict) -> tuple[float, float, float]:
    """(embedding, residual, attention) dropout of HF's model for this config."""
    model_type = data.get("model_type")
    if model_type not in DROPOUT_KEYS:
        raise not_covered(model_type, "config.json", DROPOUT_KEYS)
    return tuple(_rate(data, model_type, key) for key in DROPOUT_KEYS[model_type])


def hf_ops(data: dict) -> HFOps:
    model_type = data["model_type"]
    key = {"gpt2": "activation_function", "bart": "activation_function", "t5": "dense_act_fn"}.get(model_type, "hidden_act")
    act = data.get(key)
    if model_type == "t5" and act is None:  # T5Config: dense_act_fn from feed_forward_proj's last part
        act = str(data.get("feed_forward_proj", "relu")).split("-")[-1]
        act = "gelu_new" if act == "gelu" else act
    if act is None:
        act = {"gpt2": "gelu_new", "phi": "gelu_new"}.get(model_type)
    ops = HFOps(softmax_fp32=model_type not in _SOFTMAX_IN_SCORES_DTYPE, causal_mask=model_type not in _ENCODERS,
                python_gelu=act == "gelu_new", fused_qkv=model_type in _FUSED_QKV,
                fused_gate_up=model_type == "phi3", rope_cat=model_type in ("phi3", "falcon"),
                llama_rmsnorm=model_type in _LLAMA_RMSNORM)
    if model_type == "mixtral":
        return replace(ops, moe="mixtral", moe_renormalise=True)
    if model_type in ("qwen2_moe", "qwen3_moe"):
        norm = data.get("norm_topk_prob", False)
        if not isinstance(norm, bool):
            raise LayerwiseError(f"config.json: 'norm_topk_prob' must be true or false, got {norm!r}")
        return replace(ops, moe="qwen", moe_renormalise=norm)
    if model_type == "mamba":
        return replace(ops, causal_mask=False, float_logits=True)
    if model_type in ("deepseek_v2", "deepseek_v3"):
        return replace(ops, mla=model_type, moe=model_type)
    if model_type in ("t5", "bart"):
        return replace(ops, seq2seq=model_type, stack_dropout=hf_dropouts(data)[1] if model_type == "t5" else 0.0)
    if model_type == "falcon":
        return replace(ops, falcon=True, kv_broadcast=data.get("new_decoder_architecture") is True)
    return replace(ops, **_gemma_ops(data)) if model_type in ("gemma2", "gemma3_text") else ops


def _cap(data: dict, key: str, default: float | None) -> float:
    value = data.get(key, default)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise LayerwiseError(f"config.json: {key!r} must be a positive number or null, got {value!r}")
    return float(value)


def _gemma_ops(data: dict) -> dict:
    """Gemma 2/3 (configuration_gemma2.py, configuration_gemma3.py, transformers 5.23): soft-capping
    (Gemma 2's defaults 50 and 30; Gemma 3 none), and layer_types: Gemma 2 alternates sliding and
    full from layer 0, Gemma 3 has a full layer every sliding_window_pattern (6)."""
    gemma2 = data["model_type"] == "gemma2"
    n = data.get("num_hidden_layers")
    types = data.get("layer_types")
    if types is None and isinstance(n, int):
        pattern = 2 if gemma2 else data.get("sliding_window_pattern", 6)
        if isinstance(pattern, bool) or not isinstance(pattern, int) or pattern < 1:
            raise LayerwiseError(f"config.json: 'sliding_window_pattern' must be a positive integer, got {pattern!r}")
        types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n)]
    if not isinstance(types, list) or not all(t in ("sliding_attention", "full_attention") for t in types):
        raise LayerwiseError(f"config.json: 'layer_types' must list 'sliding_attention' / 'full_attention', got {types!r}")
    window = data.get("sliding_window", 4096 if gemma2 else 512)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise LayerwiseError(f"config.json: 'sliding_window' must be a positive integer, got {window!r}")
    return dict(attn_softcap=_cap(data, "attn_logit_softcapping", 50.0 if gemma2 else None),
                logit_softcap=_cap(data, "final_logit_softcapping", 30.0 if gemma2 else None),
                window=window, sliding=tuple(t == "sliding_attention" for t in types), rope_per_type=not gemma2)


def hf_spec(model: Model, data: dict) -> Model:
    """Our spec of the config with HF's dropouts where its modules apply them: the embeddings'
    (decoder_lm / encoder / vit / encoder_decoder `dropout`), each branch's residual (transformer_block
    / decoder_block `dropout`), the attention probabilities (attention `dropout`)."""
    embed, resid, attn = hf_dropouts(data)

    def place(path: str, node: Block) -> Block:
        name = node.type_name
        if name == "attention":
            return _with(node, dropout=attn)
        if name in ("transformer_block", "decoder_block"):
            return _with(node, dropout=resid)
        if name in ("decoder_lm", "encoder", "vit", "encoder_decoder"):
            return _with(node, dropout=embed)
        return node

    return replace(model, name=f"{model.name} (transformers)", body=map_tree(model.body, place))


def _with(node: Block, **changes) -> Block:
    return node if all(getattr(node, k) == v for k, v in changes.items()) else replace(node, **changes)


def check_hf_attention(data: dict, workload: Workload) -> None:
    """Gemma2PreTrainedModel._supports_sdpa is False (sdpa cannot soft-cap the scores): transformers
    refuses attn_implementation="sdpa", so --attention sdpa has no HF step to describe. (A model
    without attention, Mamba, refuses --attention in spec/applies.py, as our reading does.)"""
    from layerwise.spec.errors import WorkloadError

    if data.get("model_type") == "gemma2" and workload.attention == "sdpa":
        raise WorkloadError("--attention sdpa does not apply to --impl hf for model_type 'gemma2' (transformers' "
                            "Gemma 2 runs eager attention only: sdpa cannot soft-cap the scores); use --attention eager")


def check_hf_config(data: dict) -> None:
    """What transformers' training step needs of the config beyond building the model: T5's
    _shift_right turns the labels into decoder inputs with decoder_start_token_id and pad_token_id,
    which T5Config does not default (BartConfig does: 2 and 1)."""
    if data.get("model_type") == "t5":
        for key in ("decoder_start_token_id", "pad_token_id"):
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise LayerwiseError(f"config.json: {key!r} must be a token id (T5ForConditionalGeneration "
                                     f"shifts the labels right into its decoder input with it), got {value!r}")


def hf_training_memory(model: Model, data: dict, workload: Workload, *, timeline: bool = False):
    """The cost reading of transformers' training step for `data` (model: our import of it)."""
    from layerwise.cost.memory import training_memory
    from layerwise.spec.errors import WorkloadError

    if workload.mode != "train":
        raise WorkloadError(f"--mode {workload.mode} does not apply to --impl hf (a training step is modelled)")
    check_hf_attention(data, workload)
    check_hf_config(data)
    ops = hf_ops(data)
    # checkpointing: transformers turns use_cache off; BartForConditionalGeneration with labels too
    if ops.causal_mask and data.get("use_cache", True) and workload.checkpointing == "none" and ops.seq2seq != "bart":
        ops = replace(ops, cache=True)
    return training_memory(hf_spec(model, data), workload, hf=ops, timeline=timeline)
