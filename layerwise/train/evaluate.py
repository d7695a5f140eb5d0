"""evaluate(module, loader, task): loss, accuracy, per-class precision/recall/F1, macro-F1, confusion matrix;
perplexity for language models. Plain cross-entropy (no smoothing, no class weights), so numbers
compare across training recipes."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from layerwise.train.losses import flatten


@dataclass
class EvalResult:
    task: str
    n: int  # samples (classify) or predicted tokens (lm)
    loss: float  # mean cross-entropy per sample / per token (nats)
    accuracy: float | None  # top-1 (lm: next-token); None for regression
    perplexity: float | None = None  # lm: exp(loss)
    precision: list[float] = field(default_factory=list)  # classify: per class (0 where never predicted)
    recall: list[float] = field(default_factory=list)  # classify: per class (0 where absent)
    f1: list[float] = field(default_factory=list)  # classify: 2PR / (P + R) per class (0 where P + R = 0)
    macro_f1: float | None = None  # classify: the unweighted mean of f1 over the classes
    confusion: list[list[int]] = field(default_factory=list)  # [true class][predicted class] counts
    mse: float | None = None  # regress: in the targets' own units (loss: MSE of the standardised targets)
    mae: float | None = None
    r2: float | None = None  # regress: 1 - SS_res / SS_tot, averaged over the targets (scikit-learn's r2_score)

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate(module: torch.nn.Module, loader, task: str, *, n_classes: int = 0, device: str = "cpu",
             autocast_dtype: torch.dtype | None = None, on_batch=None, target_scale=None,
             mask_id: int | None = None) -> EvalResult:
    """One pass over `loader` in eval mode; the module's training flag is restored afterwards.
    on_batch() (progress) is called after each batch. target_scale (regress): the train split's
    (mean, std) per target, so that MSE/MAE/R2 are in the targets' own units. mask_id (mlm): the
    [MASK] id; the same positions are masked at every evaluation (train/mlm.py), and loss, accuracy
    and perplexity are over those positions."""
    if task == "regress":
        from layerwise.train.regression import evaluate_regression

        return evaluate_regression(module, loader, target_scale, device=device, autocast_dtype=autocast_dtype,
                                   on_batch=on_batch)
    was_training = module.training
    module.eval()
    total_loss, total_n, correct = 0.0, 0, 0
    confusion = None
    masker = None
    if task == "mlm":
        from layerwise.train.mlm import eval_masker

        masker = eval_masker(mask_id)
    try:
        for x, y in loader:
            if masker is not None:
                x, y = masker(x, y)
            x, y = x.to(device), y.to(device)
            if autocast_dtype is not None:
                with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype):
                    logits = module(x)
            else:
                logits = module(x)
            logits, target = flatten(logits.float(), y)
            total_loss += F.cross_entropy(logits, target, reduction="sum").item()
            pred = logits.argmax(-1)
            correct += (pred == target).sum().item()
            total_n += int((target != -100).sum()) if masker is not None else target.numel()
            if task == "classify":
                k = max(n_classes, logits.shape[-1])
                if confusion is None:
                    confusion = torch.zeros(k, k, dtype=torch.int64)
                confusion += torch.bincount(target.cpu() * k + pred.cpu(), minlength=k * k).view(k, k)
            if on_batch is not None:
                on_batch()
    finally:
        module.train(was_training)
    if total_n == 0:
        return EvalResult(task=task, n=0, loss=float("nan"), accuracy=float("nan"))
    loss = total_loss / total_n
    result = EvalResult(task=task, n=total_n, loss=loss, accuracy=correct / total_n)
    if task in ("lm", "mlm"):
        result.perplexity = math.exp(min(loss, 700.0))
    elif confusion is not None:
        tp = confusion.diag().double()
        predicted, actual = confusion.sum(0).double(), confusion.sum(1).double()
        result.precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp)).tolist()
        result.recall = torch.where(actual > 0, tp / actual.clamp_min(1), torch.zeros_like(tp)).tolist()
        result.f1, result.macro_f1 = f1_scores(result.precision, result.recall)
        result.confusion = confusion.tolist()
    return result


def f1_scores(precision: list[float], recall: list[float]) -> tuple[list[float], float]:
    """Per-class F1 = 2PR / (P + R) (0 where both are 0, as scikit-learn's zero_division=0) and macro-F1
    (their unweighted mean over every class, scikit-learn's average='macro')."""
    f1 = [2 * p * r / (p + r) if p + r > 0 else 0.0 for p, r in zip(precision, recall)]
    return f1, sum(f1) / len(f1) if f1 else 0.0
