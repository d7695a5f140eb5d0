"""Every preset, built: analytic params == the built module's (unique, tied once), BN stats as
buffers; tiny versions run forward with the predicted shape and parameter names follow spec paths."""
from __future__ import annotations

import pytest
import torch

from layerwise.presets import PRESETS, get_preset, list_presets
from layerwise.spec.base import walk
from layerwise.spec.errors import LayerwiseError

# Overrides that shrink each family to something that runs in milliseconds.
_TINY_DECODER = dict(vocab_size=64, d_model=32, n_heads=4, d_ff=48, n_layers=2, max_seq=16)
TINY = {
    "decoder": _TINY_DECODER,
    "encoder": dict(vocab_size=64, d_model=32, n_heads=4, d_ff=48, n_layers=2, max_seq=16),
    "vit": dict(image_size=16, patch=4, d_model=32, n_heads=4, d_ff=48, n_layers=2),
    "resnet": dict(widths=(4, 8, 8, 8), stem_width=4, n_classes=5, image_size=32),
    "text_rnn": dict(max_seq=12),
    "cnn": {},
    "seq2seq": dict(vocab_size=64, d_model=32, n_heads=4, d_ff=48, n_layers=2, max_seq=16),
    "mamba": dict(vocab_size=64, d_model=32, n_layers=2, max_seq=16),
    "deepseek": dict(vocab_size=64, d_model=32, n_heads=4, d_ff=48, n_layers=4, max_seq=16, kv_rank=16, d_nope=8,
                     d_rope=4, d_v=8, d_expert=8, n_experts=16),  # 4 layers: V3's 3 dense ones, then MoE
}


def tiny(name: str):
    family, keywords, _ = PRESETS[name]
    over = dict(TINY[family])
    if keywords.get("n_kv_heads"):
        over["n_kv_heads"] = 2  # keep GQA
    return get_preset(name, **over)


def module_counts(module: torch.nn.Module) -> tuple[int, int, int]:
    """(trainable, frozen, buffers) over unique tensors, as DESIGN.md defines ground truth."""
    params = list(module.parameters())  # parameters() already yields a shared tensor once
    assert len({id(p) for p in params}) == len(params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    frozen = sum(p.numel() for p in params if not p.requires_grad)
    return trainable, frozen, sum(b.numel() for b in module.buffers())


def sample_input(model, batch: int = 2):
    shape = model.input_shape(batch)
    if model.input.kind == "tokens":
        return torch.randint(0, model.input.vocab_size, shape)
    return torch.randn(shape)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_full_size_params_match_meta_build(name):
    model = get_preset(name)
    with torch.device("meta"):
        module = model.build()
    p = model.params()
    assert module_counts(module) == (p.trainable, p.frozen, p.buffers)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_tiny_forward_shape_and_parameter_paths(name):
    model = tiny(name)
    torch.manual_seed(0)
    module = model.build().eval()
    x = sample_input(model)
    with torch.no_grad():
        y = module(x)
    assert tuple(y.shape) == model.out_shape(tuple(x.shape))
    assert torch.isfinite(y).all()
    p = model.params()
    assert module_counts(module) == (p.trainable, p.frozen, p.buffers)
    # Every parameter lives under a spec leaf that owns parameters, and every such leaf has some.
    leaves = {info.path for info in walk(model.body, tuple(x.shape))
              if not info.block.trace(info.in_shape) and info.block.own_params().total > 0}
    names = [n for n, _ in module.named_parameters()]
    owner = {n: max((leaf for leaf in leaves if n.startswith(leaf + ".")), key=len, default=None) for n in names}
    assert None not in owner.values(), [n for n, o in owner.items() if o is None]
    assert set(owner.values()) == leaves


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_tiny_matmul_flops_match_flop_counter(name):
    from layerwise.build.runtime import set_attention_impl, set_moe_routing
    from layerwise.measure.flops import count_flops
    from layerwise.spec.counts import FlopCtx

    model = tiny(name)
    torch.manual_seed(0)
    module = model.build()
    set_attention_impl(module, "sdpa")
    set_moe_routing(module, "balanced")
    x = sample_input(model)  # ids or an image that needs no grad
    analytic = model.body.flops(tuple(x.shape), FlopCtx(input_grad=False))
    measured = count_flops(module, x)
    assert (measured.forward, measured.backward) == (analytic.fwd_matmul, analytic.bwd_matmul)


def test_list_presets_rows():
    rows = {r.name: r for r in list_presets()}
    assert set(rows) == set(PRESETS)
    assert rows["gpt2"].family == "decoder" and rows["gpt2"].params == get_preset("gpt2").params().total
    assert all(r.source for r in rows.values())  # every preset names its source
    assert all(get_preset(n).source == r.source for n, r in rows.items())


def test_overrides_change_the_model_and_are_recorded():
    small = get_preset("llama-2-7b", n_layers=2)
    full = get_preset("llama-2-7b")
    assert small.body.n_layers == 2
    per_layer = (full.params().total - small.params().total) // 30
    assert full.params().total - 30 * per_layer == small.params().total
    assert dict(small.defaults) == {"n_layers": 2}


def test_unknown_preset_and_keyword_errors():
    with pytest.raises(LayerwiseError, match="did you mean 'llama-2-7b'"):
        get_preset("llama-2-7")
    with pytest.raises(LayerwiseError, match="did you mean 'n_layers'"):
        get_preset("gpt2", n_layer=2)
    with pytest.raises(LayerwiseError, match=r"^gpt2: attention.d_model \(768\) must be divisible by n_heads \(5\)"):
        get_preset("gpt2", n_heads=5)
