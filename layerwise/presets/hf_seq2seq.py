"""Hugging Face encoder-decoder configs -> the seq2seq family (layerwise.presets.seq2seq).

  bart   BartForConditionalGeneration: one `shared` table for both sides and the tied lm_head;
         learned positions with 2 extra rows (BartLearnedPositionalEmbedding's offset) on each side;
         layernorm_embedding on each side; post-norm layers with biases; no final norms.
         final_logits_bias is a buffer (vocab_size zeros), not a parameter, and is not built;
         scale_embedding multiplies by sqrt(d_model) (no parameters; our build does not apply it).
  t5     T5ForConditionalGeneration: one `shared` table; pre-norm RMSNorm (weight only) layers without
         biases, q/k/v of n_heads x d_kv; relative position bias (relative_attention_num_buckets x
         n_heads, in the first layer of each stack, shared by the stack's layers); feed_forward_proj
         relu or gated-gelu (gelu_new) / gated-silu; final norms; lm_head tied to `shared` always, as
         transformers 5 builds it (T5Config forces tie_word_embeddings; a false value in v1.1 and flan-t5
         configs only turns off the decoder output's scaling; transformers 4 kept their lm_head apart,
         vocab_size x d_model more parameters). T5 does not scale the scores by 1/sqrt(d_kv)
         nor (tied) the decoder output by d_model**-0.5: no parameters or matmul FLOPs; our build
         scales the scores as every other attention does.
"""
from __future__ import annotations

from layerwise.spec.errors import LayerwiseError


def _bart(c) -> tuple[str, dict]:
    d = c.int("d_model")
    heads, dec_heads = c.int("encoder_attention_heads"), c.int("decoder_attention_heads")
    if heads != dec_heads:
        raise LayerwiseError(f"{c.where}: 'decoder_attention_heads' {dec_heads} differs from 'encoder_attention_heads' "
                             f"{heads}; one head count for both stacks is supported")
    ffn, dec_ffn = c.int("encoder_ffn_dim"), c.int("decoder_ffn_dim")
    if ffn != dec_ffn:
        raise LayerwiseError(f"{c.where}: 'decoder_ffn_dim' {dec_ffn} differs from 'encoder_ffn_dim' {ffn}; "
                             f"one FFN width for both stacks is supported")
    if c.bool("add_final_layer_norm", False):
        raise LayerwiseError(f"{c.where}: 'add_final_layer_norm' true (mBART) is not supported")
    if not c.bool("tie_word_embeddings", True):
        raise LayerwiseError(f"{c.where}: 'tie_word_embeddings' false is not supported for bart")
    max_seq = c.int("max_position_embeddings")
    return "seq2seq", dict(
        vocab_size=c.int("vocab_size"), d_model=d, n_layers=c.int("encoder_layers"),
        n_dec_layers=c.int("decoder_layers"), n_heads=heads, d_ff=ffn, max_seq=max_seq,
        activation=c.activation("activation_function", "gelu"), norm_position="post", final_norm=False,
        positions="learned", pos_rows=max_seq + 2, embed_norm=True, share_embeddings=True, tie_embeddings=True,
        head_bias=False, dropout=c.float("dropout", 0.0), attn_dropout=c.float("attention_dropout", 0.0),
        ffn_dropout=c.float("activation_dropout", 0.0))


_T5_ACTIVATIONS = {"relu": "relu", "gelu": "gelu_tanh", "silu": "silu"}  # T5DenseGatedActDense: gated-gelu = gelu_new


def _t5(c) -> tuple[str, dict]:
    proj = c.get("feed_forward_proj", "relu")
    gated, act = proj.startswith("gated-"), proj.split("-")[-1]
    if act not in _T5_ACTIVATIONS or proj.count("-") > 1 or (proj.count("-") == 1 and not gated):
        raise LayerwiseError(f"{c.where}: 'feed_forward_proj' {proj!r} is not supported "
                             f"(relu, gated-gelu, gated-silu)")
    layers = c.int("num_layers")
    return "seq2seq", dict(
        vocab_size=c.int("vocab_size"), d_model=c.int("d_model"), n_layers=layers,
        n_dec_layers=c.int("num_decoder_layers", layers), n_heads=c.int("num_heads"), d_head=c.int("d_kv"),
        d_ff=c.int("d_ff"), max_seq=c.int("n_positions", 512), activation=_T5_ACTIVATIONS[act], gated=gated,
        bias=False, norm="rmsnorm", norm_eps=c.float("layer_norm_epsilon", 1e-6), norm_position="pre",
        final_norm=True, positions="none", share_embeddings=True, tie_embeddings=True,
        head_bias=False, dropout=c.float("dropout_rate", 0.1),
        rel_buckets=c.int("relative_attention_num_buckets", 32),
        rel_max_distance=c.int("relative_attention_max_distance", 128))


def _mamba(c) -> tuple[str, dict]:
    from layerwise.presets.mamba import hf_mamba

    return hf_mamba(c)


IMPORTERS = {"bart": _bart, "t5": _t5, "mamba": _mamba}  # mamba: not an encoder-decoder (presets/mamba.py)
