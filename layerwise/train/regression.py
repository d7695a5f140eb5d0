"""Evaluation of a regression model: MSE, MAE and R^2 in the targets' own units.

The model learns standardised targets (train/data.py: (y - mean) / std of the train split); its
predictions are mapped back with the same mean and std before the metrics, so they read in the
data's units (diabetes: disease-progression points). Definitions as scikit-learn's
mean_squared_error, mean_absolute_error and r2_score (multi-output: the uniform average)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate_regression(module: torch.nn.Module, loader, target_scale=None, *, device: str = "cpu",
                        autocast_dtype: torch.dtype | None = None, on_batch=None):
    from layerwise.train.evaluate import EvalResult

    was_training = module.training
    module.eval()
    preds, targets = [], []
    try:
        for x, y in loader:
            x = x.to(device)
            if autocast_dtype is not None:
                with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype):
                    out = module(x)
            else:
                out = module(x)
            preds.append(out.float().cpu().reshape(len(y), -1))
            targets.append(y.float().cpu().reshape(len(y), -1))
            if on_batch is not None:
                on_batch()
    finally:
        module.train(was_training)
    if not preds:
        return EvalResult(task="regress", n=0, loss=float("nan"), accuracy=None)
    p, y = torch.cat(preds).double(), torch.cat(targets).double()
    loss = float(F.mse_loss(p, y))  # what training minimises: standardised units
    if target_scale is not None:
        mean, std = (torch.tensor(v, dtype=torch.float64) for v in target_scale)
        p, y = p * std + mean, y * std + mean
    err = p - y
    ss_res = err.pow(2).sum(0)
    ss_tot = (y - y.mean(0)).pow(2).sum(0)
    r2 = torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp_min(1e-300), torch.zeros_like(ss_res))
    return EvalResult(task="regress", n=len(y), loss=loss, accuracy=None, mse=float(err.pow(2).mean()),
                      mae=float(err.abs().mean()), r2=float(r2.mean()))
