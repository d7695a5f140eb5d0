"""A small, readable training loop for compression: fine-tuning after pruning, and distillation.

Distillation loss (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network", sec. 2):
  alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)
The T^2 keeps the soft-target gradients on the same scale as the hard ones when T changes.
alpha = 0 is plain training, so the "same spec trained alone" baseline runs through the same loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from layerwise.spec.errors import LayerwiseError


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    epochs: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0  # the same seed gives the student and its baseline the same init and batch order
    temperature: float = 4.0  # distillation T: > 1 softens the teacher's distribution
    alpha: float = 0.0  # weight of the soft-target term; 0 = no teacher

    def __post_init__(self):
        if self.temperature <= 0:
            raise LayerwiseError(f"distill: temperature must be > 0, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise LayerwiseError(f"distill: alpha must be in [0, 1], got {self.alpha}")
        if self.epochs < 0:
            raise LayerwiseError(f"epochs must be >= 0, got {self.epochs}")


def distill_loss(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temperature: float, alpha: float) -> torch.Tensor:
    """s, t: logits (N, C) (LM logits flattened to tokens); y: class ids (N,)."""
    hard = F.cross_entropy(s, y)
    if alpha == 0:
        return hard
    T = temperature
    soft = F.kl_div(F.log_softmax(s / T, dim=-1), F.log_softmax(t / T, dim=-1), log_target=True,
                    reduction="batchmean") * T * T
    return alpha * soft + (1 - alpha) * hard


def _logits_targets(out: torch.Tensor, x: torch.Tensor, y, task: str):
    """Classify: (B, C) logits and y. LM: (B*S, V) against y, the next tokens (B, S) as make_data
    gives them; without y, the inputs shifted by one: (B*(S-1), V)."""
    if task == "lm":
        if y is not None:
            return out.reshape(-1, out.shape[-1]), y.reshape(-1)
        return out[:, :-1].reshape(-1, out.shape[-1]), x[:, 1:].reshape(-1)
    return out, y


def train_loop(student: nn.Module, loader, config: FinetuneConfig, *, task: str = "classify",
               teacher: nn.Module | None = None, on_batch=None) -> nn.Module:
    """Train `student` in place for config.epochs over `loader` ((x, y) or x batches); on_batch()
    (progress) after each batch."""
    if config.alpha > 0 and teacher is None:
        raise LayerwiseError("distill: alpha > 0 needs a teacher")
    torch.manual_seed(config.seed)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=config.lr,
                            weight_decay=config.weight_decay)
    if teacher is not None:
        teacher.eval()
    student.train()
    for _ in range(config.epochs):
        for batch in loader:
            x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
            s, target = _logits_targets(student(x), x, y, task)
            t = None
            if teacher is not None and config.alpha > 0:
                with torch.no_grad():
                    t, _ = _logits_targets(teacher(x), x, y, task)
            loss = distill_loss(s, t, target, config.temperature, config.alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if on_batch is not None:
                on_batch()
    return student.eval()


@torch.no_grad()
def accuracy(module: nn.Module, loader, task: str = "classify") -> float:
    """Classify: accuracy in [0, 1]. LM: perplexity (exp of the mean token cross-entropy)."""
    module.eval()
    right = total = 0
    nll = 0.0
    for batch in loader:
        x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        out, target = _logits_targets(module(x), x, y, task)
        if task == "lm":
            nll += float(F.cross_entropy(out.float(), target, reduction="sum"))
        else:
            right += int((out.argmax(-1) == target).sum())
        total += int(target.numel())
    if task == "lm":
        return float(torch.exp(torch.tensor(nll / max(total, 1))))
    return right / max(total, 1)
