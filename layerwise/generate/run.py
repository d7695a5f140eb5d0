"""`layerwise generate` as a function: load the run(s), encode the prompt, decode, and with a draft
model decode twice (plain, then speculative) so the speed-up is measured on this machine."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from layerwise.generate.decode import Generation, plain, speculative
from layerwise.generate.sampling import Sampling
from layerwise.generate.text import RunText, run_text
from layerwise.spec.errors import LayerwiseError


@dataclass(frozen=True)
class GenerateResult:
    prompt_ids: tuple[int, ...]
    text: str  # the new tokens, decoded
    plain: Generation  # plain decoding with the target
    speculative: Generation | None  # with --draft
    lookahead: int

    @property
    def output(self) -> Generation:
        return self.speculative or self.plain

    @property
    def speedup(self) -> float | None:
        """Plain seconds / speculative seconds for the same number of new tokens."""
        return self.plain.seconds / self.speculative.seconds if self.speculative else None


def generate(run_dir: str | Path, prompt: str, *, new_tokens: int, sampling: Sampling, seed: int = 0,
             draft_dir: str | Path | None = None, lookahead: int = 4, which: str = "best") -> GenerateResult:
    from layerwise.train.run import load_run

    if new_tokens < 1:
        raise LayerwiseError(f"--new-tokens must be at least 1, got {new_tokens}")
    if lookahead < 1:
        raise LayerwiseError(f"--lookahead must be at least 1, got {lookahead}")
    text = run_text(run_dir)
    ids = text.encode(prompt)
    if not ids:
        raise LayerwiseError("--prompt is empty: give at least one token of text to continue")
    target = load_run(run_dir, which)
    _check_length(target.model, len(ids), new_tokens, f"{run_dir}")
    if draft_dir is None:
        _warm(target.module, ids)
        out = plain(target.module, ids, new_tokens, sampling, seed)
        return GenerateResult(tuple(ids), text.decode(out.tokens), out, None, lookahead)
    _same_tokenizer(text, run_text(draft_dir), draft_dir, run_dir)
    draft = load_run(draft_dir, which)
    _check_length(draft.model, len(ids), new_tokens, f"--draft {draft_dir}")  # drafts stop at the last position
    _same_vocab(target.model, draft.model, run_dir, draft_dir)
    _warm(target.module, ids)
    _warm(draft.module, ids)
    base = plain(target.module, ids, new_tokens, sampling, seed)
    spec = speculative(target.module, draft.module, ids, new_tokens, lookahead, sampling, seed)
    return GenerateResult(tuple(ids), text.decode(spec.tokens), base, spec, lookahead)


@torch.inference_mode()
def _warm(module, ids: list[int]) -> None:
    """One untimed forward, so the timed decodes do not pay for first-call set-up."""
    module(torch.tensor([ids], dtype=torch.long))


def _check_length(model, prompt: int, new_tokens: int, where: str) -> None:
    body = model.body
    if getattr(body, "type_name", "") != "decoder_lm":
        raise LayerwiseError(f"{where}: model {model.name!r} is not a decoder language model (decoder_lm)")
    if prompt + new_tokens > body.max_seq:
        raise LayerwiseError(f"{where}: prompt ({prompt} tokens) + --new-tokens ({new_tokens}) exceed the model's "
                             f"max_seq {body.max_seq}")


def _same_tokenizer(a: RunText, b: RunText, draft_dir, run_dir) -> None:
    if a != b:
        raise LayerwiseError(f"--draft {draft_dir}: its tokenizer ({b.kind}) differs from {run_dir}'s ({a.kind}); "
                             f"draft and target must share one vocabulary")


def _same_vocab(target, draft, run_dir, draft_dir) -> None:
    if target.body.vocab_size != draft.body.vocab_size:
        raise LayerwiseError(f"--draft {draft_dir}: vocab_size {draft.body.vocab_size} differs from {run_dir}'s "
                             f"{target.body.vocab_size}; draft and target must share one vocabulary")
