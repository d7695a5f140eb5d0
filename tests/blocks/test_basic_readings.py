"""Every basic leaf block, over random valid configs: the analytic readings against the built module.

- params (trainable / frozen / buffers) == the built module's unique parameters and buffers
- out_shape == the shape of a real forward on a random input
- fwd_matmul / bwd_matmul == FlopCounterMode (layerwise.measure.flops.count_flops), with the input
  requiring grad and not
- spec files round-trip (plain data and YAML text)
- built parameter names are the ones docs/BLOCKS.md lists
"""
from __future__ import annotations

import pytest
import torch
import yaml
from _basic_strategies import CASES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerwise.spec import io
from layerwise.spec.base import REGISTRY
from layerwise.spec.counts import FlopCtx
from layerwise.measure.flops import count_flops

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# docs/BLOCKS.md "params (module names)", with `bias` present only when the spec has one.
PARAM_NAMES = {
    "embedding": {"weight"},
    "learned_positions": {"weight"},
    "cls_token": {"weight"},
    "patch_embedding": {"proj.weight", "proj.bias"},
    "conv1d": {"weight", "bias"},
    "conv2d": {"weight", "bias"},
    "batchnorm1d": {"weight", "bias"},
    "batchnorm2d": {"weight", "bias"},
    "layernorm": {"weight", "bias"},
    "rmsnorm": {"weight"},
}
BUFFER_NAMES = {"batchnorm1d", "batchnorm2d"}  # running_mean, running_var, num_batches_tracked


def make_input(spec, shape, requires_grad: bool) -> torch.Tensor:
    if spec.type_name == "embedding":
        return torch.randint(0, spec.vocab_size, shape)
    return torch.randn(shape, requires_grad=requires_grad)


def measured_params(module) -> tuple[int, int, int]:
    unique = {id(p): p for p in module.parameters()}.values()
    trainable = sum(p.numel() for p in unique if p.requires_grad)
    frozen = sum(p.numel() for p in unique if not p.requires_grad)
    return trainable, frozen, sum(b.numel() for b in module.buffers())


BASIC_MODULES = {f"layerwise.blocks.{m}" for m in ("embedding", "position", "conv", "pool", "shape_ops", "norm", "activation")}


def test_every_basic_type_is_registered_and_covered():
    basic = {name for name, cls in REGISTRY.items() if cls.__module__ in BASIC_MODULES}
    assert basic == set(CASES), f"registered without a strategy: {basic - set(CASES)}; unknown: {set(CASES) - basic}"


def _check_params(spec, module):
    p = spec.params()
    assert (p.trainable, p.frozen, p.buffers) == measured_params(module)
    if spec.type_name in PARAM_NAMES:
        names = {n for n, _ in module.named_parameters()}
        expected = {n for n in PARAM_NAMES[spec.type_name] if not n.endswith("bias") or getattr(spec, "bias", True)}
        if getattr(spec, "affine", True) is False:
            expected = set()
        assert names == expected
    else:
        assert p.total == 0
    if spec.type_name in BUFFER_NAMES:
        assert {n for n, _ in module.named_buffers()} == {"running_mean", "running_var", "num_batches_tracked"}


def _check_flops(spec, module, shape, input_grad: bool):
    x = make_input(spec, shape, input_grad)
    needs_grad = (input_grad and x.is_floating_point()) or spec.params().trainable > 0
    counted = count_flops(module, x, backward=needs_grad)
    analytic = spec.flops(shape, FlopCtx(input_grad=input_grad and x.is_floating_point()))
    assert analytic.fwd_matmul == counted.forward
    assert analytic.bwd_matmul == counted.backward
    if not needs_grad:  # nothing to differentiate: no backward work of any kind
        assert analytic.backward == 0


def _check_one(spec, shape):
    module = spec.build()
    module.train()
    _check_params(spec, module)
    with torch.no_grad():
        out = module(make_input(spec, shape, False))
    assert tuple(out.shape) == spec.out_shape(shape)
    for input_grad in (True, False):
        _check_flops(spec, module, shape, input_grad)
    assert io.from_data(io.to_data(spec)) == spec
    assert io.from_data(yaml.safe_load(io.dump(spec))) == spec


@pytest.mark.parametrize("type_name", sorted(CASES))
@SETTINGS
@given(data=st.data())
def test_readings(type_name, data):
    spec, shape = data.draw(CASES[type_name], label="spec, input shape")
    assert spec.type_name == type_name
    _check_one(spec, shape)
