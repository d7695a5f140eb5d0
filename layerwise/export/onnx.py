"""ONNX export with onnxruntime parity.

Exporter (exporter="auto"): first the legacy TorchScript-based exporter (`torch.onnx.export(...,
dynamo=False)`): it takes `dynamic_axes` directly and runs in a fraction of a second. It has no
symbolic for `aten::rms_norm`, so RMSNorm models (LLaMA family) fall back to the torch 2.13 default,
the dynamo exporter (torch.export + onnxscript), with `torch.export.Dim` bounds for batch and
sequence (a learned position table or max_seq bounds the sequence). Batch is dynamic for every
model; the sequence axis too for token and sequence inputs.
"""
from __future__ import annotations

import contextlib
import os
import io
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


@dataclass(frozen=True)
class Exported:
    path: Path
    exporter: str  # legacy | dynamo

    def __fspath__(self) -> str:
        return str(self.path)


EXPORTERS = ("auto", "legacy", "dynamo")


def export_onnx(module: nn.Module, example: torch.Tensor, path: str | Path, *, seq_axis: bool = False,
                max_seq: int = 0, exporter: str = "auto") -> Exported:
    """Write `module` (eval) to `path` as ONNX, batch (and sequence, up to max_seq if > 0) dynamic;
    checks it with onnx.checker."""
    import onnx

    if exporter not in EXPORTERS:
        raise LayerwiseError(f"export onnx: exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    path = Path(path)
    module = module.eval()
    errors = []
    for kind in (("legacy", "dynamo") if exporter == "auto" else (exporter,)):
        try:
            with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                (_legacy if kind == "legacy" else _dynamo)(module, example, path, seq_axis, max_seq)
        except Exception as err:
            errors.append(f"{kind}: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}")
            continue
        onnx.checker.check_model(onnx.load(str(path)))
        return Exported(path, kind)
    raise LayerwiseError(f"export onnx: torch.onnx.export failed for {type(module).__name__} "
                         f"({'; '.join(errors)})")


def _legacy(module, example, path, seq_axis, max_seq) -> None:
    axes = {0: "batch", 1: "seq"} if seq_axis else {0: "batch"}
    torch.onnx.export(module, (example,), str(path), input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": axes, "output": dict(axes)}, opset_version=OPSET, dynamo=False)


def _dynamo(module, example, path, seq_axis, max_seq) -> None:
    import logging

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notes
    dims = {0: torch.export.Dim("batch", min=1, max=1 << 16)}
    if seq_axis:
        dims[1] = torch.export.Dim("seq", min=2, max=max_seq or 1 << 16)
    torch.onnx.export(module, (example,), str(path), input_names=["input"], output_names=["output"],
                      dynamic_shapes=(dims,), dynamo=True, optimize=True)


def ort_session(path, threads: int = 0):
    """An onnxruntime CPU session; threads = 0: onnxruntime's default, else intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])


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
