"""The encoder-decoder (layerwise.blocks.seq2seq): parameters against torch.nn.Transformer (the
design notes' example), the built module against its spec, the KV-cached decode against the plain
forward, decode FLOPs against FlopCounterMode, and training on the built-in reverse-digits task."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from layerwise.cost.flops import model_flops  # noqa: E402
from layerwise.measure.step import measure_step  # noqa: E402
from layerwise.presets import get_preset  # noqa: E402
from layerwise.spec.errors import SpecError  # noqa: E402
from layerwise.workload import Workload  # noqa: E402

SMALL = dict(n_layers=2, d_model=64, n_heads=4, d_ff=96, vocab_size=97, max_seq=32)
VARIANTS = {
    "shared": {},
    "separate-tied-learned": dict(share_embeddings=False, tie_embeddings=True, head_bias=False, positions="learned"),
    "pre-rms-3dec": dict(norm="rmsnorm", norm_position="pre", n_dec_layers=3, final_norm=False, bias=False,
                         head_bias=False),
    "dropout": dict(dropout=0.1, attn_dropout=0.1),
}


def notes_transformer(vocab: int, d: int, heads: int, layers: int, d_ff: int) -> nn.Module:
    """Design note 002 section 4.1.3's TransformerModel, with nn.Transformer's final norms."""
    model = nn.Module()
    model.transformer = nn.Transformer(d_model=d, nhead=heads, num_encoder_layers=layers, num_decoder_layers=layers,
                                       dim_feedforward=d_ff)
    model.embedding = nn.Embedding(vocab, d)
    model.linear = nn.Linear(d, vocab)
    return model


def test_transformer_base_params_equal_torch_nn_transformer():
    model = get_preset("transformer-base")
    with torch.device("meta"):
        ref = notes_transformer(37000, 512, 8, 6, 2048)
    assert model.params().total == sum(p.numel() for p in ref.parameters()) == 82_065_544


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_built_module_has_the_spec_params(name):
    model = get_preset("transformer-base", **SMALL, **VARIANTS[name])
    module = model.build()
    assert model.params().total == sum(p.numel() for p in module.parameters())
    x = torch.randint(0, 97, (2, 10, 2))
    assert tuple(module(x).shape) == model.out_shape((2, 10, 2)) == (2, 10, 97)


@pytest.mark.parametrize("name", ["shared", "separate-tied-learned", "pre-rms-3dec"])
def test_cached_decode_equals_the_full_forward(name):
    """Prefill (encoder -> cross caches, decoder input) then one token at a time through both caches
    gives the logits of the uncached forward on the whole decoder input."""
    torch.manual_seed(0)
    model = get_preset("transformer-base", **SMALL, **VARIANTS[name])
    module = model.build().eval()
    x = torch.randint(0, 97, (3, 9, 2))
    with torch.no_grad():
        full = module(x)
        cache = module.init_kv_cache(3, 9, torch.float32, 9)
        head = module(x[:, :5], cache, 0)  # source and decoder input of 5 positions
        cache = module.init_kv_cache(3, 9, torch.float32, 9)
        module.fill_cross(module.encode(x[..., 0]), cache)
        steps = [module(x[:, i:i + 1, 1], cache, i) for i in range(9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert head.shape == (3, 5, 97)


def test_greedy_generation_uses_both_caches_and_matches_recomputing():
    torch.manual_seed(0)
    module = get_preset("transformer-base", **SMALL).build().eval()
    src = torch.randint(0, 97, (2, 7))
    out = module.generate(src, start_token=1, new_tokens=5)
    tgt = torch.full((2, 1), 1)
    with torch.no_grad():
        for _ in range(5):  # no cache: the whole prefix again each step (source padded to its length)
            memory = module.encode(src)
            nxt = module.decode(tgt, memory)[:, -1:].argmax(-1)
            tgt = torch.cat((tgt, nxt), dim=1)
    assert torch.equal(out, tgt[:, 1:])


@pytest.mark.parametrize("seq,new_tokens", [(8, 1), (6, 5)])
@pytest.mark.parametrize("name", ["shared", "separate-tied-learned"])
def test_decode_flops_match_flop_counter(name, seq, new_tokens):
    model = get_preset("transformer-base", **SMALL, **VARIANTS[name])
    workload = Workload(mode="infer", batch=2, seq=seq, new_tokens=new_tokens)
    report, truth = model_flops(model, workload), measure_step(model, workload)
    assert report.flops.fwd_matmul + report.decode.fwd_matmul == truth.flops_forward
    assert report.decode.fwd_matmul > 0


def test_cross_attention_cache_is_counted_once_per_sequence():
    """Self caches grow with the generated tokens; the cross caches hold the memory's S positions."""
    from layerwise.cost.memory import inference_memory

    model = get_preset("transformer-base", **SMALL)
    kv = [inference_memory(model, Workload(mode="infer", batch=2, seq=8, new_tokens=n, precision="fp32")).components.kv_cache
          for n in (1, 2)]
    per_token = 2 * 2 * 2 * 64 * 4  # batch x K,V x dec layers x d_model x fp32
    assert kv[1] - kv[0] == per_token
    assert kv[0] == per_token * (8 + 1) + per_token * 8  # self: prompt + new; cross: the memory once


def test_input_must_be_source_and_target_pairs():
    model = get_preset("tiny-seq2seq")
    with pytest.raises(SpecError, match=r"\(B, S, 2\)"):
        model.out_shape((2, 12))
    with pytest.raises(SpecError, match="max_seq 12"):
        model.out_shape((2, 13, 2))


def test_trains_on_a_generated_task():
    """200 steps of sort-digits (seconds); the README's table has reverse-digits trained to 100%."""
    import tempfile

    from layerwise.train.config import DataConfig, TrainConfig
    from layerwise.train.trainer import train

    model = get_preset("tiny-seq2seq")
    cfg = TrainConfig(data=DataConfig(source="sort-digits"), lr=3e-3, warmup_steps=30, batch_size=64, max_steps=200)
    with tempfile.TemporaryDirectory() as d:
        result = train(model, cfg, d + "/run")
    assert result.test["accuracy"] > 0.6  # measured 0.755; chance 0.1 per digit, per-position guess < 0.5
