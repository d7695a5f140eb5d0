"""Plain and speculative decoding of one sequence (batch 1) with KV caches.

Speculative decoding (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative
Decoding", Algorithm 1; Chen et al. 2023, "Accelerating LLM Decoding with Speculative Sampling",
Algorithm 2): a small draft model proposes K tokens one at a time, drawing d_i from its filtered
distribution q_i; the target scores all of them in one forward of K + 1 positions, giving p_1..p_K+1.
d_i is kept with probability min(1, p_i(d_i) / q_i(d_i)); at the first rejection the token is drawn
from the residual norm(max(0, p_i - q_i)) and the round ends; if all K are kept, a bonus token is
drawn from p_K+1. Each emitted token is then distributed exactly as p (Leviathan Theorem 3.5), so
the output follows the target. Greedy decoding is the same rule with one-hot p and q: a draft token
is kept iff it is the target's argmax, else the target's argmax replaces it, so the output is the
target's plain greedy output.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from layerwise.generate.cache import CachedLM
from layerwise.generate.sampling import Sampling, draw, probabilities


@dataclass(frozen=True)
class Generation:
    tokens: tuple[int, ...]  # the new tokens only
    seconds: float  # wall time of the decode (prefill included)
    target_calls: int  # forward passes of the target model
    drafted: int = 0  # draft tokens proposed (speculative only)
    accepted: int = 0  # of which the target kept
    rounds: int = 0  # draft-then-verify rounds

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else float("inf")

    @property
    def acceptance_rate(self) -> float:
        """Kept / proposed draft tokens: the estimate of Leviathan's alpha."""
        return self.accepted / self.drafted if self.drafted else 0.0


def generator(s: Sampling, seed: int) -> torch.Generator | None:
    """The random stream of a sampled decode (None for greedy: no random numbers are drawn)."""
    return None if s.greedy else torch.Generator().manual_seed(seed)


@torch.inference_mode()
def plain(target: torch.nn.Module, prompt: list[int], new_tokens: int, s: Sampling, seed: int = 0) -> Generation:
    """One token per target forward: the baseline speculative decoding is measured against."""
    gen, lm = generator(s, seed), CachedLM(target, len(prompt) + new_tokens, "target")
    t0 = time.perf_counter()
    out: list[int] = []
    logits = lm.feed(list(prompt))[-1]
    for i in range(new_tokens):
        out.append(draw(probabilities(logits, s), gen))
        if i + 1 < new_tokens:
            logits = lm.feed([out[-1]])[-1]
    return Generation(tuple(out), time.perf_counter() - t0, lm.calls)


def accept(p: torch.Tensor, q: torch.Tensor, token: int, gen: torch.Generator | None) -> bool:
    """Keep a draft token drawn from q with probability min(1, p(token) / q(token))."""
    ratio = float(p[token]) / float(q[token])
    if ratio >= 1:
        return True
    if gen is None:  # greedy: p and q are one-hot, so the ratio is 0 or 1
        return False
    return float(torch.rand((), generator=gen)) < ratio


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)): what a rejected position draws from. Rejection has probability
    sum(max(0, p - q)) > 0, so this is well defined whenever it is used (p itself if rounding left
    nothing)."""
    r = (p - q).clamp_min(0)
    total = r.sum()
    return r / total if total > 0 else p


@torch.inference_mode()
def speculative(target: torch.nn.Module, draft: torch.nn.Module, prompt: list[int], new_tokens: int,
                lookahead: int, s: Sampling, seed: int = 0) -> Generation:
    """Exactly `new_tokens` tokens; the last round drafts fewer so none is wasted past the end."""
    gen = generator(s, seed)
    size = len(prompt) + new_tokens + lookahead
    big, small = CachedLM(target, size, "target"), CachedLM(draft, size, "draft")
    t0 = time.perf_counter()
    tokens, drafted, accepted, rounds = list(prompt), 0, 0, 0
    while len(tokens) - len(prompt) < new_tokens:
        k = min(lookahead, new_tokens - (len(tokens) - len(prompt)) - 1)
        proposals, qs = _propose(small, tokens, k, s, gen)
        ps = probabilities(big.catch_up(tokens, proposals)[-(k + 1):], s)  # (k + 1, V): p_1..p_k+1
        kept, nxt = _verify(ps, qs, proposals, gen)
        n = len(tokens)
        tokens += proposals[:kept] + [nxt]
        big.rewind(n + kept)  # valid: the old tokens and the kept proposals
        small.rewind(n + kept)
        drafted, accepted, rounds = drafted + k, accepted + kept, rounds + 1
    return Generation(tuple(tokens[len(prompt):]), time.perf_counter() - t0, big.calls, drafted, accepted, rounds)


def _propose(small: CachedLM, tokens: list[int], k: int, s: Sampling, gen) -> tuple[list[int], list[torch.Tensor]]:
    """k draft tokens, each drawn from the draft's filtered distribution q_i (kept for the test)."""
    proposals, qs = [], []
    if k == 0:
        return proposals, qs
    logits = small.catch_up(tokens)[-1]
    for i in range(k):
        q = probabilities(logits, s)
        proposals.append(draw(q, gen))
        qs.append(q)
        if i + 1 < k:
            logits = small.feed([proposals[-1]])[-1]
    return proposals, qs


def _verify(ps: torch.Tensor, qs: list[torch.Tensor], proposals: list[int], gen) -> tuple[int, int]:
    """(draft tokens kept, the token that follows them: a residual draw or the bonus from p_k+1)."""
    for i, (q, token) in enumerate(zip(qs, proposals)):
        if not accept(ps[i], q, token, gen):
            return i, draw(residual(ps[i], q), gen)
    return len(proposals), draw(ps[len(proposals)], gen)
