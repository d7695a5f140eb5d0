"""Eager vs torch.compile vs onnxruntime latency on CPU, p50/p90 and ratios to eager, from one run.
Run: .venv/bin/python bench/latency.py  (torch.compile's first call takes tens of seconds)."""
from __future__ import annotations

import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "compress"))
import _compress_models as models  # noqa: E402

from layerwise.export.latency import measure_latency  # noqa: E402
from layerwise.export.onnx import export_onnx  # noqa: E402
from layerwise.report.compress import render_lines  # noqa: E402

CASES = {
    "digits CNN": (lambda: models.cnn(16, 32), lambda b: torch.randn(b, 1, 8, 8), False),
    "digits ViT": (lambda: models.vit(128, 2), lambda b: torch.randn(b, 1, 8, 8), False),
    "tiny GPT": (lambda: models.tiny_gpt(), lambda b: torch.randint(0, 64, (b, 32)), True),
}


def main():
    torch.set_num_threads(2)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (make, gen, seq) in CASES.items():
            module = make().build().eval()
            path = export_onnx(module, gen(2), f"{tmp}/m.onnx", seq_axis=seq)
            res = measure_latency(module, gen(32), path, iters=100, warmup=10)
            eager = res[0].p50_ms
            lines.append(f"{name} (batch 32): " + "; ".join(
                f"{r.runtime} p50 {r.p50_ms:.3f} ms p90 {r.p90_ms:.3f} ms ({r.p50_ms / eager:.2f}x eager)" for r in res))
    render_lines(lines)


if __name__ == "__main__":
    main()
