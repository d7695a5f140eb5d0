"""How the next token is chosen from a model's logits: greedy (temperature 0) or sampled after
temperature, top-k and top-p (nucleus) filtering, as Hugging Face `generate` orders them
(temperature, then top-k, then top-p). Speculative decoding applies the same filtering to the
draft's and the target's logits, so its output follows the filtered target distribution."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from layerwise.spec.errors import LayerwiseError


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy (argmax); > 0: divide the logits by it and sample
    top_k: int = 0  # 0: no top-k cut; else keep the k most likely tokens
    top_p: float = 1.0  # 1: no nucleus cut; else the smallest set whose probability reaches top_p

    def __post_init__(self):
        if not self.temperature >= 0:
            raise LayerwiseError(f"--temperature must be >= 0 (0: greedy), got {self.temperature}")
        if self.top_k < 0:
            raise LayerwiseError(f"--top-k must be >= 0 (0: off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise LayerwiseError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.greedy and (self.top_k or self.top_p < 1):
            raise LayerwiseError("--top-k/--top-p apply to sampling: give a --temperature > 0 with them "
                                 "(temperature 0 is greedy decoding)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def probabilities(logits: torch.Tensor, s: Sampling) -> torch.Tensor:
    """(..., V) logits -> (..., V) fp32 probabilities after temperature, top-k and top-p. Greedy: the
    one-hot of the argmax (the distribution greedy decoding draws from)."""
    logits = logits.float()
    if s.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits / s.temperature
    if s.top_k and s.top_k < logits.shape[-1]:
        kth = logits.topk(s.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if s.top_p < 1:
        sorted_p, order = probs.sort(-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # probability of the tokens ranked above each one
        sorted_p = sorted_p.masked_fill(before >= s.top_p, 0.0)  # the most likely token always stays
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def draw(probs: torch.Tensor, gen: torch.Generator | None) -> int:
    """One token id from a (V,) distribution (argmax when it is one-hot: no random number used)."""
    if gen is None:
        return int(probs.argmax())
    return int(torch.multinomial(probs, 1, generator=gen))
