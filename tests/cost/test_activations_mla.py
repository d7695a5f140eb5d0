"""Saved activations of multi-head latent attention, DeepSeek's routers and a stack of two kinds of
layers, against torch.autograd.graph.saved_tensors_hooks on the built module (as test_activations)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from test_activations import POLICIES, _measure  # noqa: E402

from layerwise.blocks import FFN, MLA, MoE, Repeat, TransformerBlock  # noqa: E402
from layerwise.cost.act_trace import ActPolicy  # noqa: E402
from layerwise.cost.activations import activations  # noqa: E402

SEQ = (2, 6, 16)
_MLA = MLA(d_model=16, n_heads=4, kv_rank=8, d_nope=4, d_rope=4, d_v=6)
_SIG = MoE(d_model=16, d_ff=8, n_experts=4, top_k=2, scoring="sigmoid", routed_scale=2.5, n_groups=2, topk_groups=1,
           shared_d_ff=8)
CASES = [
    ("mla-math", _MLA),  # d_v != d_nope + d_rope: sdpa's math path
    ("mla-fused-qrank-bias", MLA(d_model=16, n_heads=4, kv_rank=8, q_rank=6, d_nope=4, d_rope=4, d_v=8, qkv_bias=True)),
    ("mla-dropout", MLA(d_model=16, n_heads=4, kv_rank=8, d_nope=4, d_rope=4, d_v=6, dropout=0.1)),
    ("moe-sigmoid-groups", _SIG),
    ("moe-no-renorm", MoE(d_model=16, d_ff=8, n_experts=4, top_k=2, norm_topk=False, shared_d_ff=16)),
    ("tb-deepseek", TransformerBlock(attn=_MLA, ffn=_SIG, norm="rmsnorm")),
    ("repeat-dense-then-moe", Repeat(block=TransformerBlock(attn=_MLA, ffn=_SIG, norm="rmsnorm"), n_layers=3,
                                     first=TransformerBlock(attn=_MLA, ffn=FFN(d_model=16, d_ff=24), norm="rmsnorm"),
                                     n_first=1)),
]


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("pol", sorted(POLICIES))
@pytest.mark.parametrize("name,block", CASES, ids=[c[0] for c in CASES])
def test_saved_bytes_match_saved_tensors_hooks(name, block, pol, impl):
    dtype, autocast = POLICIES[pol]
    got = _measure(block, SEQ, 0, dtype, autocast, impl)
    policy = ActPolicy(dtype=dtype, autocast=autocast if dtype == "fp32" else None, attention=impl)
    assert activations(block, SEQ, policy).saved == got
