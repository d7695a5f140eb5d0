"""The typed result of one measured step, and its JSON (keys of DESIGN.md's `measure` contract)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RssStats:
    """Process resident memory around a real CPU step (Linux /proc/self/status).

    `start_bytes`: VmRSS just before the step; `peak_bytes`: VmHWM during the step (the high-water
    mark is reset through /proc/self/clear_refs first); `tracked_start_bytes`: the tracker's live
    bytes at the same moment. So `peak_bytes - (start_bytes - tracked_start_bytes)` is the RSS the
    tensors themselves reached, to compare with the tracker's peak. `malloc`: the allocator
    settings in force (they decide whether freed memory goes back to the OS)."""

    start_bytes: int
    peak_bytes: int
    tracked_start_bytes: int
    malloc: str

    @property
    def tensor_peak_bytes(self) -> int:
        return self.peak_bytes - (self.start_bytes - self.tracked_start_bytes)


@dataclass(frozen=True)
class CudaStats:
    """torch.cuda's own counters for the measured step (bytes). They include the caching
    allocator's rounding (512-byte blocks) that the tracker's raw storage bytes do not."""

    max_allocated: int
    max_reserved: int


@dataclass(frozen=True)
class StepMeasurement:
    """One steady-state step (train) or one prefill/decode (infer), measured.

    components: the seven DESIGN.md components at the peak (they sum to `peak_bytes`);
    detail: the tracker's finer categories at the peak (parameters vs buffers, inputs, ...);
    phase_peaks: the highest live bytes seen in each phase ("setup" = registered state alone);
    phase_components: the seven components at each phase's own peak (what a cost reading that
    computes every phase and takes the maximum can be checked against, phase by phase).
    """

    peak_bytes: int
    peak_phase: str
    components: dict[str, int]
    detail: dict[str, int]
    phase_peaks: dict[str, int]
    flops_forward: int
    flops_backward: int
    fake: bool
    phase_components: dict[str, dict[str, int]] = field(default_factory=dict)
    rss: RssStats | None = None
    cuda: CudaStats | None = None
    notes: tuple[str, ...] = field(default=())
    params: dict[str, int] = field(default_factory=dict)  # total, trainable, frozen, buffers (elements)
    saved_by_module: dict[str, int] = field(default_factory=dict)  # top-level child -> saved bytes
    timeline: object = None  # cost.timeline.Timeline of the step, when asked for
    cuda_allocator: object = None  # --device cuda: cost.cuda_alloc.AllocatorPeaks of the tracked storages
    # MoE models: pairs per expert (summed over the layers), dropped pairs, overflow rate, and the routing
    # ("balanced" under fake tensors, "learned" for real) of the measured forward
    routing: dict | None = None

    @property
    def device_overhead_bytes(self) -> int:
        """Allocator caching on a GPU (reserved - allocated); 0 where none was measured."""
        return self.cuda.max_reserved - self.cuda.max_allocated if self.cuda else 0

    def to_json(self) -> dict:
        out = {
            "peak_bytes": self.peak_bytes,
            "peak_phase": self.peak_phase,
            "components": dict(self.components),
            "device_overhead_bytes": self.device_overhead_bytes,
            "per_device": False,  # one process, one device: the whole model's step
            "flops": {"forward": self.flops_forward, "backward": self.flops_backward,
                      "total": self.flops_forward + self.flops_backward},
            "phase_peaks": dict(self.phase_peaks),
            "phases": {k: {"peak_bytes": self.phase_peaks[k], "components": dict(v)}
                       for k, v in self.phase_components.items()},
            "detail": dict(self.detail),
            "fake": self.fake,
        }
        if self.routing is not None:
            out["routing"] = dict(self.routing)
        if self.rss is not None:
            out["rss"] = {"start_bytes": self.rss.start_bytes, "peak_bytes": self.rss.peak_bytes,
                          "tracked_start_bytes": self.rss.tracked_start_bytes,
                          "tensor_peak_bytes": self.rss.tensor_peak_bytes, "malloc": self.rss.malloc}
        if self.cuda is not None:
            out["cuda"] = {"max_allocated": self.cuda.max_allocated, "max_reserved": self.cuda.max_reserved}
        if self.cuda_allocator is not None:  # named estimates: CUDA's caching allocator replayed
            out["cuda_allocated_bytes"] = self.cuda_allocator.allocated
            out["cuda_reserved_bytes"] = self.cuda_allocator.reserved
        if self.notes:
            out["notes"] = list(self.notes)
        if self.params:
            out["params"] = dict(self.params)
        if self.saved_by_module:
            out["saved_by_module"] = dict(self.saved_by_module)
        return out
