"""transformer_block: params, matmul FLOPs (forward, backward) and wiring against the built module."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn import functional as F

from layerwise.blocks import FFN, MoE, Attention, Rope, TransformerBlock
from layerwise.build.runtime import set_attention_impl, set_moe_routing
from layerwise.measure.flops import count_flops
from layerwise.spec.counts import FlopCtx
from layerwise.spec.errors import SpecError
from layerwise.spec.transform import freeze

D = 16


def attn(**kw):
    return Attention(d_model=D, n_heads=4, causal=True, **kw)


WIRINGS = {
    "pre": dict(),
    "post": dict(norm_position="post"),
    "parallel": dict(parallel=True),
    "parallel-two-norms": dict(parallel=True, shared_norm=False),
}
FFNS = {
    "ffn": FFN(d_model=D, d_ff=24, activation="gelu_tanh"),
    "swiglu": FFN(d_model=D, d_ff=24, activation="silu", gated=True, bias=False),
    "moe": MoE(d_model=D, d_ff=8, n_experts=4, top_k=2),
}
FROZEN = {"none": (), "attn": ("*attn*",), "all": ("*",)}


def counts(module):
    ps = list(module.parameters())
    return (sum(p.numel() for p in ps if p.requires_grad), sum(p.numel() for p in ps if not p.requires_grad),
            sum(b.numel() for b in module.buffers()))


@pytest.mark.parametrize("wiring,ffn,norm,frozen,input_grad",
                         [(w, f, n, z, g) for (w, f), n, z, g in zip(
                             itertools.product(WIRINGS, FFNS), itertools.cycle(["layernorm", "rmsnorm"]),
                             itertools.cycle(FROZEN), itertools.cycle([True, False, True]))])
def test_params_and_flops_match_module(wiring, ffn, norm, frozen, input_grad):
    spec = TransformerBlock(attn=attn(qkv_bias=True), ffn=FFNS[ffn], norm=norm, **WIRINGS[wiring])
    if FROZEN[frozen]:
        spec = freeze(spec, FROZEN[frozen])
    torch.manual_seed(0)
    module = spec.build()
    set_attention_impl(module, "sdpa")
    set_moe_routing(module, "balanced")
    p = spec.params()
    assert counts(module) == (p.trainable, p.frozen, p.buffers)
    shape = (2, 5, D)
    x = torch.randn(shape, requires_grad=input_grad)
    analytic = spec.flops(shape, FlopCtx(input_grad=input_grad))
    trains = input_grad or p.trainable > 0
    measured = count_flops(module, x, backward=trains)
    assert measured.forward == analytic.fwd_matmul
    assert measured.backward == (analytic.bwd_matmul if trains else 0)
    assert tuple(module(x).shape) == spec.out_shape(shape)


def test_wirings_compute_what_the_docstring_says():
    torch.manual_seed(0)
    x = torch.randn(2, 5, D)
    for name, kw in WIRINGS.items():
        m = TransformerBlock(attn=attn(), ffn=FFNS["ffn"], **kw).build().eval()
        a, f = m.attn, m.ffn
        if name == "pre":
            h = x + a(m.attn_norm(x))
            want = h + f(m.ffn_norm(h))
        elif name == "post":  # BERT: norm after each residual add
            h = m.attn_norm(x + a(x))
            want = m.ffn_norm(h + f(h))
        elif name == "parallel":  # GPT-J / Phi-2: one norm feeds both branches
            want = x + a(m.attn_norm(x)) + f(m.attn_norm(x))
            assert not hasattr(m, "ffn_norm")
        else:  # GPT-NeoX: one norm per branch
            want = x + a(m.attn_norm(x)) + f(m.ffn_norm(x))
        torch.testing.assert_close(m(x), want)


def test_children_names_follow_blocks_md():
    pre = TransformerBlock(attn=attn(), ffn=FFNS["ffn"])
    assert [n for n, _ in pre.children()] == ["attn_norm", "attn", "ffn_norm", "ffn"]
    par = TransformerBlock(attn=attn(), ffn=FFNS["ffn"], parallel=True)
    assert [n for n, _ in par.children()] == ["attn_norm", "attn", "ffn"]
    names = {n.split(".")[0] for n, _ in pre.build().named_parameters()}
    assert names == {"attn_norm", "attn", "ffn_norm", "ffn"}


def test_depth_parallel_takes_the_longer_branch():
    a, f = attn(), FFNS["ffn"]
    norm = 0  # norms only scale and shift: depth counts the layers that mix features
    pre = TransformerBlock(attn=a, ffn=f)
    par = TransformerBlock(attn=a, ffn=f, parallel=True)
    assert pre.depth() == norm + a.depth() + norm + f.depth()
    assert par.depth() == norm + max(a.depth(), f.depth())
    deep = FFN(d_model=D, d_ff=24)  # 2 layers vs attention's 2: make the branches differ
    from layerwise.blocks import Linear, Sequential
    deeper = Sequential(layers=(deep, deep, deep))
    for kw in (dict(parallel=True), dict(parallel=True, shared_norm=False)):
        assert TransformerBlock(attn=a, ffn=deeper, **kw).depth() == norm + max(a.depth(), deeper.depth())
        shallow = Linear(d_in=D, d_out=D)
        assert a.depth() > shallow.depth()
        assert TransformerBlock(attn=a, ffn=shallow, **kw).depth() == norm + a.depth()


def test_residual_dropout_is_a_child_without_params():
    base = TransformerBlock(attn=attn(), ffn=FFNS["ffn"])
    drop = TransformerBlock(attn=attn(), ffn=FFNS["ffn"], dropout=0.1)
    assert drop.params() == base.params()
    m = drop.build()
    assert isinstance(m.attn_dropout, torch.nn.Dropout) and m.attn_dropout.p == 0.1
    m.eval()
    ref = base.build().eval()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, D)
    torch.testing.assert_close(m(x), ref(x))  # eval: dropout is the identity


def test_rope_inside_attention_and_errors():
    spec = TransformerBlock(attn=attn(rope=Rope(d_head=4)), ffn=FFNS["swiglu"], norm="rmsnorm")
    assert spec.params().total == TransformerBlock(attn=attn(), ffn=FFNS["swiglu"], norm="rmsnorm").params().total
    with pytest.raises(SpecError, match="parallel needs norm_position='pre'"):
        TransformerBlock(attn=attn(), ffn=FFNS["ffn"], parallel=True, norm_position="post")
    with pytest.raises(SpecError, match="norm_position"):
        TransformerBlock(attn=attn(), ffn=FFNS["ffn"], norm_position="sandwich")
    bad = TransformerBlock(attn=attn(), ffn=FFN(d_model=8, d_ff=4))
    with pytest.raises(SpecError, match="ffn"):
        bad.out_shape((2, 3, D))


def test_gelu_tanh_ffn_matches_formula():
    """The GPT-2 MLP: down(gelu_tanh(up(x)))."""
    m = FFNS["ffn"].build()
    x = torch.randn(3, D)
    torch.testing.assert_close(m(x), m.down_proj(F.gelu(m.up_proj(x), approximate="tanh")))
