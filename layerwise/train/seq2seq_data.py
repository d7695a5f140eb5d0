"""Built-in sequence-to-sequence tasks the project generates (nothing is downloaded):

  reverse-digits  source: S random digits; target: the same digits reversed
  sort-digits     source: S random digits; target: the same digits in ascending order
Tokens: digits 0-9 are ids 0-9, START (10) begins the decoder's input. A sample is the model's
(S, 2) input, [:, 0] the source and [:, 1] the decoder input (START + target[:-1], teacher
forcing), with the target (S,) as labels; S is the model's sequence length. Samples are drawn with
the data seed, so every run and every split is reproducible.
"""
from __future__ import annotations

import torch

from layerwise.spec.errors import LayerwiseError

TASKS = ("reverse-digits", "sort-digits")
START = 10  # the decoder's start token
VOCAB = 11  # digits + START
SAMPLES = 12_000


def target_of(task: str, src: torch.Tensor) -> torch.Tensor:
    """(N, S) source digits -> (N, S) target digits."""
    if task == "reverse-digits":
        return src.flip(-1)
    return src.sort(dim=-1).values


def make_pairs(task: str, seq: int, vocab_size: int, seed: int, n: int = SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, seq, 2) int64: source and decoder input; y (n, seq): the target."""
    if task not in TASKS:
        raise LayerwiseError(f"data {task!r}: not a built-in sequence-to-sequence task ({', '.join(TASKS)})")
    if vocab_size < VOCAB:
        raise LayerwiseError(f"data {task!r} needs a vocabulary of at least {VOCAB} (10 digits + start), "
                             f"the model has {vocab_size}")
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, 10, (n, seq), generator=g)
    tgt = target_of(task, src)
    dec_in = torch.cat((torch.full((n, 1), START, dtype=torch.int64), tgt[:, :-1]), dim=1)
    return torch.stack((src, dec_in), dim=-1), tgt
