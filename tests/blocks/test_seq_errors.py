"""Every invalid value of the sequence blocks raises SpecError with a message naming the field."""
from __future__ import annotations

import re

import pytest

from layerwise.blocks.attention import Attention
from layerwise.blocks.ffn import FFN
from layerwise.blocks.linear import Linear
from layerwise.blocks.lora import LoRA
from layerwise.blocks.moe import MoE
from layerwise.blocks.rnn import RNN
from layerwise.blocks.rope import Rope
from layerwise.spec.errors import SpecError
from layerwise.spec.io import from_data

LIN = Linear(d_in=4, d_out=4)
ATT = dict(d_model=8, n_heads=2)
CASES = [
    # rnn
    (RNN, dict(kind="lsmt", d_in=2, d_hidden=3), "rnn.kind must be one of ['gru', 'lstm', 'rnn'], got 'lsmt'; did you mean 'lstm'?"),
    (RNN, dict(kind="gru", d_in=0, d_hidden=3), "rnn.d_in must be a positive integer, got 0"),
    (RNN, dict(kind="gru", d_in=2, d_hidden=3, n_layers=-1), "rnn.n_layers must be a positive integer, got -1"),
    (RNN, dict(kind="gru", d_in=2, d_hidden=3, output="first"), "rnn.output must be one of ['last', 'sequence'], got 'first'"),
    (RNN, dict(kind="gru", d_in=2, d_hidden=3, n_layers=2, dropout=1.0), "rnn.dropout must be in [0, 1), got 1.0"),
    (RNN, dict(kind="gru", d_in=2, d_hidden=3, dropout=0.1), "rnn.dropout acts between stacked layers; it needs n_layers > 1"),
    # rope
    (Rope, dict(d_head=7), "rope.d_head must be even (dims are rotated in pairs), got 7"),
    (Rope, dict(d_head=8, base=0), "rope.base must be a positive number, got 0"),
    (Rope, dict(d_head=8, scaling="dynamic"), "rope.scaling must be one of ['linear', 'none', 'ntk', 'yarn'], got 'dynamic'"),
    (Rope, dict(d_head=8, factor=2.0), "rope.factor is 2.0 but scaling is 'none'; set scaling to linear, ntk or yarn"),
    (Rope, dict(d_head=8, scaling="linear", factor=0.5), "rope.factor must be >= 1 for linear scaling (it extends the context), got 0.5"),
    (Rope, dict(d_head=2, scaling="ntk", factor=2.0), "rope.d_head must be >= 4 for ntk scaling"),
    (Rope, dict(d_head=8, scaling="yarn", factor=2.0), "rope.max_seq must be the original context length (> 0) for yarn scaling"),
    # attention
    (Attention, dict(d_model=10, n_heads=3), "attention.d_model (10) must be divisible by n_heads (3), or give d_head explicitly"),
    (Attention, dict(d_model=8, n_heads=4, n_kv_heads=3), "attention.n_heads (4) must be divisible by n_kv_heads (3)"),
    (Attention, dict(d_model=8, n_heads=0), "attention.n_heads must be a positive integer, got 0"),
    (Attention, dict(ATT, n_kv_heads=-1), "attention.n_kv_heads must be a non-negative integer, got -1"),
    (Attention, dict(ATT, qk_norm="l2"), "attention.qk_norm must be one of ['layernorm', 'none', 'rmsnorm'], got 'l2'"),
    (Attention, dict(ATT, dropout=-0.1), "attention.dropout must be in [0, 1), got -0.1"),
    (Attention, dict(ATT, sliding_window=-2), "attention.sliding_window must be a non-negative integer, got -2"),
    (Attention, dict(ATT, context_dim=6), "attention.context_len must be > 0 for cross attention (context_dim > 0)"),
    (Attention, dict(ATT, context_len=6), "attention.context_len is set but context_dim is 0"),
    (Attention, dict(ATT, context_dim=6, context_len=3, causal=True), "attention: cross attention (context_dim > 0) cannot be causal, windowed or use rope"),
    (Attention, dict(ATT, rope=Rope(d_head=8)), "attention.rope.d_head (8) must equal the head width 4"),
    (Attention, dict(ATT, rope=LIN), "attention.rope must be a rope block or null, got Linear"),
    (Attention, dict(ATT, q_proj=Linear(d_in=8, d_out=6)), "attention.q_proj must be a linear (or lora) with d_in=8, d_out=8, bias=False"),
    (Attention, dict(ATT, q_norm=LIN), "attention.q_norm is given but qk_norm is 'none'"),
    # ffn
    (FFN, dict(d_model=4, d_ff=0), "ffn.d_ff must be a positive integer, got 0"),
    (FFN, dict(d_model=4, d_ff=8, activation="swish"), "ffn.activation must be one of"),
    (FFN, dict(d_model=4, d_ff=8, dropout=2), "ffn.dropout must be in [0, 1), got 2"),
    (FFN, dict(d_model=4, d_ff=8, gate_proj=LIN), "ffn.gate_proj is given but gated is False"),
    (FFN, dict(d_model=4, d_ff=8, up_proj=LIN), "ffn.up_proj must be a linear (or lora) with d_in=4, d_out=8, bias=True"),
    # moe
    (MoE, dict(d_model=4, d_ff=8, n_experts=2, top_k=3), "moe.top_k (3) must be <= n_experts (2)"),
    (MoE, dict(d_model=4, d_ff=8, n_experts=0, top_k=1), "moe.n_experts must be a positive integer, got 0"),
    (MoE, dict(d_model=4, d_ff=8, n_experts=2, top_k=1, experts=(FFN(d_model=4, d_ff=8),)), "moe.experts holds 1 experts, n_experts is 2"),
    (MoE, dict(d_model=4, d_ff=8, n_experts=1, top_k=1, experts=(FFN(d_model=4, d_ff=8),)), "moe.experts.0 must be an ffn with"),
    (MoE, dict(d_model=4, d_ff=8, n_experts=1, top_k=1, shared_expert=FFN(d_model=4, d_ff=8)), "moe.shared_expert is given but shared_d_ff is 0"),
    (MoE, dict(d_model=4, d_ff=8, n_experts=2, top_k=1, router=LIN), "moe.router must be a linear (or lora) with d_in=4, d_out=2, bias=False"),
    # lora
    (LoRA, dict(base=LIN, rank=0), "lora.rank must be a positive integer, got 0"),
    (LoRA, dict(base=Rope(d_head=4), rank=2), "lora.base must be a linear block, got Rope"),
    (LoRA, dict(base=LIN, rank=2, alpha=0), "lora.alpha must be a positive number, got 0"),
    (LoRA, dict(base=LIN, rank=2, dropout=1), "lora.dropout must be in [0, 1), got 1"),
    (LoRA, dict(base=LIN, rank=2, init_a="zeros"), "lora.init_a must be one of ['gaussian', 'kaiming'], got 'zeros'"),
    (LoRA, dict(base=LIN, rank=2, lora_b=Linear(d_in=2, d_out=4)), "lora.lora_b must be a linear with d_in=2, d_out=4, bias=False"),
]


@pytest.mark.parametrize("cls,kwargs,message", CASES, ids=[m[:40] for _, _, m in CASES])
def test_invalid_values_raise(cls, kwargs, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        cls(**kwargs)


@pytest.mark.parametrize("block,shape,message", [
    (Attention(**ATT), (2, 3, 6), "expected last dim 8, got 6 (input shape (2, 3, 6))"),
    (Attention(**ATT), (2, 8), "attention expects (B, S, d_model), got shape (2, 8)"),
    (RNN(kind="lstm", d_in=3, d_hidden=2), (2, 5), "rnn expects (B, S, d_in), got shape (2, 5)"),
    (FFN(d_model=4, d_ff=8), (2, 5), "expected last dim 4, got 5"),
    (MoE(d_model=4, d_ff=8, n_experts=2, top_k=1), (3, 5), "expected last dim 4, got 5"),
    (LoRA(base=LIN, rank=2), (3, 5), "expected last dim 4, got 5"),
])
def test_shape_mismatch_raises(block, shape, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        block.out_shape(shape)


def test_errors_from_files_carry_the_path():
    data = {"type": "sequential", "layers": [{"type": "attention", "d_model": 8, "n_heads": 3}]}
    with pytest.raises(SpecError, match=re.escape("layers.0: attention.d_model (8) must be divisible by n_heads (3)")):
        from_data(data)
