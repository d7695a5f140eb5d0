"""ONNX export with onnxruntime parity.

Exporter: the legacy TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`). In torch
2.13 the default dynamo exporter (onnxscript) also works for these models, but it is slower to run
and its dynamic shapes need torch.export's Dim constraints to hold (a learned position table bounds
the sequence), while the legacy exporter takes `dynamic_axes` directly. Batch is dynamic for every
model; the sequence axis too for token and sequence inputs.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from layerwise.spec.errors import LayerwiseError

OPSET = 17


@dataclass(frozen=True)
class Parity:
    batch: int
    max_abs: float
    max_rel: float  # max |ort - torch| / (max |torch| + 1e-12), over the whole output


def export_onnx(module: nn.Module, example: torch.Tensor, path: str | Path, *, seq_axis: bool = False) -> Path:
    """Write `module` (eval) to `path` as ONNX, batch (and sequence) dynamic; checks it with
    onnx.checker."""
    import onnx

    path = Path(path)
    module = module.eval()
    axes = {0: "batch", 1: "seq"} if seq_axis else {0: "batch"}
    out_axes = dict(axes)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(path), input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": axes, "output": out_axes}, opset_version=OPSET,
                              dynamo=False)
    except Exception as err:
        raise LayerwiseError(f"export onnx: torch.onnx.export failed for {type(module).__name__}: "
                             f"{str(err).splitlines()[0]}") from None
    onnx.checker.check_model(onnx.load(str(path)))
    return path


def ort_session(path: str | Path, threads: int = 0):
    """An onnxruntime CPU session; threads = 0: onnxruntime's default, else intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_parity(module: nn.Module, path: str | Path, inputs: list[torch.Tensor]) -> list[Parity]:
    """Run PyTorch and onnxruntime on each fresh input; the error of each."""
    sess = ort_session(path)
    out = []
    module = module.eval()
    for x in inputs:
        with torch.no_grad():
            ref = module(x).float().numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        diff = abs(got - ref)
        out.append(Parity(int(x.shape[0]), float(diff.max()), float(diff.max() / (abs(ref).max() + 1e-12))))
    return out
