"""Attention over random valid configs: analytic params, shapes and matmul FLOPs against the built
module and FlopCounterMode, for both implementations; eager == sdpa numerically; GQA semantics."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerwise.blocks.attention import Attention
from layerwise.blocks.rope import Rope
from layerwise.build.attention import attention_mask
from layerwise.build.runtime import set_attention_impl
from layerwise.measure.flops import count_flops
from layerwise.spec.counts import FlopCtx
from layerwise.spec.errors import WorkloadError
from layerwise.spec.transform import freeze

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def attention_cases(draw):
    kv = draw(st.sampled_from([1, 2, 3]))
    heads = kv * draw(st.sampled_from([1, 2]))
    d_head = draw(st.sampled_from([2, 4, 6]))
    cross = draw(st.booleans())
    kw = dict(d_model=draw(st.sampled_from([heads * d_head, 8])), n_heads=heads, n_kv_heads=kv, d_head=d_head,
              qkv_bias=draw(st.booleans()), o_bias=draw(st.booleans()),
              qk_norm=draw(st.sampled_from(["none", "rmsnorm", "layernorm"])))
    if cross:
        kw.update(context_dim=draw(st.sampled_from([3, 5])), context_len=draw(st.integers(1, 5)))
    else:
        kw.update(causal=draw(st.booleans()), sliding_window=draw(st.sampled_from([0, 0, 2, 3])))
        if draw(st.booleans()):
            scaling = draw(st.sampled_from(["none", "linear", "ntk"] if d_head >= 4 else ["none", "linear"]))
            kw["rope"] = Rope(d_head=d_head, scaling=scaling, factor=1.0 if scaling == "none" else 2.0)
    spec = Attention(**kw)
    norms = ("q_norm", "k_norm") if kw["qk_norm"] != "none" else ()
    frozen = draw(st.sampled_from([(), ("k_proj",), ("q_proj", "k_proj", *norms), ("*",)]))
    if frozen:
        spec = freeze(spec, frozen)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 6)), spec.d_model)
    return spec, shape, draw(st.booleans())


def _inputs(spec, shape, input_grad):
    x = torch.randn(*shape, requires_grad=input_grad)
    if not spec.context_dim:
        return (x,)
    return x, torch.randn(shape[0], spec.context_len, spec.context_dim, requires_grad=input_grad)


@SETTINGS
@given(attention_cases())
def test_params_shape_and_flops_match_the_module(case):
    spec, shape, input_grad = case
    module = spec.build()
    unique = {id(p): p for p in module.parameters()}.values()
    assert sum(p.numel() for p in unique if p.requires_grad) == spec.params().trainable
    assert sum(p.numel() for p in unique if not p.requires_grad) == spec.params().frozen
    assert sum(b.numel() for b in module.buffers()) == 0
    inputs = _inputs(spec, shape, input_grad)
    for impl in ("eager", "sdpa"):
        set_attention_impl(module, impl)
        analytic = spec.flops(shape, FlopCtx(input_grad=input_grad, attention=impl))
        anything_trains = input_grad or spec.params().trainable > 0
        measured = count_flops(module, *inputs, backward=anything_trains)
        assert measured.forward == analytic.fwd_matmul, impl
        assert measured.backward == (analytic.bwd_matmul if anything_trains else 0), impl
        out = module(*inputs)
        assert tuple(out.shape) == spec.out_shape(shape)


@SETTINGS
@given(attention_cases())
def test_eager_and_sdpa_agree(case):
    spec, shape, _ = case
    module = spec.build().eval()
    inputs = _inputs(spec, shape, False)
    set_attention_impl(module, "eager")
    eager = module(*inputs)
    set_attention_impl(module, "sdpa")
    torch.testing.assert_close(module(*inputs), eager, rtol=1e-5, atol=1e-5)


def test_attention_dropout_is_active_only_in_training():
    spec = Attention(d_model=8, n_heads=2, dropout=0.5)
    module = spec.build()
    x = torch.randn(2, 5, 8)
    for impl in ("eager", "sdpa"):
        set_attention_impl(module, impl)
        module.eval()
        assert torch.equal(module(x), module(x))
        module.train()
        assert not torch.equal(module(x), module(x))
    # eager in training: dropout adds no matmul, so the count is unchanged
    set_attention_impl(module, "eager")
    assert count_flops(module, x).forward == spec.flops(x.shape, FlopCtx(attention="eager")).fwd_matmul


def test_mha_is_gqa_with_as_many_kv_heads():
    mha = Attention(d_model=12, n_heads=3)
    gqa = Attention(d_model=12, n_heads=3, n_kv_heads=3)
    assert mha.params() == gqa.params()
    assert mha.flops((2, 4, 12)) == gqa.flops((2, 4, 12))
    a, b = mha.build(), gqa.build()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 4, 12)
    torch.testing.assert_close(a(x), b(x))


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("kv_heads", [1, 2])
def test_gqa_equals_mha_with_shared_kv_weights(impl, kv_heads):
    """Each kv head serves n_heads / n_kv_heads consecutive query heads (torch's enable_gqa order)."""
    heads, d_head = 4, 3
    gqa = Attention(d_model=12, n_heads=heads, n_kv_heads=kv_heads, causal=True).build()
    mha = Attention(d_model=12, n_heads=heads, causal=True).build()
    state = dict(gqa.state_dict())
    for name in ("k_proj.weight", "v_proj.weight"):
        w = state[name].view(kv_heads, d_head, 12)
        state[name] = w.repeat_interleave(heads // kv_heads, dim=0).reshape(heads * d_head, 12)
    mha.load_state_dict(state)
    for m in (gqa, mha):
        set_attention_impl(m, impl)
    x = torch.randn(2, 5, 12)
    torch.testing.assert_close(gqa(x), mha(x))


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("window", [0, 2])
def test_causal_output_ignores_later_tokens(impl, window):
    module = Attention(d_model=8, n_heads=2, causal=True, sliding_window=window).build()
    set_attention_impl(module, impl)
    x = torch.randn(1, 6, 8)
    y = x.clone()
    y[:, 3:] += 1.0
    torch.testing.assert_close(module(x)[:, :3], module(y)[:, :3])
    if window:  # with window 2, position 5 sees only 4 and 5: changing 0..3 does not reach it
        z = x.clone()
        z[:, :4] -= 1.0
        torch.testing.assert_close(module(x)[:, 5], module(z)[:, 5])


@pytest.mark.parametrize("causal", [False, True])
def test_visible_pairs_equal_the_mask(causal):
    for s in range(1, 9):
        for w in range(0, 10):
            spec = Attention(d_model=4, n_heads=1, causal=causal, sliding_window=w)
            mask = attention_mask(s, s, causal, w, "cpu")
            assert spec.visible(s, s) == (s * s if mask is None else int(mask.sum()))


def test_causal_skippable_is_the_masked_part_of_both_products():
    spec = Attention(d_model=8, n_heads=2, causal=True)
    f = spec.flops((3, 10, 8))
    scores_and_av = 2 * 2 * 3 * 2 * 10 * 10 * 4  # two products of 2*B*H*S*S*d_head
    masked_pairs = 10 * 9 // 2  # strictly above the diagonal
    assert f.causal_skippable == scores_and_av * masked_pairs // 100
    assert Attention(d_model=8, n_heads=2).flops((3, 10, 8)).causal_skippable == 0


def test_set_attention_impl_rejects_unknown_and_counts_modules():
    module = torch.nn.Sequential(Attention(d_model=4, n_heads=1).build(), Attention(d_model=4, n_heads=2).build())
    assert set_attention_impl(module, "eager") == 2
    with pytest.raises(WorkloadError, match=r"--attention must be one of \['eager', 'sdpa'\], got 'flash'"):
        set_attention_impl(module, "flash")


def test_parameter_names_follow_the_spec():
    spec = Attention(d_model=8, n_heads=2, qkv_bias=True, qk_norm="layernorm", rope=Rope(d_head=4))
    names = {n for n, _ in spec.build().named_parameters()}
    assert names == {f"{p}.{w}" for p in ("q_proj", "k_proj", "v_proj") for w in ("weight", "bias")} | {
        "o_proj.weight", "q_norm.weight", "q_norm.bias", "k_norm.weight", "k_norm.bias"}
