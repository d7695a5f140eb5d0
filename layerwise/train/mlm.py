"""Masked-language-model pre-training of encoders (task 'mlm'), BERT's recipe with RoBERTa's dynamic
masking: every time a sequence is fed, 15% of its positions are chosen anew (Liu et al. 2019,
arXiv:1907.11692, sec. 4.1); of those, 80% become [MASK], 10% a random token, 10% stay (Devlin et
al. 2018, arXiv:1810.04805, sec. 3.1 and appendix C.2). The loss is the cross-entropy at the chosen
positions only (targets -100 elsewhere, F.cross_entropy's ignore_index).

[MASK] is the id after the tokenizer's last one, so the model's vocab_size must exceed the
tokenizer's (byte-level text: >= 257). Training draws from torch's global RNG, which checkpoints
store (a resumed run masks as an uninterrupted one); evaluation masks with its own generator of a
fixed seed, so every evaluation scores the same positions.
"""
from __future__ import annotations

import torch

MASK_P = 0.15  # share of positions predicted
P_MASK, P_RANDOM = 0.8, 0.1  # of those: replaced by [MASK], by a random token (the rest unchanged)
IGNORE = -100  # F.cross_entropy's default ignore_index
EVAL_SEED = 0


def mask_tokens(ids: torch.Tensor, mask_id: int, generator: torch.Generator | None = None):
    """(B, S) token ids -> (inputs, targets): inputs with the chosen positions masked or replaced,
    targets the original ids there and IGNORE elsewhere. Random tokens are drawn from 0..mask_id-1."""
    g = generator
    dev = ids.device if g is None else g.device  # the global RNG of the batch's device, or the generator's
    chosen = (torch.rand(ids.shape, generator=g, device=dev) < MASK_P).to(ids.device)
    how = torch.rand(ids.shape, generator=g, device=dev).to(ids.device)
    random_ids = torch.randint(0, mask_id, ids.shape, generator=g, device=dev).to(ids.device)
    inputs = torch.where(chosen & (how < P_MASK), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (how >= P_MASK) & (how < P_MASK + P_RANDOM), random_ids, inputs)
    targets = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return inputs, targets


class Masker:
    """The training loop's x, y -> masked x, targets (y holds the same ids as x for task 'mlm')."""

    def __init__(self, mask_id: int, generator: torch.Generator | None = None):
        self.mask_id, self.generator = mask_id, generator

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        return mask_tokens(y, self.mask_id, self.generator)


def eval_masker(mask_id: int) -> Masker:
    return Masker(mask_id, torch.Generator().manual_seed(EVAL_SEED))
