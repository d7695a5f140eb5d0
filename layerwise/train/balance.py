"""--balance: remedies for an imbalanced train split (val and test stay as they are).

  class-weights  the loss weights class c by n / (k * count_c), scikit-learn's
                 compute_class_weight("balanced") (losses.LossFn applies it);
  oversample     imbalanced-learn's RandomOverSampler: minority samples repeated at random up to the
                 majority class's count;
  undersample    RandomUnderSampler: majority samples dropped at random down to the minority's count;
  smote          SMOTE (Chawla et al. 2002): new minority samples on the segments between a sample and
                 one of its k = min(5, count - 1) nearest same-class neighbours; float inputs
                 (features, or images interpolated pixel by pixel), never token ids.
Every sampler is seeded with the run's seed, so the resampled split, and a resumed run, are the same
every time.
"""
from __future__ import annotations

import numpy as np
import torch

from layerwise.spec.errors import LayerwiseError
from layerwise.train.config import TrainConfig
from layerwise.train.data import Data, loader

RESAMPLERS = ("oversample", "undersample", "smote")


def rebalance(data: Data, cfg: TrainConfig, rank: int = 0, world: int = 1) -> Data:
    """`data` with its train loader over the resampled train split (unchanged without a resampler)."""
    if cfg.balance == "none":
        return data
    info = data.info
    if info.task != "classify":
        raise LayerwiseError(f"--balance {cfg.balance} applies to classification; this model's task is {info.task!r}")
    info.warnings = [w for w in info.warnings if "imbalanced" not in w]
    if cfg.balance not in RESAMPLERS:
        return data
    x, y = data.train.dataset.x, data.train.dataset.y
    x, y = resample(x, y, cfg.balance, cfg.seed, info.class_names)
    info.sizes["train_balanced"] = len(y)
    info.class_counts["train_balanced"] = torch.bincount(y, minlength=info.n_classes).tolist()
    if len(y) // world < cfg.batch_size:
        raise LayerwiseError(f"--balance {cfg.balance} leaves {len(y)} training samples, fewer than one batch of "
                             f"{cfg.batch_size} per process; lower --batch")
    data.train = loader(x, y, cfg.batch_size, cfg.seed, True, rank, world)
    return data


def resample(x: torch.Tensor, y: torch.Tensor, how: str, seed: int, class_names: list[str]):
    """(x, y) resampled by imbalanced-learn -> (x', y') with the same sample shape and dtypes."""
    present = torch.bincount(y)
    present = present[present > 0]
    if len(present) < 2:
        raise LayerwiseError(f"--balance {how}: the train split holds one class only")
    if how == "smote":
        return _smote(x, y, seed, class_names)
    from imblearn.over_sampling import RandomOverSampler
    from imblearn.under_sampling import RandomUnderSampler

    sampler = (RandomOverSampler if how == "oversample" else RandomUnderSampler)(random_state=seed)
    ids = np.arange(len(y)).reshape(-1, 1)  # resample indices: works for any sample (image, tokens)
    sampler.fit_resample(ids, y.numpy())
    keep = torch.from_numpy(np.asarray(sampler.sample_indices_, dtype=np.int64))
    return x[keep].contiguous(), y[keep].contiguous()


def _smote(x: torch.Tensor, y: torch.Tensor, seed: int, class_names: list[str]):
    from imblearn.over_sampling import SMOTE

    if not torch.is_floating_point(x):
        raise LayerwiseError("--balance smote interpolates float inputs (features, images); this model takes token "
                             "ids: use oversample, undersample or class-weights")
    counts = torch.bincount(y)
    smallest = int(counts[counts > 0].min())
    if smallest < 2:
        c = int(torch.nonzero(counts == smallest)[0])
        raise LayerwiseError(f"--balance smote needs 2 training samples of every class; class {class_names[c]!r} "
                             f"has {smallest}")
    flat = x.reshape(len(x), -1).numpy()
    xr, yr = SMOTE(random_state=seed, k_neighbors=min(5, smallest - 1)).fit_resample(flat, y.numpy())
    xs = torch.from_numpy(np.ascontiguousarray(xr, dtype=np.float32)).view(len(yr), *x.shape[1:])
    return xs.to(x.dtype), torch.from_numpy(np.asarray(yr, dtype=np.int64))
