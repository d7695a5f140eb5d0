"""Device memory beyond tensors: the CUDA context and the caching allocator's reserve, reported
apart from tensor bytes and named as estimates (no GPU here to measure them).

* CUDA context (driver, kernels of torch/cuBLAS/cuDNN loaded at init): roughly 0.3-1.3 GB, growing
  with the GPU generation, the driver and the libraries loaded. Hugging Face measured **1343 MB**
  with `torch.ones((1, 1)).to("cuda")` on a V100 16 GB (Transformers docs "Model training
  anatomy"; memory_flops_facts.md §3). Lazy module loading (CUDA >= 11.7, CUDA_MODULE_LOADING=LAZY,
  the default since torch 2.x) brings it down to a few hundred MB.
* Allocator caching/fragmentation: `max_memory_reserved - max_memory_allocated`; the caching
  allocator rounds blocks (512 B small / 2 MiB large pools) and keeps freed blocks; a fraction of
  the tensor peak is the usual estimate (here 10%, a stated assumption, set `cache_fraction`).
"""
from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20
# HF's "1343 MB" is pynvml `info.used // 1024**2`, i.e. MiB (memory_flops_facts.md §3)
HF_V100_CONTEXT_BYTES = 1343 * MIB
LAZY_CONTEXT_BYTES = 300 * MIB  # lower end: lazy module loading (an estimate)


@dataclass(frozen=True)
class DeviceOverhead:
    cuda_context: int
    allocator_cache: int

    @property
    def total(self) -> int:
        return self.cuda_context + self.allocator_cache


def device_overhead_bytes(tensor_peak_bytes: int, *, device: str = "cuda", lazy_loading: bool = False,
                          cache_fraction: float = 0.10) -> DeviceOverhead:
    """Estimated overhead on a device whose tensors peak at `tensor_peak_bytes` (0 on the CPU)."""
    if device != "cuda":
        return DeviceOverhead(0, 0)
    context = LAZY_CONTEXT_BYTES if lazy_loading else HF_V100_CONTEXT_BYTES
    return DeviceOverhead(context, int(tensor_peak_bytes * cache_fraction))
