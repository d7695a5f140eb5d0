"""Small models composed from blocks (stand-ins for the digits presets), shared by the compress and
export tests. Built at sizes that run in milliseconds."""
from __future__ import annotations

from layerwise.blocks import (FFN, Activation, Attention, BatchNorm2d, Conv2d, DecoderLM, Flatten, Linear,
                              MaxPool2d, Sequential, TransformerBlock, ViT)
from layerwise.spec.base import REGISTRY


def cnn(c1: int = 8, c2: int = 16, n_classes: int = 10):
    """Digits-style CNN on (B, 1, 8, 8): conv-bn-relu-pool twice, flatten, linear."""
    return Sequential(layers=(
        Conv2d(c_in=1, c_out=c1, kernel=3, padding=1), BatchNorm2d(n_features=c1), Activation(kind="relu"),
        Conv2d(c_in=c1, c_out=c2, kernel=3, padding=1), BatchNorm2d(n_features=c2), Activation(kind="relu"),
        MaxPool2d(kernel=2), Flatten(), Linear(d_in=c2 * 16, d_out=n_classes)))


def block(d_model: int = 32, n_heads: int = 4, d_ff: int = 64, causal: bool = False):
    return TransformerBlock(attn=Attention(d_model=d_model, n_heads=n_heads, causal=causal),
                            ffn=FFN(d_model=d_model, d_ff=d_ff))


def vit(d_model: int = 32, n_layers: int = 2):
    """ViT on (B, 1, 8, 8) images, patch 2 -> 16 tokens + CLS."""
    return ViT(image_size=8, patch=2, c_in=1, d_model=d_model, n_layers=n_layers, block=block(d_model),
               n_classes=10)


def tiny_gpt(vocab: int = 64, d_model: int = 32, n_layers: int = 2, max_seq: int = 32):
    return DecoderLM(vocab_size=vocab, d_model=d_model, n_layers=n_layers, max_seq=max_seq,
                     block=block(d_model, causal=True))


def preset(name: str):
    """The digits/text presets (H6), shrunk where they are large, so tests run in milliseconds.
    Returns (body, input shape for batch 3, token vocabulary or 0)."""
    from layerwise.presets import get_preset

    small = {"tiny-gpt": dict(n_layers=2, d_model=32, d_ff=64, max_seq=32, vocab_size=64),
             "text-gru": dict(max_seq=32, d_embed=16, d_hidden=24)}
    model = get_preset(name, **small.get(name, {}))
    seq = 12 if model.input.kind == "tokens" else None
    return model.body, model.input_shape(3, seq=seq), model.input.vocab_size


PRESETS = ("digits-cnn", "digits-vit", "tiny-gpt", "text-gru")


def gru_classifier(d_in: int = 8, hidden: int = 16, n_classes: int = 3):
    """(B, S, d_in) -> logits."""
    rnn = REGISTRY["rnn"](kind="gru", d_in=d_in, d_hidden=hidden, output="last")
    return Sequential(layers=(rnn, Linear(d_in=hidden, d_out=n_classes)))
