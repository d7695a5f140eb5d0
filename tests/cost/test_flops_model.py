"""The FLOPs reading of whole models against torch's FlopCounterMode (patched for CPU attention and
RNNs), for every preset at small sizes, every checkpointing mode the measure reading runs, and both
attention implementations. Published cross-checks name their source."""
import pytest
import torch

from layerwise.cost.flops import model_flops, training_compute
from layerwise.measure.flops import count_flops
from layerwise.measure.setup import apply_checkpointing, apply_runtime, loss_of, make_input, make_targets
from layerwise.presets import PRESETS, get_preset
from layerwise.workload import Workload

# Small sizes per family, so every preset builds and runs in well under a second.
_SMALL = {
    "decoder": dict(n_layers=2, d_model=64, n_heads=8, d_ff=96, vocab_size=97, max_seq=64),
    "encoder": dict(n_layers=2, d_model=64, n_heads=4, vocab_size=97, max_seq=64),
    "vit": dict(image_size=16, patch=4, d_model=32, n_layers=2, n_heads=4, d_ff=64, n_classes=10),
    "resnet": dict(layers=(1, 1, 1, 1)),
    "seq2seq": dict(n_layers=2, d_model=64, n_heads=4, d_ff=96, vocab_size=97, max_seq=64),
    "mamba": dict(n_layers=2, d_model=64, vocab_size=97, max_seq=64),
    "deepseek": dict(n_layers=4, d_model=64, n_heads=4, d_ff=96, vocab_size=97, max_seq=64, kv_rank=32, d_nope=16,
                     d_rope=8, d_v=16, d_expert=32, n_experts=16),  # V3's 8 groups of 2 experts stay whole
}


def small(name):
    family, keywords, _ = PRESETS[name]
    over = dict(_SMALL.get(family, {}))
    if "n_kv_heads" in keywords:
        over["n_kv_heads"] = 2
    if "n_experts" in keywords and family != "deepseek":
        over.update(n_experts=4, top_k=2)
    if "sliding_window" in keywords:
        over["sliding_window"] = 8
    return get_preset(name, **over) if over else get_preset(name)


def _workload(model, **kw):
    if model.input.kind == "tokens":
        kw.setdefault("seq", 16)
    if model.input.kind == "image" and model.input.shape[1] > 32:
        kw.setdefault("image", (32, 32))
    return Workload(batch=2, **kw)


def measured(model, workload):
    torch.manual_seed(0)
    module = model.build()
    module.train()
    apply_runtime(module, workload)
    apply_checkpointing(module, workload, spec=model.body)
    x = make_input(model.input.kind, model.input_shape(workload.batch, workload.seq, workload.image),
                   model.input.vocab_size, workload)
    holder = {}

    def loss_fn(out):
        holder["targets"] = make_targets(tuple(out.shape), model.task)
        return loss_of(out, holder["targets"], model.task)

    return count_flops(module, x, loss_fn=loss_fn)


def _cases():
    for name in PRESETS:
        yield pytest.param(name, "sdpa", "none", id=f"{name}-sdpa")
        family = PRESETS[name][0]
        if family in ("decoder", "encoder", "vit", "seq2seq"):
            yield pytest.param(name, "eager", "full", id=f"{name}-eager-ckpt")


@pytest.mark.parametrize("name, attention, checkpointing", list(_cases()))
def test_matmul_flops_equal_flop_counter(name, attention, checkpointing):
    model = small(name)
    workload = _workload(model, attention=attention, checkpointing=checkpointing)
    analytic = model_flops(model, workload).flops
    truth = measured(model, workload)
    assert (analytic.fwd_matmul, analytic.bwd_matmul) == (truth.forward, truth.backward)


def test_checkpointing_adds_one_forward_of_each_block_to_backward():
    # torch's non-reentrant checkpoint stops recomputing once the last saved tensor is rebuilt
    # (early stop), so a pre-norm block's final down projection (2·tokens·d_ff·d_model) is skipped.
    model = small("llama-2-7b")
    plain = model_flops(model, _workload(model)).flops
    ckpt = model_flops(model, _workload(model, checkpointing="full")).flops
    per_block = dict(model.body.children())["blocks"]
    tokens, d_model, d_ff = 2 * 16, 64, 96
    extra = sum(b.flops((2, 16, d_model)).fwd_matmul - 2 * tokens * d_ff * d_model for _, b in per_block.children())
    assert ckpt.bwd_matmul - plain.bwd_matmul == extra > 0
    assert ckpt.fwd_matmul == plain.fwd_matmul


def test_llama_2_7b_at_seq_2048_under_fake_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    model = get_preset("llama-2-7b", n_layers=2)
    workload = Workload(batch=1, seq=2048)
    with FakeTensorMode(allow_non_fake_inputs=True):
        truth = measured(model, workload)
    analytic = model_flops(model, workload).flops
    assert (analytic.fwd_matmul, analytic.bwd_matmul) == (truth.forward, truth.backward)


def test_causal_attention_reports_the_masked_half():
    model = small("gpt2")
    f = model_flops(model, _workload(model)).flops
    # scores and values: 2 matmuls x 2·b·h·s²·d_head per layer; the masked half is s(s-1)/2 of s² entries
    b, s, d, layers = 2, 16, 64, 2
    full = layers * 2 * 2 * b * s * s * d
    assert f.causal_skippable == full * (s * (s - 1) // 2) // (s * s)


# ---- published cross-checks -------------------------------------------------------------------
def test_resnet50_and_vit_b16_macs_match_torchvision_table():
    # torchvision weights tables (refdata memory_flops_facts.md §5): "GFLOPS" are GMACs at 224x224:
    # resnet50 4.089, vit_b_16 17.564 (ViT counted with attention matmuls, as torchvision does).
    infer = Workload(batch=1, mode="infer")
    resnet = model_flops(get_preset("resnet-50"), infer).flops.fwd_matmul / 2
    vit = model_flops(get_preset("vit-b-16"), infer).flops.fwd_matmul / 2
    assert resnet / 1e9 == pytest.approx(4.089, abs=0.0005)
    assert vit / 1e9 == pytest.approx(17.564, abs=0.0005)


def test_gpt3_175b_training_compute_follows_6nd():
    # GPT-3 paper Table D.1 (refdata §6): 3.14e23 FLOPs for 174.6B params x 300B tokens under 6ND.
    # Our decoder at GPT-3 175B's shape (96 layers, d_model 12288, 96 heads, n_ctx 2048, vocab 50257).
    model = get_preset("gpt2", n_layers=96, d_model=12288, n_heads=96, max_seq=2048)
    tc = training_compute(model, Workload(batch=1, seq=2048), tokens=300 * 10**9)
    assert tc.six_nd == pytest.approx(3.14e23, rel=0.01)
    # Our count adds attention s² terms and the logits over 6ND (Korthikanti's formula gives +2.8%, §6).
    assert 0.0 < tc.ratio_to_6nd - 1 < 0.06


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_selective_checkpointing_recompute_matches_flop_counter(attention):
    # Selective recompute reruns the attention core only; torch's checkpoint stops at the last saved
    # tensor, so eager recomputes q@k^T (and the softmax) but not probs@v, while sdpa reruns the op.
    model = small("llama-2-7b")
    workload = _workload(model, attention=attention, checkpointing="selective")
    analytic = model_flops(model, workload).flops
    truth = measured(model, workload)
    assert (analytic.fwd_matmul, analytic.bwd_matmul) == (truth.forward, truth.backward)


def test_sdpa_with_attention_dropout_on_cpu_counts_the_math_path():
    from layerwise.blocks import FFN, Attention, DecoderLM, TransformerBlock
    from layerwise.spec.model import InputSpec, Model

    block = TransformerBlock(attn=Attention(d_model=32, n_heads=4, causal=True, dropout=0.1), ffn=FFN(d_model=32, d_ff=64))
    body = DecoderLM(vocab_size=50, d_model=32, n_layers=2, block=block, max_seq=16)
    model = Model(name="lm", body=body, task="lm", input=InputSpec(kind="tokens", shape=(16,), vocab_size=50, max_seq=16))
    workload = _workload(model, attention="sdpa")
    analytic = model_flops(model, workload).flops
    truth = measured(model, workload)
    assert (analytic.fwd_matmul, analytic.bwd_matmul) == (truth.forward, truth.backward)
