"""ONNX exports match PyTorch on fresh random inputs at two batch sizes (and two sequence lengths
for the LM), within 1e-4 relative error; onnx.checker runs inside export_onnx."""
from __future__ import annotations

import pytest
import torch

import _compress_models as models
from layerwise.export.onnx import check_parity, export_onnx


def _gen(name):
    if name == "tiny_gpt":
        return lambda b, s=12: torch.randint(0, 64, (b, s))
    if name == "gru_classifier":
        return lambda b, s=7: torch.randn(b, s, 8)
    return lambda b, s=None: torch.randn(b, 1, 8, 8)


@pytest.mark.parametrize("name", ["cnn", "vit", "tiny_gpt", "gru_classifier"])
def test_onnx_matches_pytorch(name, tmp_path):
    spec = getattr(models, name)()
    if spec is None:
        pytest.skip("rnn block not registered yet")
    torch.manual_seed(0)
    module = spec.build().eval()
    gen = _gen(name)
    seq = name in ("tiny_gpt", "gru_classifier")
    path = export_onnx(module, gen(2), tmp_path / "m.onnx", seq_axis=seq)
    torch.manual_seed(123)  # fresh inputs, not the export example
    inputs = [gen(3), gen(5)] + ([gen(3, 9)] if seq else [])
    for p in check_parity(module, path, inputs):
        assert p.max_rel < 1e-4, p


@pytest.mark.parametrize("name", models.PRESETS)
def test_onnx_matches_pytorch_on_presets(name, tmp_path):
    body, shape, vocab = models.preset(name)
    torch.manual_seed(0)
    module = body.build().eval()
    gen = (lambda b, s=shape[1]: torch.randint(0, vocab, (b, s))) if vocab else (lambda b, s=None: torch.randn(b, *shape[1:]))
    path = export_onnx(module, gen(2), tmp_path / "m.onnx", seq_axis=bool(vocab))
    torch.manual_seed(321)
    inputs = [gen(1), gen(4)] + ([gen(2, 7)] if vocab else [])
    for p in check_parity(module, path, inputs):
        assert p.max_rel < 1e-4, p
