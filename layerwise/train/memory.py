"""Peak memory of one training step: predicted by the cost reading, and measured on the run's own
second step (optimizer state exists by then) by the measure reading's StorageTracker observing
it: the peak of live tensor storage, the same ground truth `layerwise verify` uses. On CUDA the
allocator's peak (`torch.cuda.max_memory_allocated`) is read instead."""
from __future__ import annotations

import torch

from layerwise.spec.model import Model
from layerwise.train.config import TrainConfig


def predicted_peak(model: Model, cfg: TrainConfig) -> int | None:
    """layerwise.cost's training-memory reading for this step, or None for a set-up it does not
    model (it names why in the WorkloadError; training never depends on the prediction)."""
    from layerwise.cost.memory import training_memory
    from layerwise.spec.errors import LayerwiseError
    from layerwise.workload import Workload

    try:
        w = Workload(batch=cfg.batch_size, precision=cfg.precision, optimizer=cfg.optimizer,
                     checkpointing="full" if cfg.checkpointing else "none", grad_accum=cfg.grad_accum,
                     device="cuda" if cfg.device.startswith("cuda") else "cpu")
        return training_memory(model, w).peak_bytes
    except LayerwiseError:
        return None


class StepMemory:
    """Measures one step: `begin(module, optimizer)` just before it, `end()` just after it."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.tracker = None

    def begin(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return
        from layerwise.measure.tracker import StorageTracker

        self.tracker = StorageTracker()
        self.tracker.register_module(module)
        self.tracker.register_optimizer(optimizer)
        self.tracker.__enter__()

    def end(self) -> int:
        if self.cuda:
            return int(torch.cuda.max_memory_allocated())
        tracker, self.tracker = self.tracker, None
        tracker.__exit__(None, None, None)
        tracker.remove_hooks()
        # "preexisting": storages made before the step and read by it without being registered,
        # i.e. the dataset tensors a batch is sliced from: data in memory, not the step's.
        return tracker.peak.total - tracker.peak.by_category.get("preexisting", 0)
