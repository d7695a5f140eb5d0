"""decoder_lm, encoder, vit and resnet composites: params and matmul FLOPs against the built module,
the tied head's real sharing, depth, and errors."""
from __future__ import annotations

import pytest
import torch

from layerwise.blocks import FFN, Attention, DecoderLM, Encoder, ResNet, ResNetBasic, ResNetBottleneck, Rope, TransformerBlock, ViT
from layerwise.build.runtime import set_attention_impl
from layerwise.measure.flops import count_flops
from layerwise.spec.counts import FlopCtx
from layerwise.spec.errors import SpecError
from layerwise.spec.transform import freeze

D, V = 16, 40


def block(rope=False, **kw):
    a = Attention(d_model=D, n_heads=4, causal=True, rope=Rope(d_head=4) if rope else None)
    return TransformerBlock(attn=a, ffn=FFN(d_model=D, d_ff=24), **kw)


def counts(module):
    ps = list(module.parameters())
    return (sum(p.numel() for p in ps if p.requires_grad), sum(p.numel() for p in ps if not p.requires_grad),
            sum(b.numel() for b in module.buffers()))


def check(spec, x, input_grad=False):
    """Params (trainable, frozen, buffers) and matmul FLOPs of `spec` equal the built module's."""
    torch.manual_seed(0)
    module = spec.build()
    set_attention_impl(module, "sdpa")
    p = spec.params()
    assert counts(module) == (p.trainable, p.frozen, p.buffers)
    shape = tuple(x.shape)
    analytic = spec.flops(shape, FlopCtx(input_grad=input_grad))
    trains = p.trainable > 0 or input_grad
    measured = count_flops(module, x, backward=trains)
    assert measured.forward == analytic.fwd_matmul
    assert measured.backward == (analytic.bwd_matmul if trains else 0)
    assert tuple(module(x).shape) == spec.out_shape(shape)
    return module


LMS = {
    "gpt2-tied": DecoderLM(vocab_size=V, d_model=D, n_layers=2, block=block(), max_seq=8, tie_embeddings=True),
    "untied-bias": DecoderLM(vocab_size=V, d_model=D, n_layers=1, block=block(parallel=True), max_seq=8, head_bias=True),
    "rope-rms": DecoderLM(vocab_size=V, d_model=D, n_layers=2, block=block(rope=True, norm="rmsnorm"), max_seq=8,
                          positions="rope", final_norm="rmsnorm"),
    "sinusoidal-nofinal": DecoderLM(vocab_size=V, d_model=D, n_layers=1, block=block(), max_seq=8, positions="sinusoidal",
                                    final_norm="none", dropout=0.1),
    "opt-rows": DecoderLM(vocab_size=V, d_model=D, n_layers=1, block=block(), max_seq=8, pos_rows=10, tie_embeddings=True),
}


@pytest.mark.parametrize("name", sorted(LMS))
@pytest.mark.parametrize("frozen", [(), ("*",), ("*attn*",)], ids=["trainable", "frozen", "attn-frozen"])
def test_decoder_lm_matches_module(name, frozen):
    spec = freeze(LMS[name], frozen) if frozen else LMS[name]
    check(spec, torch.randint(0, V, (2, 6)))


def test_tied_head_really_shares_the_embedding():
    spec = LMS["gpt2-tied"]
    m = spec.build()
    names = [n for n, _ in m.named_parameters()]
    assert not any(n.startswith("lm_head") for n in names) and "embed.weight" in names
    assert spec.params().total == sum(p.numel() for p in m.parameters())  # counted once
    ids = torch.randint(0, V // 2, (2, 6))  # tokens from the first half of the vocabulary only
    m(ids).sum().backward()
    # Rows of tokens never looked up still get a gradient: it can only come through the head.
    assert m.embed.weight.grad[V // 2:].abs().sum() > 0
    with torch.no_grad():
        m.embed.weight[V - 1] += 1.0  # moving one row moves that logit: the head reads the same tensor
    untied = LMS["untied-bias"].build()
    assert "lm_head.weight" in dict(untied.named_parameters())


def test_decoder_lm_depth_and_errors():
    tied, untied = LMS["gpt2-tied"], DecoderLM(vocab_size=V, d_model=D, n_layers=2, block=block(), max_seq=8)
    assert tied.depth() == untied.depth()  # the tied projection is a layer on the path, like lm_head
    with pytest.raises(SpecError, match="longer than max_seq 8"):
        tied.out_shape((2, 9))
    with pytest.raises(SpecError, match="tied head has no bias"):
        DecoderLM(vocab_size=V, d_model=D, n_layers=1, block=block(), max_seq=8, tie_embeddings=True, head_bias=True)
    with pytest.raises(SpecError, match="d_model 16, expected 32"):
        DecoderLM(vocab_size=V, d_model=32, n_layers=1, block=block(), max_seq=8)


@pytest.mark.parametrize("pooler,types", [(True, 2), (False, 0), (True, 1)])
def test_encoder_matches_module(pooler, types):
    spec = Encoder(vocab_size=V, d_model=D, n_layers=2, block=block(norm_position="post", norm_eps=1e-12), max_seq=8,
                   type_vocab_size=types, pooler=pooler)
    m = check(spec, torch.randint(0, V, (2, 6)))
    want = {"embed", "pos", "embed_norm", "blocks"} | ({"pooler"} if pooler else set()) | ({"token_type"} if types else set())
    assert {n.split(".")[0] for n, _ in m.named_parameters()} == want
    if pooler:
        assert "pooler.dense.weight" in dict(m.named_parameters())


@pytest.mark.parametrize("n_classes,pooler,kind", [(5, False, "conv"), (0, True, "linear"), (0, False, "conv"), (3, True, "conv")])
def test_vit_matches_module(n_classes, pooler, kind):
    spec = ViT(image_size=8, patch=4, c_in=3, d_model=D, n_layers=2, block=block(), n_classes=n_classes,
               patch_kind=kind, pooler=pooler)
    check(spec, torch.randn(2, 3, 8, 8, requires_grad=True), input_grad=True)
    out = spec.out_shape((2, 3, 8, 8))
    assert out == ((2, n_classes) if n_classes else (2, D) if pooler else (2, 5, D))
    with pytest.raises(SpecError, match="expected 8x8 images"):
        spec.out_shape((2, 3, 16, 16))


RES = {
    "basic-same": ResNetBasic(c_in=8, c_mid=8, c_out=8),
    "basic-down": ResNetBasic(c_in=4, c_mid=8, c_out=8, stride=2),
    "bottleneck": ResNetBottleneck(c_in=8, c_mid=4, c_out=16, stride=2),
    "bottleneck-same": ResNetBottleneck(c_in=16, c_mid=4, c_out=16),
}


@pytest.mark.parametrize("name", sorted(RES))
@pytest.mark.parametrize("input_grad,frozen", [(True, ()), (False, ()), (True, ("*",))])
def test_resnet_blocks_match_module(name, input_grad, frozen):
    spec = freeze(RES[name], frozen) if frozen else RES[name]
    assert spec.params().trainable == (0 if frozen else spec.params().total)
    check(spec, torch.randn(2, spec.c_in, 9, 9, requires_grad=input_grad), input_grad)


def test_resnet_block_wiring_and_depth():
    spec = RES["basic-down"]
    m = spec.build().eval()
    x = torch.randn(2, 4, 8, 8)
    main = m.bn2(m.conv2(torch.relu(m.bn1(m.conv1(x)))))
    torch.testing.assert_close(m(x), torch.relu(main + m.downsample(x)))
    assert [n for n, _ in m.downsample.named_children()] == ["0", "1"]  # torchvision's names
    assert spec.depth() == 2  # conv, conv (norms do not count); the downsample (1) runs alongside
    assert RES["bottleneck"].depth() == 3
    assert "downsample" not in dict(RES["basic-same"].children())


def test_small_resnet_network_matches_module():
    spec = ResNet(layers=(1, 2), widths=(4, 8), stem_width=4, n_classes=3, bottleneck=True)
    m = check(spec, torch.randn(2, 3, 32, 32))
    assert spec.out_shape((2, 3, 32, 32)) == (2, 3)
    assert {n.split(".")[0] for n, _ in m.named_parameters()} == {"stem", "stages", "head"}
    with pytest.raises(SpecError, match="same length"):
        ResNet(layers=(1, 2), widths=(4,))


@pytest.mark.parametrize("frozen", [(), ("*",)])
def test_encoder_mlm_head_ties_the_decoder(frozen):
    spec = Encoder(vocab_size=V, d_model=D, n_layers=1, block=block(norm_position="post"), max_seq=8, pooler=False,
                   mlm_head=True)
    spec = freeze(spec, frozen) if frozen else spec
    m = check(spec, torch.randint(0, V, (2, 6)))
    assert spec.out_shape((2, 6)) == (2, 6, V)
    names = dict(m.named_parameters())
    assert "mlm_bias" in names and "mlm_head.dense.weight" in names and not any("decoder" in n for n in names)
    with pytest.raises(SpecError, match="pooler and mlm_head are alternatives"):
        Encoder(vocab_size=V, d_model=D, n_layers=1, block=block(), max_seq=8, mlm_head=True)
