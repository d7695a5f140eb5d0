"""Process and device memory readers: Linux /proc for RSS, torch.cuda for GPUs.

RSS reflects tensor memory only if freed memory goes back to the OS. glibc keeps small frees in its
arenas and raises its mmap threshold dynamically (up to 32 MiB) after large frees, so a freed
16 MiB tensor may stay resident. `CLEAN_MALLOC_ENV` pins the threshold so every allocation of
64 KiB or more is its own mmap, returned on free; `run_real.py` starts the real step in a
subprocess with it (glibc reads these variables at process start only).
"""
from __future__ import annotations

import os
from pathlib import Path

CLEAN_MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "65536",  # fixed: disables glibc's dynamic threshold
    "MALLOC_TRIM_THRESHOLD_": "0",  # give heap tops back at once
    "MALLOC_ARENA_MAX": "2",  # two cores: few arenas, less retained slack
}


def malloc_settings() -> str:
    """The allocator variables in force in this process, for the record."""
    keys = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX")
    set_ = [f"{k}={os.environ[k]}" for k in keys if k in os.environ]
    return " ".join(set_) or "glibc defaults (dynamic mmap threshold)"


def _status_bytes(key: str) -> int | None:
    path = Path("/proc/self/status")
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    return None


def rss_bytes() -> int | None:
    return _status_bytes("VmRSS")


def hwm_bytes() -> int | None:
    """Peak RSS since process start or the last `reset_hwm()`."""
    return _status_bytes("VmHWM")


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cuda_reset(device) -> None:
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)


def cuda_peaks(device) -> tuple[int, int]:
    """(max_memory_allocated, max_memory_reserved) since the last `cuda_reset`."""
    import torch

    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)


def available_bytes(device: str = "cpu") -> int | None:
    """Memory a new allocation can take now: MemAvailable of /proc/meminfo on CPU, free device memory
    on CUDA; None where the system does not say."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(device)[0]) if torch.cuda.is_available() else None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
