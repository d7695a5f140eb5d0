"""One builder per architecture family: a keyword set (a preset, an HF config, overrides) -> Model.

Each family declares its keywords with defaults (`REQUIRED` for those without one); the keyword
sets in presets/data.py and presets/hf.py are plain dicts checked against these, so a typo in an
override is an error naming the family's keywords. Pure Python: no torch.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from layerwise.spec.base import Block, block_class
from layerwise.spec.errors import LayerwiseError, SpecError
from layerwise.spec.model import InputSpec, Model

REQUIRED = object()


def _leaf(type_name: str, **kwargs) -> Block:
    return block_class(type_name)(**kwargs)


# ---- decoder-only LMs (GPT-2, Llama, Mistral, Mixtral, Qwen2, Phi, GPT-NeoX, OPT) ----------------
DECODER = dict(
    vocab_size=REQUIRED, d_model=REQUIRED, n_layers=REQUIRED, n_heads=REQUIRED, max_seq=REQUIRED,
    n_kv_heads=0,  # 0: = n_heads; fewer: GQA
    d_head=0,  # 0: d_model // n_heads
    d_ff=0,  # 0: 4 * d_model
    norm="layernorm", norm_eps=1e-5, norm_bias=True,
    activation="gelu_tanh", gated=False,  # gated + silu = SwiGLU
    ffn_bias=True, qkv_bias=True, o_bias=True,
    positions="learned",  # learned | sinusoidal | rope | none
    pos_rows=0,  # learned table rows if not max_seq (OPT: max_seq + 2)
    rope_base=10000.0,
    rotary_pct=1.0,  # share of each head that RoPE rotates (Phi-2 0.4 = 32 of 80 dims, GPT-NeoX 0.25)
    qk_norm="none",
    norm_position="pre",  # pre | post (OPT-350m style)
    parallel=False, shared_norm=True,  # parallel attention + MLP (GPT-J/Phi-2: one norm; NeoX: two)
    tie_embeddings=True, head_bias=False, final_norm=True,
    n_experts=0, top_k=0,  # > 0: a MoE feed-forward (Mixtral); d_ff is then each expert's width
    shared_d_ff=0, shared_gate=False,  # MoE: a shared expert on every token (Qwen2-MoE: sigmoid-gated)
    capacity_factor=0.0, aux_loss_coef=0.0, z_loss_coef=0.0,  # MoE routing: 0 = dropless, no router losses
    sliding_window=0, dropout=0.0,
    sandwich=False,  # Gemma 2/3: a second norm on each branch's output
    attn_dropout=0.0,  # on the attention probabilities (HF: attn_pdrop, attention_dropout)
    # Gemma: the embeddings times sqrt(d_model); Gemma 2: tanh soft-capping of the attention scores and
    # of the logits (0: off); Gemma 2/3: scores scaled by query_scale ** -0.5 (0: d_head's)
    scale_embeddings=False, attn_softcap=0.0, logit_softcap=0.0, query_scale=0,
    # Gemma 2/3: every global_every-th layer global, the rest sliding_window layers with their own rope
    # base (local_rope_base, 0: rope_base); 0: every layer alike (sliding_window then applies to all)
    global_every=0, local_rope_base=0.0,
)


def build_decoder(name: str, source: str, k: dict) -> Model:
    d_head = k["d_head"] or k["d_model"] // k["n_heads"]
    if k["global_every"] and not k["sliding_window"]:
        raise LayerwiseError(f"{name}: global_every {k['global_every']} alternates global and sliding-window "
                             f"layers; set sliding_window too")
    if k["query_scale"] < 0:
        raise LayerwiseError(f"{name}: query_scale must be >= 0 (0: d_head), got {k['query_scale']}")

    def attention(window: int, base: float) -> Block:
        rope = None
        if k["positions"] == "rope":
            # rotary_dim: Phi-2 and GPT-NeoX rotate only the first dims of each head (0: all of them)
            # A share, not a width, so overrides of d_model/n_heads keep it valid; rounded down to pairs.
            rotary = int(d_head * k["rotary_pct"]) // 2 * 2
            rope = _leaf("rope", d_head=d_head, rotary_dim=0 if rotary == d_head else rotary, base=float(base))
        return _leaf("attention", d_model=k["d_model"], n_heads=k["n_heads"], n_kv_heads=k["n_kv_heads"],
                     d_head=k["d_head"], causal=True, qkv_bias=k["qkv_bias"], o_bias=k["o_bias"],
                     qk_norm=k["qk_norm"], rope=rope, sliding_window=window, dropout=k["attn_dropout"],
                     scale=k["query_scale"] ** -0.5 if k["query_scale"] else 0.0, softcap=float(k["attn_softcap"]))

    attn = attention(0 if k["global_every"] else k["sliding_window"], k["rope_base"])
    local = attention(k["sliding_window"], k["local_rope_base"] or k["rope_base"]) if k["global_every"] else None
    d_ff = k["d_ff"] or 4 * k["d_model"]
    if k["n_experts"]:
        ffn = _leaf("moe", d_model=k["d_model"], d_ff=d_ff, n_experts=k["n_experts"], top_k=k["top_k"],
                    activation=k["activation"], gated=k["gated"], bias=k["ffn_bias"], shared_d_ff=k["shared_d_ff"],
                    shared_gate=k["shared_gate"], capacity_factor=k["capacity_factor"],
                    aux_loss_coef=k["aux_loss_coef"], z_loss_coef=k["z_loss_coef"])
    else:
        ffn = _leaf("ffn", d_model=k["d_model"], d_ff=d_ff, activation=k["activation"], gated=k["gated"], bias=k["ffn_bias"])
    wiring = dict(ffn=ffn, norm=k["norm"], norm_eps=k["norm_eps"], norm_bias=k["norm_bias"],
                  norm_position=k["norm_position"], parallel=k["parallel"], shared_norm=k["shared_norm"],
                  dropout=k["dropout"], sandwich=k["sandwich"])
    block = _leaf("transformer_block", attn=attn, **wiring)
    local_block = _leaf("transformer_block", attn=local, **wiring) if local is not None else None
    body = _leaf("decoder_lm", vocab_size=k["vocab_size"], d_model=k["d_model"], n_layers=k["n_layers"], block=block,
                 max_seq=k["max_seq"], positions=k["positions"], pos_rows=k["pos_rows"],
                 tie_embeddings=k["tie_embeddings"], final_norm=k["norm"] if k["final_norm"] else "none",
                 norm_eps=k["norm_eps"], norm_bias=k["norm_bias"], head_bias=k["head_bias"], dropout=k["dropout"],
                 scale_embeddings=k["scale_embeddings"], logit_softcap=float(k["logit_softcap"]),
                 local_block=local_block, global_every=k["global_every"])
    inp = InputSpec(kind="tokens", shape=(k["max_seq"],), vocab_size=k["vocab_size"], max_seq=k["max_seq"])
    return Model(name=name, body=body, input=inp, task="lm", source=source)


# ---- BERT-style encoders ----------------------------------------------------------------------
ENCODER = dict(
    vocab_size=REQUIRED, d_model=REQUIRED, n_layers=REQUIRED, n_heads=REQUIRED, max_seq=REQUIRED,
    d_ff=0, activation="gelu", norm_eps=1e-12, type_vocab_size=2, pooler=True,
    mlm_head=False,  # BertForMaskedLM's head (use with pooler=False)
    pos_offset=0,  # RoBERTa: position ids start at padding_idx + 1, so 2 table rows are never used
    padding_idx=None, dropout=0.0,
    attn_dropout=0.0,  # on the attention probabilities (HF: attention_probs_dropout_prob)
)


def build_encoder(name: str, source: str, k: dict) -> Model:
    d = k["d_model"]
    attn = _leaf("attention", d_model=d, n_heads=k["n_heads"], qkv_bias=True, o_bias=True, dropout=k["attn_dropout"])
    ffn = _leaf("ffn", d_model=d, d_ff=k["d_ff"] or 4 * d, activation=k["activation"], bias=True)
    block = _leaf("transformer_block", attn=attn, ffn=ffn, norm="layernorm", norm_eps=k["norm_eps"],
                  norm_position="post", dropout=k["dropout"])
    body = _leaf("encoder", vocab_size=k["vocab_size"], d_model=d, n_layers=k["n_layers"], block=block,
                 max_seq=k["max_seq"], type_vocab_size=k["type_vocab_size"], pooler=k["pooler"], mlm_head=k["mlm_head"],
                 norm_eps=k["norm_eps"], dropout=k["dropout"], padding_idx=k["padding_idx"])
    seq = k["max_seq"] - k["pos_offset"]
    if seq <= 0:
        raise LayerwiseError(f"{name}: max_seq {k['max_seq']} leaves no positions after pos_offset {k['pos_offset']}")
    inp = InputSpec(kind="tokens", shape=(seq,), vocab_size=k["vocab_size"], max_seq=seq)
    return Model(name=name, body=body, input=inp, task="none", source=source)  # MLM is not next-token "lm"


# ---- Vision Transformers -------------------------------------------------------------------------
VIT = dict(
    image_size=REQUIRED, patch=REQUIRED, d_model=REQUIRED, n_layers=REQUIRED, n_heads=REQUIRED, n_classes=REQUIRED,
    c_in=3, d_ff=0, activation="gelu", norm_eps=1e-6, qkv_bias=True, pooler=False, patch_kind="conv", dropout=0.0,
    clip=False,  # CLIP's vision tower: no patch bias, a norm before the blocks, the final norm on CLS only
    attn_dropout=0.0,  # on the attention probabilities (HF: attention_probs_dropout_prob)
)


def build_vit(name: str, source: str, k: dict) -> Model:
    d = k["d_model"]
    attn = _leaf("attention", d_model=d, n_heads=k["n_heads"], qkv_bias=k["qkv_bias"], o_bias=True,
                 dropout=k["attn_dropout"])
    ffn = _leaf("ffn", d_model=d, d_ff=k["d_ff"] or 4 * d, activation=k["activation"], bias=True)
    block = _leaf("transformer_block", attn=attn, ffn=ffn, norm="layernorm", norm_eps=k["norm_eps"], dropout=k["dropout"])
    body = _leaf("vit", image_size=k["image_size"], patch=k["patch"], c_in=k["c_in"], d_model=d, n_layers=k["n_layers"],
                 block=block, n_classes=k["n_classes"], patch_kind=k["patch_kind"], pooler=k["pooler"],
                 norm_eps=k["norm_eps"], dropout=k["dropout"], patch_bias=not k["clip"], pre_norm=k["clip"],
                 cls_only_norm=k["clip"])
    inp = InputSpec(kind="image", shape=(k["c_in"], k["image_size"], k["image_size"]), patch=k["patch"])
    return Model(name=name, body=body, input=inp, task="classify" if k["n_classes"] else "none", source=source)


# ---- ResNets --------------------------------------------------------------------------------------
RESNET = dict(layers=REQUIRED, bottleneck=False, widths=(64, 128, 256, 512), c_in=3, stem_width=64,
              n_classes=1000, image_size=224)


def build_resnet(name: str, source: str, k: dict) -> Model:
    body = _leaf("resnet", layers=tuple(k["layers"]), bottleneck=k["bottleneck"], widths=tuple(k["widths"]),
                 c_in=k["c_in"], stem_width=k["stem_width"], n_classes=k["n_classes"])
    inp = InputSpec(kind="image", shape=(k["c_in"], k["image_size"], k["image_size"]))
    return Model(name=name, body=body, input=inp, task="classify", source=source)


# ---- small classifiers: a recurrent text classifier and a CNN ----------------------------------
TEXT_RNN = dict(vocab_size=256, d_embed=64, d_hidden=128, n_classes=2, kind="gru", n_layers=1,
                bidirectional=False, max_seq=256)


def build_text_rnn(name: str, source: str, k: dict) -> Model:
    """Embedding -> RNN (last step) -> Linear: (B, S) ids -> (B, n_classes)."""
    dirs = 2 if k["bidirectional"] else 1
    body = _leaf("sequential", layers=(
        _leaf("embedding", vocab_size=k["vocab_size"], d_model=k["d_embed"]),
        _leaf("rnn", kind=k["kind"], d_in=k["d_embed"], d_hidden=k["d_hidden"], n_layers=k["n_layers"],
              bidirectional=k["bidirectional"], output="last"),
        _leaf("linear", d_in=k["d_hidden"] * dirs, d_out=k["n_classes"])), names=("embed", "rnn", "head"))
    inp = InputSpec(kind="tokens", shape=(k["max_seq"],), vocab_size=k["vocab_size"], max_seq=k["max_seq"])
    return Model(name=name, body=body, input=inp, task="classify", source=source)


CNN = dict(c_in=1, image_size=8, channels=(16, 32), hidden=64, n_classes=10)


def build_cnn(name: str, source: str, k: dict) -> Model:
    """[conv 3x3 pad 1, bn, relu] per channel count, maxpool 2, flatten, linear, relu, linear."""
    layers, c = [], k["c_in"]
    for width in k["channels"]:
        layers += [_leaf("conv2d", c_in=c, c_out=width, kernel=3, padding=1, bias=False),
                   _leaf("batchnorm2d", n_features=width), _leaf("activation", kind="relu")]
        c = width
    side = k["image_size"] // 2
    layers += [_leaf("maxpool2d", kernel=2), _leaf("flatten", start_dim=1),
               _leaf("linear", d_in=c * side * side, d_out=k["hidden"]), _leaf("activation", kind="relu"),
               _leaf("linear", d_in=k["hidden"], d_out=k["n_classes"])]
    inp = InputSpec(kind="image", shape=(k["c_in"], k["image_size"], k["image_size"]))
    return Model(name=name, body=_leaf("sequential", layers=tuple(layers)), input=inp, task="classify", source=source)


# ---- the family registry --------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    keywords: dict
    build: Callable[[str, str, dict], Model]


FAMILIES: dict[str, Family] = {
    "decoder": Family(DECODER, build_decoder),
    "encoder": Family(ENCODER, build_encoder),
    "vit": Family(VIT, build_vit),
    "resnet": Family(RESNET, build_resnet),
    "text_rnn": Family(TEXT_RNN, build_text_rnn),
    "cnn": Family(CNN, build_cnn),
}


def _register_seq2seq() -> None:
    from layerwise.presets.seq2seq import REQUIRED as S2S_REQUIRED, SEQ2SEQ, build_seq2seq

    from layerwise.presets.mamba import MAMBA, REQUIRED as MAMBA_REQUIRED, build_mamba

    FAMILIES["seq2seq"] = Family({k: (REQUIRED if v is S2S_REQUIRED else v) for k, v in SEQ2SEQ.items()}, build_seq2seq)
    FAMILIES["mamba"] = Family({k: (REQUIRED if v is MAMBA_REQUIRED else v) for k, v in MAMBA.items()}, build_mamba)
    from layerwise.presets.deepseek import DEEPSEEK, REQUIRED as DS_REQUIRED, build_deepseek

    FAMILIES["deepseek"] = Family({k: (REQUIRED if v is DS_REQUIRED else v) for k, v in DEEPSEEK.items()}, build_deepseek)


_register_seq2seq()


def make(family: str, name: str, source: str, keywords: dict) -> Model:
    """Check `keywords` against the family's, fill defaults, build the Model."""
    fam = FAMILIES[family]
    for key in keywords:
        if key not in fam.keywords:
            close = difflib.get_close_matches(key, sorted(fam.keywords), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise LayerwiseError(f"{name}: unknown {family} keyword {key!r}{hint} (keywords: {', '.join(sorted(fam.keywords))})")
    full = {**fam.keywords, **keywords}
    missing = [key for key, value in full.items() if value is REQUIRED]
    if missing:
        raise LayerwiseError(f"{name}: {family} needs {missing}")
    try:
        return fam.build(name, source, full)
    except SpecError as err:  # an override that makes no valid block: say which preset
        raise SpecError(f"{name}: {err}") from None
