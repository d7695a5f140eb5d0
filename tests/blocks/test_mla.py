"""Multi-head latent attention and a layer stack of two kinds (layerwise.blocks.mla, Repeat.first):
parameters against the built module, matmul FLOPs against FlopCounterMode forward and backward
(eager, sdpa's math path when d_v != d_nope + d_rope, its fused kernel when equal), and the errors."""
from __future__ import annotations

import pytest
import torch

from layerwise.blocks import FFN, MLA, MoE, Repeat, TransformerBlock
from layerwise.build.runtime import set_attention_impl
from layerwise.measure.flops import count_flops
from layerwise.spec.counts import FlopCtx
from layerwise.spec.errors import SpecError

BLOCKS = {
    "math": MLA(d_model=32, n_heads=4, kv_rank=16, d_nope=8, d_rope=4, d_v=6),
    "fused-qrank": MLA(d_model=32, n_heads=4, kv_rank=16, q_rank=12, d_nope=8, d_rope=4, d_v=12, qkv_bias=True,
                       o_bias=True),
}


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_params_and_flops_match_the_built_module(name, input_grad, impl):
    block = BLOCKS[name]
    module = block.build()
    set_attention_impl(module, impl)
    assert sum(p.numel() for p in module.parameters()) == block.params().total
    x = torch.randn(2, 10, 32, requires_grad=input_grad)
    counted = count_flops(module, x)
    flops = block.flops((2, 10, 32), FlopCtx(input_grad=input_grad, attention=impl))
    assert (flops.fwd_matmul, flops.bwd_matmul) == (counted.forward, counted.backward)


def test_a_stack_of_two_kinds_keeps_one_numbering():
    dense = TransformerBlock(attn=BLOCKS["math"], ffn=FFN(d_model=32, d_ff=48), norm="rmsnorm")
    sparse = TransformerBlock(attn=BLOCKS["math"], ffn=MoE(d_model=32, d_ff=8, n_experts=4, top_k=2), norm="rmsnorm")
    stack = Repeat(block=sparse, n_layers=4, first=dense, n_first=1)
    assert [name for name, _ in stack.children()] == ["0", "1", "2", "3"]
    assert [child for _, child in stack.children()] == [dense, sparse, sparse, sparse]
    assert stack.params().total == dense.params().total + 3 * sparse.params().total
    module = stack.build()
    names = {n.split(".")[0] + "." + n.split(".")[2] for n, _ in module.named_parameters() if ".ffn." in n}
    assert "0.up_proj" in names and "1.router" in names and "0.router" not in names
    assert sum(p.numel() for p in module.parameters()) == stack.params().total
    assert [len(names) for names, _, _ in stack.runs((2, 5, 32))] == [1, 3]
    with pytest.raises(SpecError, match="n_first"):
        Repeat(block=sparse, n_layers=2, first=dense, n_first=3)
    with pytest.raises(SpecError, match="go together"):
        Repeat(block=sparse, n_layers=2, first=dense)


def test_bad_fields_are_named():
    with pytest.raises(SpecError, match="d_rope must be even"):
        MLA(d_model=32, n_heads=4, kv_rank=16, d_nope=8, d_rope=3, d_v=6)
    with pytest.raises(SpecError, match="q_a_proj is given"):
        MLA(d_model=32, n_heads=4, kv_rank=16, d_nope=8, d_rope=4, d_v=6, q_a_proj=BLOCKS["fused-qrank"].q_a_proj)
    with pytest.raises(SpecError, match="kv_b_proj must have"):
        MLA(d_model=32, n_heads=4, kv_rank=16, d_nope=8, d_rope=4, d_v=6, kv_b_proj=BLOCKS["fused-qrank"].kv_b_proj)
    with pytest.raises(SpecError, match="scoring"):
        MoE(d_model=8, d_ff=8, n_experts=4, top_k=2, scoring="softplus")
    with pytest.raises(SpecError, match="divisible by n_groups"):
        MoE(d_model=8, d_ff=8, n_experts=6, top_k=2, n_groups=4, topk_groups=1)
    with pytest.raises(SpecError, match="topk_groups"):
        MoE(d_model=8, d_ff=8, n_experts=8, top_k=2, n_groups=4, topk_groups=5)
    with pytest.raises(SpecError, match="routed_scale"):
        MoE(d_model=8, d_ff=8, n_experts=4, top_k=2, routed_scale=0)
