"""FFN and MoE against their built modules: params (all and active), shapes, matmul FLOPs under
FlopCounterMode, and the functions they compute (gated FFN, Mixtral-style top-k routing)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerwise.blocks.ffn import FFN
from layerwise.blocks.moe import MoE
from layerwise.build.runtime import set_moe_routing
from layerwise.measure.flops import count_flops
from layerwise.spec.counts import FlopCtx
from layerwise.spec.transform import freeze

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ACTS = ["relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh"]


def _numel(params, trainable=None):
    unique = {id(p): p for p in params}.values()
    return sum(p.numel() for p in unique if trainable is None or p.requires_grad == trainable)


def _check(spec, shape, input_grad, module):
    assert _numel(module.parameters(), True) == spec.params().trainable
    assert _numel(module.parameters(), False) == spec.params().frozen
    x = torch.randn(*shape, requires_grad=input_grad)
    measured = count_flops(module, x)
    analytic = spec.flops(shape, FlopCtx(input_grad=input_grad))
    assert (measured.forward, measured.backward) == (analytic.fwd_matmul, analytic.bwd_matmul)
    assert tuple(module(x).shape) == spec.out_shape(shape)


@SETTINGS
@given(st.integers(1, 9), st.integers(1, 12), st.sampled_from(ACTS), st.booleans(), st.booleans(),
       st.sampled_from([(), ("up_proj",), ("gate_proj", "down_proj")]), st.booleans(), st.integers(1, 5))
def test_ffn_matches_module(d_model, d_ff, act, gated, bias, frozen, input_grad, seq):
    spec = FFN(d_model=d_model, d_ff=d_ff, activation=act, gated=gated, bias=bias)
    frozen = tuple(p for p in frozen if gated or p != "gate_proj")  # no gate to freeze when not gated
    if frozen:
        spec = freeze(spec, frozen)
    _check(spec, (2, seq, d_model), input_grad, spec.build())


def test_gated_ffn_computes_swiglu():
    spec = FFN(d_model=6, d_ff=10, activation="silu", gated=True, bias=False)
    m = spec.build()
    x = torch.randn(3, 6)
    want = (F.silu(x @ m.gate_proj.weight.T) * (x @ m.up_proj.weight.T)) @ m.down_proj.weight.T
    torch.testing.assert_close(m(x), want)


@st.composite
def moe_cases(draw):
    n = draw(st.integers(1, 5))
    spec = MoE(d_model=draw(st.integers(2, 8)), d_ff=draw(st.integers(1, 8)), n_experts=n, top_k=draw(st.integers(1, n)),
               activation=draw(st.sampled_from(ACTS)), gated=draw(st.booleans()), bias=draw(st.booleans()),
               shared_d_ff=draw(st.sampled_from([0, 0, 3])), capacity_factor=draw(st.sampled_from([0, 0, 0.5, 1.0, 1.25])),
               aux_loss_coef=draw(st.sampled_from([0, 0.01])), z_loss_coef=draw(st.sampled_from([0, 0.001])))
    frozen = draw(st.sampled_from([(), ("router",), ("experts.*",)]))
    return (freeze(spec, frozen) if frozen else spec), draw(st.booleans()), draw(st.sampled_from(["learned", "balanced"]))


@SETTINGS
@given(moe_cases(), st.integers(1, 6))
def test_moe_matches_module(case, seq):
    spec, input_grad, routing = case
    module = spec.build()
    set_moe_routing(module, routing)
    _check(spec, (2, seq, spec.d_model), input_grad, module)
    # active params: the router, top_k experts and the shared expert, counted on the module
    active = _numel(module.router.parameters()) + spec.top_k * _numel(module.experts[0].parameters())
    if module.shared_expert is not None:
        active += _numel(module.shared_expert.parameters())
    assert spec.active_params().total == active


def test_moe_routes_like_mixtral():
    """Each token: softmax over router logits, keep top_k, renormalise, weighted sum of experts."""
    spec = MoE(d_model=6, d_ff=5, n_experts=4, top_k=2, shared_d_ff=3)
    m = spec.build()
    x = torch.randn(2, 5, 6)
    flat = x.reshape(-1, 6)
    probs = (flat @ m.router.weight.T).softmax(-1)
    w, idx = probs.topk(2, dim=-1)
    w = w / w.sum(-1, keepdim=True)
    want = torch.stack([sum(w[t, j] * m.experts[int(idx[t, j])](flat[t]) for j in range(2)) for t in range(10)])
    want = want + m.shared_expert(flat)
    torch.testing.assert_close(m(x), want.view(2, 5, 6))


def test_balanced_routing_gives_equal_shares():
    spec = MoE(d_model=4, d_ff=4, n_experts=4, top_k=2)
    m = spec.build()
    set_moe_routing(m, "balanced")
    seen = []
    hooks = [e.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0])) for e in m.experts]
    m(torch.randn(1, 8, 4))
    for h in hooks:
        h.remove()
    assert seen == [4, 4, 4, 4]  # 8 tokens * top_k 2 / 4 experts


def test_moe_params_count_every_expert():
    spec = MoE(d_model=8, d_ff=16, n_experts=8, top_k=2)
    expert = 3 * 8 * 16  # gated, no bias: gate, up, down
    assert spec.params().total == 8 * 8 + 8 * expert
    assert spec.active_params().total == 8 * 8 + 2 * expert
