"""Peak memory of one training step: predicted by the cost reading (if it is importable) and
measured on the first steps. CUDA: torch's allocator peak. CPU: the bytes of the parameters and
buffers plus the growth of the process's resident set over its size just before the first step,
sampled where the peak sits (start of backward, end of the optimizer step). RSS also holds allocator
caching and kernels loaded on first use, so on CPU this is an upper estimate, named as such."""
from __future__ import annotations

import os

import torch

from layerwise.spec.model import Model
from layerwise.train.config import TrainConfig


def predicted_peak(model: Model, cfg: TrainConfig) -> int | None:
    """layerwise.cost's training-memory reading for this workload, or None where it is not there."""
    try:
        from layerwise.cost.memory import training_memory  # written by the cost engineers
        from layerwise.workload import Workload

        precision = {"fp32": "fp32", "bf16-mixed": "bf16-mixed", "fp16-mixed": "fp16-mixed"}[cfg.precision]
        w = Workload(batch=cfg.batch_size, precision=precision, optimizer=cfg.optimizer,
                     checkpointing="full" if cfg.checkpointing else "none", grad_accum=cfg.grad_accum,
                     device="cuda" if cfg.device.startswith("cuda") else "cpu")
        report = training_memory(model, w)
        return int(getattr(report, "peak_bytes"))
    except Exception:  # the reading is optional feedback; training never depends on it
        return None


def rss_bytes() -> int:
    """Current resident set size from /proc (0 where that does not exist)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class PeakSampler:
    """Max of the samples taken, relative to a baseline taken before the model is built."""

    def __init__(self, device: str):
        self.device = device
        self.cuda = device.startswith("cuda")
        self.base, self.weights, self.peak = 0, 0, 0

    def start(self, module: torch.nn.Module) -> None:
        """Call just before the first step: the baseline, and the weights that are already resident."""
        self.weights = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
        self.base = rss_bytes()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def sample(self) -> None:
        if not self.cuda:
            self.peak = max(self.peak, rss_bytes() - self.base)

    def measured(self) -> int:
        return int(torch.cuda.max_memory_allocated()) if self.cuda else self.weights + max(0, self.peak)
