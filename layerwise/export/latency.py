"""Inference latency on CPU: eager PyTorch, torch.compile (inductor; needs the C compiler, gcc is
present) and onnxruntime, measured the same way: warm-up calls, then `iters` timed calls, p50/p90."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Latency:
    runtime: str  # eager | compiled | onnxruntime
    p50_ms: float
    p90_ms: float


def compile_module(module: nn.Module) -> nn.Module:
    """torch.compile for inference (default inductor backend, dynamic=False: one fixed shape)."""
    return torch.compile(module.eval(), dynamic=False)


def _percentiles(fn, iters: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.9))]


def measure_latency(module: nn.Module, x: torch.Tensor, onnx_path=None, *, iters: int = 50, warmup: int = 5,
                    compiled: bool = True) -> list[Latency]:
    module = module.eval()
    out = []
    with torch.no_grad():
        out.append(Latency("eager", *_percentiles(lambda: module(x), iters, warmup)))
        if compiled:
            cm = compile_module(module)
            out.append(Latency("compiled", *_percentiles(lambda: cm(x), iters, warmup)))
    if onnx_path is not None:
        from layerwise.export.onnx import ort_session

        sess = ort_session(onnx_path, threads=torch.get_num_threads())  # same thread budget as torch
        feed = {"input": x.numpy()}
        out.append(Latency("onnxruntime", *_percentiles(lambda: sess.run(None, feed), iters, warmup)))
    return out
