"""Quantization: the pure-Python size prediction against the saved file, int4 packing, the
quantized models against the float ones, and the errors for unsupported layers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import _compress_models as models
from layerwise.compress.qfile import save_model
from layerwise.compress.qlinear import pack_int4, unpack_int4
from layerwise.compress.quantize import quantize
from layerwise.cost.quant_size import quant_size
from layerwise.spec.errors import LayerwiseError

CASES = [  # (model, mode, input shape)
    ("cnn", "none", (4, 1, 8, 8)), ("cnn", "static", (4, 1, 8, 8)), ("cnn", "dynamic", (4, 1, 8, 8)),
    ("vit", "none", (4, 1, 8, 8)), ("vit", "dynamic", (4, 1, 8, 8)), ("vit", "weight-int8", (4, 1, 8, 8)),
    ("vit", "weight-int4", (4, 1, 8, 8)), ("tiny_gpt", "weight-int4", (4, 12)), ("tiny_gpt", "dynamic", (4, 12)),
]


def _x(name, shape):
    torch.manual_seed(0)
    return torch.randint(0, 64, shape) if name == "tiny_gpt" else torch.randn(shape)


@pytest.mark.parametrize("name,mode,shape", CASES)
def test_predicted_size_matches_saved_file(name, mode, shape, tmp_path):
    spec = getattr(models, name)()
    module = spec.build().eval()
    q = module if mode == "none" else quantize(module, mode, calibration=[_x(name, shape)])
    size = save_model(q, tmp_path / "m.safetensors")
    predicted = quant_size(spec, mode).total_bytes
    assert abs(predicted - size) / size < 0.02, (predicted, size)


@pytest.mark.parametrize("name,mode", [("digits-cnn", "static"), ("digits-cnn", "none"), ("digits-vit", "dynamic"),
                                       ("digits-vit", "weight-int4"), ("tiny-gpt", "weight-int8"),
                                       ("text-gru", "dynamic"), ("text-gru", "none")])
def test_predicted_size_matches_saved_file_for_presets(name, mode, tmp_path):
    body, shape, vocab = models.preset(name)
    torch.manual_seed(0)
    x = torch.randint(0, vocab, shape) if vocab else torch.randn(shape)
    module = body.build().eval()
    q = module if mode == "none" else quantize(module, mode, calibration=[x])
    size = save_model(q, tmp_path / "m.safetensors")
    assert abs(quant_size(body, mode).total_bytes - size) / size < 0.02, (quant_size(body, mode).total_bytes, size)


@pytest.mark.parametrize("name,mode", [("cnn", "static"), ("vit", "dynamic"), ("vit", "weight-int8"),
                                       ("vit", "weight-int4"), ("tiny_gpt", "weight-int8")])
def test_quantized_output_close_to_float(name, mode):
    spec = getattr(models, name)()
    module = spec.build().eval()
    shape = (16, 12) if name == "tiny_gpt" else (16, 1, 8, 8)
    x = _x(name, shape)
    q = quantize(module, mode, calibration=[_x(name, shape) for _ in range(4)])
    with torch.no_grad():
        ref, got = module(x), q(x)
    err = (got - ref).abs().max() / ref.abs().max()
    assert err < (0.25 if mode == "weight-int4" else 0.08), float(err)
    assert err > 0  # it really is quantized


def test_int4_packing_round_trips():
    torch.manual_seed(0)
    codes = torch.randint(-7, 8, (5, 12), dtype=torch.int8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 6)
    assert torch.equal(unpack_int4(packed), codes)


def test_unsupported_layers_are_clear_errors():
    with pytest.raises(LayerwiseError, match="static"):
        quantize(models.vit().build(), "static", calibration=[torch.randn(2, 1, 8, 8)])
    conv_only = nn.Sequential(nn.Conv2d(1, 4, 3))
    with pytest.raises(LayerwiseError, match="no Linear"):
        quantize(conv_only, "dynamic")
    with pytest.raises(LayerwiseError, match="no Linear"):
        quantize(conv_only, "weight-int4")
    with pytest.raises(LayerwiseError, match="calibration"):
        quantize(models.cnn().build(), "static")
    with pytest.raises(LayerwiseError, match="mode"):
        quantize(models.cnn().build(), "int3")


@pytest.mark.parametrize("name,mode", [("cnn", "static"), ("vit", "dynamic"), ("vit", "weight-int4"),
                                       ("tiny_gpt", "weight-int8")])
def test_saved_file_reloads_to_the_same_outputs(name, mode, tmp_path):
    """Save, rebuild from the spec with fresh random weights, load: outputs are bit-identical."""
    from layerwise.compress.qfile import load_model

    spec = getattr(models, name)()
    shape = (6, 12) if name == "tiny_gpt" else (6, 1, 8, 8)
    q = quantize(spec.build(), mode, calibration=[_x(name, shape)])
    save_model(q, tmp_path / "m.safetensors")
    torch.manual_seed(99)
    fresh = quantize(spec.build(), mode, calibration=[torch.rand_like(_x(name, shape).float()) * 5]
                     if name != "tiny_gpt" else [_x(name, shape)])
    x = _x(name, shape)
    with torch.no_grad():
        assert not torch.equal(fresh(x), q(x))
        load_model(fresh, tmp_path / "m.safetensors")
        assert torch.equal(fresh(x), q(x))
