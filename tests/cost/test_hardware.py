"""GPU catalog lookups, and its numbers against what papers used (memory_flops_facts.md §4, §6)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from layerwise.cost.hardware import CATALOG, get_gpu
from layerwise.cost.overhead import HF_V100_CONTEXT_BYTES, device_overhead_bytes
from layerwise.spec.errors import WorkloadError


def test_required_gpus_present_with_sources():
    for name in ("v100-sxm2-16gb", "v100-sxm2-32gb", "a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie",
                 "h200", "l4", "a10g", "rtx-3090", "rtx-4090"):
        gpu = CATALOG[name]
        assert gpu.source and gpu.memory_bytes > 0 and gpu.bandwidth > 0 and "fp32" in gpu.dtypes


def test_a100_peak_is_the_312_tflops_the_papers_use():
    # Korthikanti Table 5 and Megatron-LM Table 1 take A100 peak = 312 TFLOP/s (140 = 45%)
    assert get_gpu("A100 80GB").peak_flops("bf16") == 312 * 10**12
    assert round(140e12 / get_gpu("a100").peak_flops("fp16"), 2) == 0.45


def test_dense_peaks_are_ordered_by_precision():
    for gpu in CATALOG.values():
        peaks = dict(gpu.tflops)
        half = peaks.get("bf16", peaks.get("fp16"))
        assert half > peaks["fp32"]
        if "fp8" in peaks:
            assert peaks["fp8"] == pytest.approx(2 * half, rel=0.01)


def test_lookup_aliases_and_did_you_mean():
    assert get_gpu("H100").name == "h100-sxm"
    assert get_gpu("rtx 4090").name == "rtx-4090"
    with pytest.raises(WorkloadError, match="did you mean 'h100-sxm'"):
        get_gpu("h100-sxn")
    with pytest.raises(WorkloadError, match="no bf16"):
        get_gpu("v100").peak_flops("bf16")


def test_device_overhead_reported_apart():
    o = device_overhead_bytes(10 * 2**30)
    assert o.cuda_context == HF_V100_CONTEXT_BYTES == 1343 * 2**20  # HF, V100 (facts §3)
    assert o.allocator_cache == 2**30 and o.total == o.cuda_context + 2**30
    assert device_overhead_bytes(10, device="cpu").total == 0


def test_cost_package_never_imports_torch():
    code = ("import sys, importlib\n"
            "for m in ['precision','optimizers','model_states','parallel','korthikanti','kv_cache',"
            "'inference','hardware','time','overhead']:\n"
            "    importlib.import_module('layerwise.cost.' + m)\n"
            "import layerwise.report.time\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
