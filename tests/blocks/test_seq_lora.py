"""LoRA and apply_lora: the wrapped layer starts equal to its base, only adapters train, and the
FLOPs of frozen bases (no grad_weight matmul) match FlopCounterMode."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerwise.blocks.attention import Attention
from layerwise.blocks.compose import Repeat, Sequential
from layerwise.blocks.ffn import FFN
from layerwise.blocks.linear import Linear
from layerwise.blocks.lora import LoRA
from layerwise.build.runtime import set_attention_impl
from layerwise.measure.flops import count_flops
from layerwise.spec import io
from layerwise.spec.counts import FlopCtx, Params
from layerwise.spec.errors import SpecError
from layerwise.spec.lora import apply_lora

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("init_a", ["gaussian", "kaiming"])
def test_lora_starts_equal_to_its_base(init_a):
    spec = LoRA(base=Linear(d_in=6, d_out=5, trainable=False), rank=3, alpha=8.0, init_a=init_a)
    m = spec.build()
    x = torch.randn(4, 6)
    torch.testing.assert_close(m(x), m.base(x))
    assert m.lora_a.weight.abs().sum() > 0 and m.lora_b.weight.abs().sum() == 0
    with torch.no_grad():  # once B moves, the update is (alpha / rank) * B A x
        m.lora_b.weight.normal_()
    want = m.base(x) + (x @ m.lora_a.weight.T @ m.lora_b.weight.T) * (8.0 / 3)
    torch.testing.assert_close(m(x), want)


def test_lora_params():
    spec = LoRA(base=Linear(d_in=6, d_out=5, trainable=False), rank=3)
    assert (spec.params().trainable, spec.params().frozen) == (3 * (6 + 5), 6 * 5 + 5)
    m = spec.build()
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == 33


def _model(n_kv_heads=2):
    block = Sequential(layers=(Attention(d_model=16, n_heads=4, n_kv_heads=n_kv_heads, causal=True),
                               FFN(d_model=16, d_ff=24, gated=True, activation="silu")), names=("attn", "ffn"))
    return Repeat(block=block, n_layers=2)


def test_apply_lora_leaves_only_adapters_trainable():
    spec = apply_lora(_model(), rank=4)
    module = spec.build()
    trainable = sorted(n for n, p in module.named_parameters() if p.requires_grad)
    assert trainable == sorted(f"{i}.attn.{p}.lora_{ab}.weight" for i in "01" for p in ("q_proj", "v_proj") for ab in "ab")
    assert spec.params().trainable == sum(p.numel() for p in module.parameters() if p.requires_grad)
    adapters = 2 * (4 * (16 + 16) + 4 * (16 + 8))  # 2 layers: q_proj 16->16, v_proj 16->8 (2 kv heads of 4)
    assert spec.params() == Params(trainable=adapters, frozen=_model().params().total)
    assert io.from_data(io.to_data(spec)) == spec


def test_apply_lora_without_freezing_keeps_the_rest_trainable():
    spec = apply_lora(_model(), rank=2, targets=("*.ffn.up_proj",), freeze_base_model=False)
    module = spec.build()
    frozen = sorted(n for n, p in module.named_parameters() if not p.requires_grad)
    assert frozen == [f"{i}.ffn.up_proj.base.{w}" for i in "01" for w in ("bias", "weight")]


def test_apply_lora_with_no_match_names_the_targets():
    with pytest.raises(SpecError, match=r"apply_lora: no linear layer matches targets \['w_q'\]"):
        apply_lora(_model(), rank=4, targets=("w_q",))


@SETTINGS
@given(st.sampled_from([("q_proj", "v_proj"), ("k_proj",), ("*_proj",), ("o_proj", "down_proj")]),
       st.integers(1, 4), st.booleans(), st.sampled_from(["eager", "sdpa"]), st.sampled_from([1, 2, 4]),
       st.booleans())
def test_lora_flops_match(targets, rank, input_grad, impl, kv_heads, freeze_base):
    spec = apply_lora(_model(kv_heads), rank=rank, targets=targets, freeze_base_model=freeze_base)
    module = spec.build()
    set_attention_impl(module, impl)
    shape = (2, 5, 16)
    measured = count_flops(module, torch.randn(*shape, requires_grad=input_grad))
    analytic = spec.flops(shape, FlopCtx(input_grad=input_grad, attention=impl))
    assert (measured.forward, measured.backward) == (analytic.fwd_matmul, analytic.bwd_matmul)
