"""Hugging Face encoder-decoder configs -> the seq2seq family (layerwise.presets.seq2seq).

  bart   BartForConditionalGeneration: one `shared` table for both sides and the tied lm_head;
         learned positions with 2 extra rows (BartLearnedPositionalEmbedding's offset) on each side;
         layernorm_embedding on each side; post-norm layers with biases; no final norms.
         final_logits_bias is a buffer (vocab_size zeros), not a parameter, and is not built;
         scale_embedding multiplies by sqrt(d_model) (no parameters; our build does not apply it).
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


IMPORTERS = {"bart": _bart}
