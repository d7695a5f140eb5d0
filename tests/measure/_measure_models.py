"""Small spec models for the measure tests, built from layerwise blocks."""
from __future__ import annotations

from layerwise.blocks import FFN, Attention, DecoderLM, Linear, Repeat, Residual, Sequential, TransformerBlock
from layerwise.spec.model import InputSpec, Model


def tiny_lm(dropout: float = 0.0) -> Model:
    """A 2-layer decoder LM: embeddings, attention, FFN, norms, dropout, a head, cross-entropy."""
    d = 16
    block = TransformerBlock(attn=Attention(d_model=d, n_heads=2, causal=True, dropout=dropout),
                             ffn=FFN(d_model=d, d_ff=32, dropout=dropout), dropout=dropout)
    body = DecoderLM(vocab_size=32, d_model=d, n_layers=2, block=block, max_seq=8)
    return Model(name="tiny-lm", body=body, task="lm",
                 input=InputSpec(kind="tokens", shape=(8,), vocab_size=32, max_seq=8))


def linear_stack(widths: tuple[int, ...], task: str = "none") -> Model:
    """Linear layers of the given widths (features in, features out): parameter-heavy at batch 1."""
    layers = tuple(Linear(d_in=a, d_out=b) for a, b in zip(widths, widths[1:]))
    return Model(name="stack", body=Sequential(layers=layers), task=task,
                 input=InputSpec(kind="features", shape=(widths[0],)))


def ffn_tower(d: int = 16, n_layers: int = 4, seq: int = 128) -> Model:
    """Repeat(x + FFN(x)) over long sequences: few parameters, many activations (each block
    saves its input, the d_ff-wide hidden and its GELU: what full checkpointing drops)."""
    block = Residual(branch=FFN(d_model=d, d_ff=4 * d, activation="gelu"))
    return Model(name="tower", body=Repeat(block=block, n_layers=n_layers), task="none",
                 input=InputSpec(kind="sequence", shape=(seq, d)))
