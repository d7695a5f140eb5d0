"""Training-time input transforms: image augmentation (random resized crop, horizontal flip, colour
jitter) and Gaussian input noise, applied to each training batch before the forward pass.

torchvision does not install against the pinned torch 2.13, so this is a small module on whole
batches (B, C, H, W), with torchvision's semantics and defaults where they fit 8x8-to-224 images:
  crop    RandomResizedCrop: a box of scale (0.5, 1) of the area (torchvision: 0.08; an 8x8 digit cropped to
          8% is 2 pixels) and aspect ratio in (3/4, 4/3) (log-uniform), resized back bilinearly;
  flip    RandomHorizontalFlip(p=0.5);
  jitter  ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4): factors uniform in [0.6, 1.4],
          on [0, 1] intensities (the batch is un-normalised and normalised back), saturation for RGB only.
Every draw comes from torch's global RNG, which every checkpoint stores, so a resumed run draws the
same crops, flips and noise as an uninterrupted one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from layerwise.spec.errors import LayerwiseError

from layerwise.train.config import AUGMENTS  # noqa: E402  (the names: config.py stays torch-free)
CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = 0.4


def check(kinds: tuple[str, ...], noise: float, input_kind: str) -> None:
    """One line when an option does not apply to the model's input."""
    for k in kinds:  # TrainConfig checks these too; a Transform may be built without one
        if k not in AUGMENTS:
            raise LayerwiseError(f"augment {k!r}: expected any of {', '.join(AUGMENTS)}")
    if kinds and input_kind != "image":
        raise LayerwiseError(f"--augment {','.join(kinds)} applies to image inputs; this model takes {input_kind}")
    if noise < 0 or not math.isfinite(noise):
        raise LayerwiseError(f"input_noise must be a finite std >= 0, got {noise}")
    if noise and input_kind == "tokens":
        raise LayerwiseError("--input-noise adds Gaussian noise to float inputs; this model takes token ids")


class Transform:
    """x -> the augmented, noised batch; `unit` / `back` map the data's normalisation to [0, 1] and back."""

    def __init__(self, kinds: tuple[str, ...], noise: float, normalise: str = "unit", mean=(), std=()):
        self.kinds, self.noise = tuple(kinds), noise
        self.normalise = normalise
        self.mean = torch.tensor(mean).view(1, -1, 1, 1) if mean else None
        self.std = torch.tensor(std).view(1, -1, 1, 1) if std else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if "crop" in self.kinds:
            x = random_resized_crop(x)
        if "flip" in self.kinds:
            x = random_flip(x)
        if "jitter" in self.kinds:
            x = self._back(colour_jitter(self._unit(x)))
        if self.noise:
            x = x + self.noise * torch.randn_like(x)
        return x

    def _unit(self, x):
        if self.normalise == "symmetric":
            return (x + 1.0) / 2.0
        if self.normalise == "meanstd":
            return x * self.std + self.mean
        return x

    def _back(self, x):
        if self.normalise == "symmetric":
            return x * 2.0 - 1.0
        if self.normalise == "meanstd":
            return (x - self.mean) / self.std
        return x


def random_resized_crop(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W): per sample a box of area share in CROP_SCALE and aspect in CROP_RATIO (log-uniform),
    at a uniform position, resized to (H, W) bilinearly (one affine grid per sample)."""
    b = x.shape[0]
    area = torch.empty(b).uniform_(*CROP_SCALE)
    log_r = torch.empty(b).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    ratio = log_r.exp()
    w = (area * ratio).sqrt().clamp(max=1.0)  # box width / image width
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(b) * 2 - 1) * (1 - w)  # box centre in [-1, 1] grid coordinates, inside the image
    cy = (torch.rand(b) * 2 - 1) * (1 - h)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_flip(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(x.shape[0]) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def colour_jitter(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] intensities: brightness x*b, contrast around each image's grey mean, saturation around each
    pixel's grey value (RGB); factors uniform in [1 - JITTER, 1 + JITTER]; clamped to [0, 1]."""
    b, c = x.shape[:2]
    f = torch.empty(3, b, 1, 1, 1).uniform_(1 - JITTER, 1 + JITTER)
    x = (x * f[0]).clamp(0, 1)
    grey = _grey(x)
    x = ((x - grey.mean(dim=(1, 2, 3), keepdim=True)) * f[1] + grey.mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)
    if c == 3:
        grey = _grey(x)
        x = ((x - grey) * f[2] + grey).clamp(0, 1)
    return x


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma (ITU-R 601, as torchvision's rgb_to_grayscale) or the single channel."""
    if x.shape[1] == 3:
        return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    return x.mean(dim=1, keepdim=True)
