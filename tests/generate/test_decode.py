"""Plain and speculative decoding on built (untrained) decoder LMs: greedy speculative output is the
plain greedy output token for token, whatever the draft; sampled speculative output follows the
target's distribution (Leviathan et al. 2023, Theorem 3.5), not the draft's."""
from __future__ import annotations

import itertools

import pytest
import torch

from layerwise.generate.decode import _verify, plain, speculative
from layerwise.generate.sampling import Sampling, probabilities
from layerwise.presets import get_preset

GREEDY = Sampling()


def lm(preset: str, seed: int, sharpen: float = 1.0, **kw):
    """An untrained LM; `sharpen` scales the final norm's gain, so the logits are far from uniform."""
    torch.manual_seed(seed)
    module = get_preset(preset, **kw).build().eval()
    with torch.no_grad():
        module.final_norm.weight.mul_(sharpen)
    return module


GPT = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_seq=96)
LLAMA = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq=96)  # rope + GQA


@pytest.mark.parametrize("preset,kw", [("tiny-gpt", GPT), ("llama-2-7b", LLAMA)])
@pytest.mark.parametrize("lookahead", [1, 3, 8])
def test_greedy_speculative_is_plain_greedy(preset, kw, lookahead):
    target = lm(preset, 0, 8.0, **kw)
    small = dict(kw, n_layers=1, d_model=16, d_ff=32, n_heads=2, **({"n_kv_heads": 1} if "n_kv_heads" in kw else {}))
    draft = lm(preset, 1, 8.0, **small)
    prompt = [5, 17, 3, 40, 2]
    base = plain(target, prompt, 40, GREEDY)
    spec = speculative(target, draft, prompt, 40, lookahead, GREEDY)
    assert spec.tokens == base.tokens
    assert len(spec.tokens) == 40 and base.target_calls == 40
    assert 0 <= spec.accepted <= spec.drafted
    # every round emits its kept drafts plus one target token
    assert spec.accepted + spec.rounds == 40 and spec.target_calls == spec.rounds


def test_greedy_plain_is_argmax_of_the_full_forward():
    """The KV-cached decode continues the text as recomputing the whole prefix each step would."""
    target = lm("tiny-gpt", 0, 8.0, **GPT)
    prompt, out = [1, 2, 3], []
    with torch.no_grad():
        for _ in range(12):
            out.append(int(target(torch.tensor([prompt + out]))[0, -1].argmax()))
    assert list(plain(target, prompt, 12, GREEDY).tokens) == out


def test_a_draft_equal_to_the_target_is_always_accepted():
    target = lm("tiny-gpt", 0, 8.0, **GPT)
    for s in (GREEDY, Sampling(temperature=1.0)):
        spec = speculative(target, target, [3, 4], 30, 4, s, seed=1)
        assert spec.accepted == spec.drafted > 0  # p = q: min(1, p/q) = 1 every time


def test_speculative_sampling_follows_the_target_distribution():
    """Two new tokens, 3,000 seeds: the joint frequencies match the target's exact p(x1) p(x2 | x1)
    (computed by enumeration), while the draft's own distribution is far from it."""
    kw = dict(GPT, vocab_size=4)
    target, draft = lm("tiny-gpt", 0, 30.0, **kw), lm("tiny-gpt", 7, 30.0, **dict(kw, n_layers=1))
    s, prompt = Sampling(temperature=1.0), [1, 2]

    def exact(module):
        with torch.no_grad():
            p1 = probabilities(module(torch.tensor([prompt]))[0, -1], s)
            table = {}
            for a, b in itertools.product(range(4), repeat=2):
                p2 = probabilities(module(torch.tensor([prompt + [a]]))[0, -1], s)
                table[(a, b)] = float(p1[a] * p2[b])
        return table

    want, drafts = exact(target), exact(draft)
    n, counts = 3000, dict.fromkeys(want, 0)
    for seed in range(n):
        counts[speculative(target, draft, prompt, 2, 2, s, seed=seed).tokens] += 1
    assert max(abs(counts[k] / n - want[k]) for k in want) < 0.03
    assert max(abs(drafts[k] - want[k]) for k in want) > 0.1  # so the check above can fail


def test_verify_rejection_rule_on_one_position():
    """The emitted token of a one-draft round is distributed as p for a q far from it (20,000 draws)."""
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.05, 0.15, 0.3, 0.5])
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    ps = torch.stack([p, torch.tensor([0.25] * 4)])
    for _ in range(20_000):
        d = int(torch.multinomial(q, 1, generator=gen))
        kept, nxt = _verify(ps, [q], [d], gen)
        counts[d if kept else nxt] += 1
    assert torch.allclose(counts / counts.sum(), p, atol=0.015)
