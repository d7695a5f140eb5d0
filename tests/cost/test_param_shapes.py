"""Parameter shapes from the spec equal the built module's named_parameters(), name for name."""
import pytest
import torch

from layerwise.blocks import Linear, Sequential
from layerwise.cost.param_shapes import param_shapes
from layerwise.presets import PRESETS, get_preset
from layerwise.spec.lora import apply_lora


def _built_shapes(body):
    with torch.device("meta"):
        module = body.build()
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset(name):
    family = PRESETS[name][0]
    over = {"n_layers": 1} if family in ("decoder", "encoder", "vit") else {}
    body = get_preset(name, **over).body
    assert param_shapes(body) == _built_shapes(body)


def test_lora_and_rnn_variants():
    body = apply_lora(get_preset("tiny-gpt", n_layers=1).body, rank=4)
    assert param_shapes(body) == _built_shapes(body)
    from layerwise.spec.base import block_class

    rnn = block_class("rnn")(kind="lstm", d_in=5, d_hidden=7, n_layers=2, bidirectional=True)
    assert param_shapes(rnn) == _built_shapes(rnn)
    seq = Sequential(layers=(Linear(d_in=3, d_out=4), Linear(d_in=4, d_out=2, bias=False)))
    assert param_shapes(seq) == {"0.weight": (4, 3), "0.bias": (4,), "1.weight": (2, 4)}
