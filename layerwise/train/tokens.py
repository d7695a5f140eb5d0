"""Text -> token ids: byte-level (ids 0..255, nothing to train) or BPE trained locally on the
training split with Hugging Face `tokenizers` (no download: the vocabulary is learned here)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from layerwise.spec.errors import LayerwiseError

PAD = "[PAD]"  # BPE id 0; byte-level pads with byte 0 (NUL), which never occurs in text


@dataclass
class TextTokenizer:
    kind: str  # "byte" or "bpe"
    vocab_size: int
    bpe: object = None  # tokenizers.Tokenizer when kind == "bpe"

    def encode(self, text: str) -> list[int]:
        if self.kind == "byte":
            return list(text.encode("utf-8"))
        return self.bpe.encode(text).ids

    def to_json(self) -> str | None:
        return self.bpe.to_str() if self.bpe is not None else None


def make_tokenizer(kind: str, vocab_size: int, train_texts: list[str], where: str) -> TextTokenizer:
    """A tokenizer whose ids fit the model's embedding of `vocab_size` rows."""
    if kind == "byte":
        if vocab_size < 256:
            raise LayerwiseError(f"{where}: byte-level text needs vocab_size >= 256, the model has {vocab_size}; "
                                 f"use --tokenizer bpe or a larger vocabulary")
        return TextTokenizer("byte", 256)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 1:
        raise LayerwiseError(f"{where}: BPE needs vocab_size >= {len(alphabet) + 1} (byte alphabet + pad), got {vocab_size}")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD], initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(train_texts, trainer=trainer)
    return TextTokenizer("bpe", tok.get_vocab_size(), tok)


def encode_fixed(tok: TextTokenizer, texts: list[str], seq: int) -> torch.Tensor:
    """(N, seq) int64: each text's ids truncated or right-padded with id 0."""
    out = torch.zeros(len(texts), seq, dtype=torch.int64)
    for i, t in enumerate(texts):
        ids = tok.encode(t)[:seq]
        if ids:
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return out
