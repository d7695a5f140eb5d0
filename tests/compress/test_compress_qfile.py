"""The saved file's layout: a quantized model is packed (a few flat tensors + an index) and unpacks
to exactly the per-tensor state; a float model stays a plain safetensors save; dynamic mode's int8
position table and patch conv are what the module computes with."""
from __future__ import annotations

import struct

import pytest
import torch
from safetensors.torch import load_file

import _compress_models as models
from layerwise.compress.qfile import quantized_state, save_model, unpack
from layerwise.compress.quantize import TABLE_ATTR, dequant_table, quantize


def _header_keys(path) -> list[str]:
    import json

    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return sorted(json.loads(raw[8:8 + n]))


@pytest.mark.parametrize("name,mode", [("vit", "dynamic"), ("vit", "weight-int4"), ("cnn", "static"),
                                       ("cnn", "dynamic")])
def test_packed_file_unpacks_to_the_same_tensors(name, mode, tmp_path):
    torch.manual_seed(0)
    q = quantize(getattr(models, name)().build(), mode, calibration=[torch.randn(4, 1, 8, 8)])
    save_model(q, tmp_path / "q.st")
    state = quantized_state(q)
    assert len(state) >= 10  # one entry each before packing ...
    keys = _header_keys(tmp_path / "q.st")
    assert len(keys) <= 6 and "_index" in keys and "__metadata__" in keys  # ... a handful after
    got = unpack(load_file(str(tmp_path / "q.st")))
    assert list(got) == list(state)
    for k, t in state.items():
        assert got[k].dtype == t.dtype and torch.equal(got[k], t), k


def test_float_model_is_a_plain_safetensors_save(tmp_path):
    module = models.vit().build()
    save_model(module, tmp_path / "f.st")
    got = load_file(str(tmp_path / "f.st"))
    assert set(got) == set(module.state_dict())
    assert all(torch.equal(got[k], v) for k, v in module.state_dict().items())


def test_dynamic_int8_tables_are_what_the_module_uses():
    torch.manual_seed(0)
    module = models.vit().build().eval()
    q = quantize(module, "dynamic")
    for path in ("pos", "patch_embed.proj"):
        m, ref = q.get_submodule(path), module.get_submodule(path).weight
        codes, scale = getattr(m, TABLE_ATTR)
        assert codes.dtype == torch.int8 and codes.shape == ref.shape and scale.shape == (ref.shape[0],)
        assert codes.abs().amax() == 127  # symmetric: the largest entry of a row maps to +-127
        assert torch.equal(m.weight, dequant_table(codes, scale))
        err = (m.weight - ref).abs().amax(dim=tuple(range(1, ref.dim()))) / ref.abs().amax(dim=tuple(range(1, ref.dim())))
        assert 0 < err.max() <= 0.5 / 127 + 1e-6  # rounding: at most half a step of each row's scale
    assert module.get_submodule("pos").weight is not q.get_submodule("pos").weight  # the float model is untouched
