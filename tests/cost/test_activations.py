"""Saved activations per block, against torch.autograd.graph.saved_tensors_hooks on the built
module (tests/cost/_saved.py): unique storages, parameters and buffers excluded, to the byte."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from _saved import block_input, measured_saved  # noqa: E402

from layerwise.blocks import (FFN, RNN, Activation, AdaptiveAvgPool1d, AdaptiveAvgPool2d, Attention,  # noqa: E402
                              AvgPool1d, AvgPool2d, BatchNorm1d, BatchNorm2d, ClsToken, Conv1d, Conv2d, Dropout,
                              Embedding, Flatten, LayerNorm, LearnedPositions, Linear, LoRA, MaxPool1d, MaxPool2d,
                              MoE, Residual, ResNetBasic, ResNetBottleneck, RMSNorm, Rope, SelectToken, Sequential,
                              SinusoidalPositions, TransformerBlock)
from layerwise.build.runtime import set_attention_impl, set_moe_routing  # noqa: E402
from layerwise.cost.act_trace import ActPolicy  # noqa: E402
from layerwise.cost.activations import activations  # noqa: E402
from layerwise.spec.base import REGISTRY  # noqa: E402

R = Rope(d_head=4)
SEQ = (2, 6, 16)
# (id, block, input shape, vocab for token inputs)
CASES = [
    ("linear", Linear(d_in=8, d_out=6), (2, 5, 8), 0),
    ("linear-frozen", Linear(d_in=8, d_out=6, trainable=False), (2, 5, 8), 0),
    ("embedding", Embedding(vocab_size=11, d_model=8), (2, 5), 11),
    ("conv2d", Conv2d(c_in=3, c_out=4, kernel=3, padding=1), (2, 3, 8, 8), 0),
    ("conv1d", Conv1d(c_in=3, c_out=4, kernel=3), (2, 3, 9), 0),
    ("maxpool2d", MaxPool2d(kernel=2), (2, 3, 8, 8), 0),
    ("maxpool1d", MaxPool1d(kernel=2), (2, 3, 8), 0),
    ("avgpool2d", AvgPool2d(kernel=2), (2, 3, 8, 8), 0),
    ("avgpool1d", AvgPool1d(kernel=2), (2, 3, 8), 0),
    ("adaptive-1x1", AdaptiveAvgPool2d(output_size=1), (2, 3, 8, 8), 0),
    ("adaptive-2x2", AdaptiveAvgPool2d(output_size=2), (2, 3, 8, 8), 0),
    ("adaptive1d", AdaptiveAvgPool1d(output_size=3), (2, 3, 8), 0),
    ("flatten", Flatten(), (2, 3, 4), 0),
    ("dropout", Dropout(p=0.3), (2, 5, 8), 0),
    ("batchnorm2d", BatchNorm2d(n_features=3), (2, 3, 8, 8), 0),
    ("batchnorm1d", BatchNorm1d(n_features=3), (2, 3, 8), 0),
    ("layernorm", LayerNorm(d_model=8), (2, 5, 8), 0),
    ("rmsnorm", RMSNorm(d_model=8), (2, 5, 8), 0),
    *[(f"act-{k}", Activation(kind=k), (2, 5, 8), 0)
      for k in ("relu", "gelu", "silu", "tanh", "sigmoid", "softmax", "leaky_relu", "gelu_tanh")],
    ("learned_positions", LearnedPositions(max_seq=7, d_model=8), (2, 5, 8), 0),
    ("sinusoidal_positions", SinusoidalPositions(max_seq=7, d_model=8), (2, 5, 8), 0),
    ("cls_token", ClsToken(d_model=8), (2, 5, 8), 0),
    ("select_token", SelectToken(index=0), (2, 5, 8), 0),
    ("select-mean", SelectToken(index="mean"), (2, 5, 8), 0),
    ("patch-conv", __import__("layerwise.blocks", fromlist=["PatchEmbedding"]).PatchEmbedding(
        image_size=8, patch=4, c_in=3, d_model=8), (2, 3, 8, 8), 0),
    ("patch-linear", __import__("layerwise.blocks", fromlist=["PatchEmbedding"]).PatchEmbedding(
        image_size=8, patch=4, c_in=3, d_model=8, kind="linear"), (2, 3, 8, 8), 0),
    ("attn", Attention(d_model=16, n_heads=4), SEQ, 0),
    ("attn-causal-gqa", Attention(d_model=16, n_heads=4, n_kv_heads=2, causal=True), SEQ, 0),
    ("attn-mqa", Attention(d_model=16, n_heads=4, n_kv_heads=1, causal=True), SEQ, 0),
    ("attn-rope", Attention(d_model=16, n_heads=4, causal=True, rope=R), SEQ, 0),
    ("attn-qk-rmsnorm", Attention(d_model=16, n_heads=4, qk_norm="rmsnorm"), SEQ, 0),
    ("attn-qk-layernorm-bias", Attention(d_model=16, n_heads=4, qk_norm="layernorm", qkv_bias=True), SEQ, 0),
    ("attn-window", Attention(d_model=16, n_heads=4, causal=True, sliding_window=3), SEQ, 0),
    ("ffn", FFN(d_model=8, d_ff=16), (2, 5, 8), 0),
    ("ffn-swiglu", FFN(d_model=8, d_ff=16, gated=True, activation="silu", bias=False), (2, 5, 8), 0),
    ("ffn-dropout", FFN(d_model=8, d_ff=16, dropout=0.2, activation="relu"), (2, 5, 8), 0),
    ("lora", LoRA(base=Linear(d_in=8, d_out=6, trainable=False), rank=2), (2, 5, 8), 0),
    ("lora-dropout", LoRA(base=Linear(d_in=8, d_out=6, trainable=False), rank=2, dropout=0.1), (2, 5, 8), 0),
    ("residual", Residual(branch=Linear(d_in=8, d_out=8)), (2, 5, 8), 0),
    ("sequential-shared-input", Sequential(layers=(LayerNorm(d_model=8), Linear(d_in=8, d_out=8),
                                                   Activation(kind="relu"), Linear(d_in=8, d_out=4))), (2, 5, 8), 0),
    ("tb-pre", TransformerBlock(attn=Attention(d_model=16, n_heads=4, causal=True), ffn=FFN(d_model=16, d_ff=32)), SEQ, 0),
    ("tb-llama", TransformerBlock(attn=Attention(d_model=16, n_heads=4, n_kv_heads=2, causal=True, rope=R),
                                  ffn=FFN(d_model=16, d_ff=32, gated=True, activation="silu", bias=False),
                                  norm="rmsnorm"), SEQ, 0),
    ("tb-post-dropout", TransformerBlock(attn=Attention(d_model=16, n_heads=4), ffn=FFN(d_model=16, d_ff=32),
                                         norm_position="post", dropout=0.1), SEQ, 0),
    ("tb-parallel", TransformerBlock(attn=Attention(d_model=16, n_heads=4), ffn=FFN(d_model=16, d_ff=32),
                                     parallel=True), SEQ, 0),
    ("resnet_basic", ResNetBasic(c_in=4, c_mid=8, c_out=8, stride=2), (2, 4, 8, 8), 0),
    ("resnet_bottleneck", ResNetBottleneck(c_in=8, c_mid=4, c_out=16), (2, 8, 8, 8), 0),
    ("moe", MoE(d_model=8, d_ff=16, n_experts=4, top_k=2), (2, 5, 8), 0),
    ("moe-shared", MoE(d_model=8, d_ff=16, n_experts=3, top_k=2, shared_d_ff=8), (2, 5, 8), 0),
    ("moe-capacity", MoE(d_model=8, d_ff=16, n_experts=3, top_k=2, capacity_factor=1.25), (2, 5, 8), 0),
    ("moe-capacity-overflow-losses", MoE(d_model=8, d_ff=16, n_experts=4, top_k=1, capacity_factor=0.5,
                                         aux_loss_coef=0.01, z_loss_coef=0.001, shared_d_ff=8), (2, 5, 8), 0),
    ("moe-router-losses", MoE(d_model=8, d_ff=16, n_experts=4, top_k=2, aux_loss_coef=0.01, z_loss_coef=0.001),
     (2, 5, 8), 0),
    ("gru", RNN(kind="gru", d_in=8, d_hidden=6), (2, 5, 8), 0),
    ("lstm-2layer", RNN(kind="lstm", d_in=8, d_hidden=6, n_layers=2), (2, 5, 8), 0),
    ("rnn-bi-3layer-dropout", RNN(kind="rnn", d_in=8, d_hidden=6, n_layers=3, bidirectional=True, dropout=0.1),
     (2, 5, 8), 0),
    ("gru-last", RNN(kind="gru", d_in=8, d_hidden=6, output="last"), (2, 5, 8), 0),
]
# policy id -> (param/input dtype, autocast dtype)
POLICIES = {"fp32": ("fp32", None), "bf16-autocast": ("fp32", "bf16"), "pure-bf16": ("bf16", "bf16")}
ATTN = ("attn", "tb-")


def _measure(block, shape, vocab, dtype, autocast, impl):
    module = block.build()
    module.train()
    set_attention_impl(module, impl)
    set_moe_routing(module, "balanced")
    if autocast and not autocast == dtype:
        pass
    elif dtype != "fp32":
        module.to(torch.bfloat16)
    x = block_input(shape, tokens=vocab, dtype=dtype)
    with torch.backends.mkldnn.flags(enabled=False):  # the measure reading's RNN path
        return measured_saved(module, x, autocast=autocast if dtype == "fp32" else None)


def _params():
    for name, block, shape, vocab in CASES:
        for pol in POLICIES:
            if pol == "bf16-autocast" and block.type_name == "rnn" and block.kind != "gru":
                continue  # CPU autocast is modelled for the GRU only (rnn/lstm: not yet)
            impls = ("eager", "sdpa") if name.startswith(ATTN) else ("sdpa",)
            for impl in impls:
                yield pytest.param(block, shape, vocab, pol, impl, id=f"{name}-{pol}-{impl}")


@pytest.mark.parametrize("block,shape,vocab,pol,impl", list(_params()))
def test_saved_bytes_match_saved_tensors_hooks(block, shape, vocab, pol, impl):
    dtype, autocast = POLICIES[pol]
    got = _measure(block, shape, vocab, dtype, autocast, impl)
    policy = ActPolicy(dtype=dtype, autocast=autocast if dtype == "fp32" else None, attention=impl)
    assert activations(block, shape, policy, tokens=bool(vocab)).saved == got


def test_cuda_style_dropout_mask_is_one_byte_per_element():
    # CUDA's native_dropout saves a bool mask (1 B/elem) instead of CPU's full-precision one:
    # torch.native_dropout on the CPU reproduces it (DESIGN.md, "dropout masks").
    x = block_input((2, 5, 8))
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.native_dropout(x, 0.3, True)
    got = activations(Dropout(p=0.3), (2, 5, 8), ActPolicy(dropout_mask_bytes=1)).saved
    assert got == sum(seen.values()) == 2 * 5 * 8


def test_no_grad_saves_nothing():
    block = TransformerBlock(attn=Attention(d_model=16, n_heads=4, causal=True), ffn=FFN(d_model=16, d_ff=32))
    assert activations(block, SEQ, ActPolicy(grad=False)).saved == 0


def test_shared_input_counted_once():
    # q_proj, k_proj and v_proj all save the same input x: one storage. Summing the projections
    # as separate blocks would count x three times; the measurement counts it once.
    block = Attention(d_model=16, n_heads=4)
    x_bytes = 2 * 6 * 16 * 4
    per_child = sum(activations(p, SEQ).saved for p in (block.q_proj, block.k_proj, block.v_proj))
    assert per_child == 3 * x_bytes
    measured = _measure(block, SEQ, 0, "fp32", None, "sdpa")
    assert activations(block, SEQ).saved == measured
    # what sdpa attention saves besides x: q, k, v (views of the projections), its output (also
    # the o_proj input) and the fp32 logsumexp (B, H, S): no second or third copy of x
    assert measured == x_bytes + 4 * x_bytes + 2 * 4 * 6 * 4


def test_every_registered_type_has_an_activation_model():
    from layerwise.cost.activations import ACT

    leaves_and_custom = {b.type_name for _, b, _, _ in CASES}
    # composites without their own function run their trace() children as a chain
    chained = {"sequential", "repeat", "encoder", "vit", "resnet", "decoder_lm", "rope"}
    missing = sorted(set(REGISTRY) - leaves_and_custom - chained - set(ACT))
    assert not missing, f"no activation test/model for block types {missing}"
