"""The encoder-decoder family (layerwise.blocks.seq2seq): a keyword set -> Model. Pure Python.

Defaults are torch.nn.Transformer's layer wiring: post-norm, ReLU, biases on every projection,
dropout on the residual branches, the FFN's hidden activations and the attention probabilities.
"""
from __future__ import annotations

from layerwise.spec.base import block_class
from layerwise.spec.model import InputSpec, Model

REQUIRED = object()

SEQ2SEQ = dict(
    vocab_size=REQUIRED, d_model=REQUIRED, n_layers=REQUIRED, n_heads=REQUIRED, max_seq=REQUIRED,
    n_dec_layers=0,  # 0: as many as the encoder
    d_head=0,  # 0: d_model // n_heads (T5: d_kv, which may differ)
    rel_buckets=0, rel_max_distance=128,  # > 0: T5's relative position bias (positions="none")
    d_ff=0,  # 0: 4 * d_model
    activation="relu", gated=False, bias=True,
    norm="layernorm", norm_eps=1e-5, norm_position="post",  # nn.Transformer's default (norm_first=False)
    final_norm=True,  # nn.Transformer's encoder.norm / decoder.norm
    positions="sinusoidal", share_embeddings=True, tie_embeddings=False, head_bias=True,
    pos_rows=0,  # learned table rows if not max_seq (BART: max_position_embeddings + 2)
    embed_norm=False,  # a norm after embedding + positions (BART's layernorm_embedding)
    dropout=0.0,  # residual branches, embeddings and the FFN's hidden activations
    attn_dropout=0.0,  # attention probabilities
    ffn_dropout=None,  # the FFN's hidden activations if not `dropout` (BART's activation_dropout)
)


def _leaf(type_name: str, **kwargs):
    return block_class(type_name)(**kwargs)


def build_seq2seq(name: str, source: str, k: dict) -> Model:
    d = k["d_model"]

    def attn(**extra):
        return _leaf("attention", d_model=d, n_heads=k["n_heads"], d_head=k["d_head"], qkv_bias=k["bias"],
                     o_bias=k["bias"], dropout=k["attn_dropout"], **extra)

    rel = bool(k["rel_buckets"])

    ffn = _leaf("ffn", d_model=d, d_ff=k["d_ff"] or 4 * d, activation=k["activation"], gated=k["gated"],
                bias=k["bias"], dropout=k["dropout"] if k["ffn_dropout"] is None else k["ffn_dropout"])
    norms = dict(norm=k["norm"], norm_eps=k["norm_eps"], norm_bias=k["bias"], norm_position=k["norm_position"],
                 dropout=k["dropout"])
    enc = _leaf("transformer_block", attn=attn(score_bias=rel), ffn=ffn, **norms)
    dec = _leaf("decoder_block", self_attn=attn(causal=True, score_bias=rel), cross_attn=attn(context_dim=d, context_len=k["max_seq"]),
                ffn=ffn, **norms)
    body = _leaf("encoder_decoder", vocab_size=k["vocab_size"], d_model=d, n_layers=k["n_layers"],
                 n_dec_layers=k["n_dec_layers"], enc_block=enc, dec_block=dec, max_seq=k["max_seq"],
                 positions=k["positions"], pos_rows=k["pos_rows"], embed_norm=k["embed_norm"],
                 share_embeddings=k["share_embeddings"],
                 tie_embeddings=k["tie_embeddings"], final_norm=k["norm"] if k["final_norm"] else "none",
                 norm_eps=k["norm_eps"], norm_bias=k["bias"], head_bias=k["head_bias"], dropout=k["dropout"],
                 rel_buckets=k["rel_buckets"], rel_max_distance=k["rel_max_distance"])
    inp = InputSpec(kind="tokens", shape=(k["max_seq"], 2), vocab_size=k["vocab_size"], max_seq=k["max_seq"])
    return Model(name=name, body=body, input=inp, task="seq2seq", source=source)
