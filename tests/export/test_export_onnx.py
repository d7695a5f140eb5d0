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


FAMILIES = {  # the other preset families, shrunk
    "resnet-18": dict(widths=(8, 16, 16, 16), stem_width=8, n_classes=10, image_size=32),
    "bert-base": dict(n_layers=1, d_model=32, n_heads=2, vocab_size=100, max_seq=32, d_ff=64),
    "llama-2-7b": dict(n_layers=1, d_model=32, n_heads=4, vocab_size=100, max_seq=32, d_ff=64),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "llama-2-7b" else n
                                  for n in FAMILIES])
def test_onnx_covers_the_other_families(name, tmp_path):
    """ResNet and BERT go through the legacy exporter; LLaMA's RMSNorm has no legacy symbolic, so
    'auto' falls back to the dynamo exporter."""
    from layerwise.presets import get_preset

    model = get_preset(name, **FAMILIES[name])
    module = model.body.build().eval()
    seq = model.input.kind == "tokens"
    gen = (lambda b, s=12: torch.randint(0, 100, (b, s))) if seq else (lambda b, s=None: torch.randn(b, *model.input.shape))
    done = export_onnx(module, gen(2), tmp_path / "m.onnx", seq_axis=seq, max_seq=model.input.max_seq)
    assert done.exporter == ("dynamo" if name == "llama-2-7b" else "legacy")
    torch.manual_seed(5)
    for p in check_parity(module, done, [gen(3), gen(5)] + ([gen(3, 7)] if seq else [])):
        assert p.max_rel < 1e-4, p
