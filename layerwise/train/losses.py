"""Losses and penalties: cross-entropy (label smoothing, class weights), focal loss, mixup, L1/L2.

Shapes: classify logits (B, K), targets (B,); lm logits (B, S, V), targets (B, S) -> flattened to
(B*S, V) / (B*S,). Every loss is a mean over targets, so micro-batches of equal size can be
averaged into one larger batch (gradient accumulation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from layerwise.spec.errors import LayerwiseError
from layerwise.train.config import TrainConfig


def focal_loss(logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0, alpha: float = 1.0,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Lin et al. 2017 (arXiv:1708.02002), multi-class: mean of -alpha (1 - p_t)^gamma log p_t.
    gamma = 0 and alpha = 1 is cross-entropy."""
    logp = F.log_softmax(logits.float(), dim=-1)
    logp_t = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (N,)
    p_t = logp_t.exp()
    loss = -alpha * (1.0 - p_t).pow(gamma) * logp_t
    if weight is not None:
        w = weight[target]
        return (loss * w).sum() / w.sum()
    return loss.mean()


class LossFn:
    """The configured training loss; `(logits, target) -> scalar`."""

    def __init__(self, cfg: TrainConfig, task: str, class_counts: list[int] | None = None):
        self.cfg, self.task = cfg, task
        self.weight = None
        _check_task(cfg, task)
        if cfg.class_weights == "balanced" or cfg.balance == "class-weights":
            if task != "classify" or not class_counts:
                raise LayerwiseError("class_weights 'balanced' (--balance class-weights) applies to classification")
            counts = torch.tensor(class_counts, dtype=torch.float32).clamp_min(1.0)
            self.weight = counts.sum() / (len(counts) * counts)  # n / (k * count_c)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = flatten(logits, target)
        if self.task == "regress":  # (B, n_targets) predictions against standardised targets
            f = F.mse_loss if self.cfg.loss == "mse" else F.l1_loss
            return f(logits.float(), target)
        w = self.weight.to(logits.device) if self.weight is not None else None
        if self.cfg.loss == "focal":
            return focal_loss(logits, target, gamma=self.cfg.focal_gamma, alpha=self.cfg.focal_alpha, weight=w)
        return F.cross_entropy(logits.float(), target, weight=w, label_smoothing=self.cfg.label_smoothing)


def _check_task(cfg: TrainConfig, task: str) -> None:
    """The loss and its options against the task, in one line each."""
    if task == "regress":
        if cfg.loss not in ("mse", "mae"):
            raise LayerwiseError(f"loss {cfg.loss!r} is for classification; a regression model trains with --loss mse or mae")
        for name, on in (("label_smoothing", cfg.label_smoothing), ("class_weights", cfg.class_weights != "none")):
            if on:
                raise LayerwiseError(f"{name} applies to classification, not to regression")
    elif task == "mlm" and cfg.loss == "focal":
        raise LayerwiseError("loss 'focal' applies to classification and lm; masked-LM trains with ce")
    elif cfg.loss in ("mse", "mae"):
        raise LayerwiseError(f"loss {cfg.loss!r} is for regression; this model's task is {task!r} (use ce or focal)")


def flatten(logits: torch.Tensor, target: torch.Tensor):
    """lm (B, S, V), (B, S) -> (B*S, V), (B*S,); classify unchanged."""
    if logits.ndim == 3:
        return logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
    return logits, target


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator | None = None):
    """Zhang et al. 2018 (arXiv:1710.09412): x' = lam x + (1 - lam) x[perm]; returns x', y, y[perm], lam.
    lam ~ Beta(alpha, alpha) is drawn from torch's RNG, so a resumed run draws the same values."""
    if not torch.is_floating_point(x):
        raise LayerwiseError("mixup needs float inputs (images or features), not token ids")
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0])
    return lam * x + (1.0 - lam) * x[perm], y, y[perm], lam


def penalty(params: list[torch.Tensor], l1: float, l2: float) -> torch.Tensor | float:
    """l1 * sum |w| + l2 * sum w^2 over the given (weight-decayed) parameters."""
    total = 0.0
    if l1:
        total = total + l1 * sum(p.abs().sum() for p in params)
    if l2:
        total = total + l2 * sum(p.pow(2).sum() for p in params)
    return total
