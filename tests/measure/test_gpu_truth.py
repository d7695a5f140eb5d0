"""bench/gpu_truth.py without a GPU says so and exits 0 (with one, its quick grid runs to the end)."""
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_truth.py"


def test_gpu_truth_without_a_gpu_prints_no_cuda_device_and_exits_0():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    if torch.cuda.is_available():
        assert "within 2%" in proc.stdout
    else:
        assert proc.stdout == "no CUDA device\n"
