"""Eager vs torch.compile vs onnxruntime latency on CPU, p50/p90 and ratios to eager, from one run.
Run: .venv/bin/python bench/latency.py  (torch.compile's first call takes tens of seconds)."""
from __future__ import annotations

import tempfile

import torch


from layerwise.export.latency import measure_latency  # noqa: E402
from layerwise.export.onnx import export_onnx  # noqa: E402
from layerwise.report.compress import render_lines  # noqa: E402

CASES = {  # preset, input maker, sequence axis dynamic
    "digits-cnn": (lambda b: torch.randn(b, 1, 8, 8), False),
    "digits-vit": (lambda b: torch.randn(b, 1, 8, 8), False),
    "text-gru": (lambda b: torch.randint(0, 256, (b, 64)), True),
    "tiny-gpt": (lambda b: torch.randint(0, 256, (b, 64)), True),
}


def main():
    torch.set_num_threads(1)  # one thread for every runtime (onnxruntime too): comparable, less noisy
    from layerwise.presets import get_preset

    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (gen, seq) in CASES.items():
            module = get_preset(name).body.build().eval()
            path = export_onnx(module, gen(2), f"{tmp}/m.onnx", seq_axis=seq)
            res = measure_latency(module, gen(32), path, iters=100, warmup=10)
            eager = res[0].p50_ms
            lines.append(f"{name} (batch 32): " + "; ".join(
                f"{r.runtime} p50 {r.p50_ms:.3f} ms p90 {r.p90_ms:.3f} ms ({r.p50_ms / eager:.2f}x eager)" for r in res))
    render_lines(lines)


if __name__ == "__main__":
    main()
