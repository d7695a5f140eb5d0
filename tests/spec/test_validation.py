"""Validation at the edge: every value from a spec file, an HF config.json or a training config is
checked against its field's declared type before anything is made, and the error names the file,
the line, the key path and what was expected."""
from __future__ import annotations

import pytest

from layerwise.presets.hf import from_hf_config
from layerwise.spec.base import block_class
from layerwise.spec.errors import LayerwiseError, SpecError
from layerwise.spec.fieldtypes import conforms
from layerwise.spec.io import from_data, load
from layerwise.train.config import TrainConfig

MODEL = """\
type: model
name: m
input: {{kind: features, shape: [8]}}
body:
  type: sequential
  layers:
    - type: linear
      d_in: 8
      d_out: 4
      bias: {bias}
    - {{type: activation, kind: relu}}
"""


@pytest.mark.parametrize("value, line, expected", [
    ('"no"', 10, "body.layers.0.bias: expected true or false, got 'no' (a string)"),
    ("1", 10, "body.layers.0.bias: expected true or false, got 1 (an integer)"),
    ("[true]", 10, "body.layers.0.bias: expected true or false, got [True] (a list)"),
])
def test_a_wrong_type_names_file_line_path_and_expectation(tmp_path, value, line, expected):
    path = tmp_path / "m.yaml"
    path.write_text(MODEL.format(bias=value))
    with pytest.raises(SpecError) as err:
        load(path)
    assert str(err.value) == f"{path}:{line}: {expected}"


@pytest.mark.parametrize("data, message", [
    ({"type": "linear", "d_in": True, "d_out": 4}, "d_in: expected an integer, got True (a bool)"),
    ({"type": "linear", "d_in": 4.0, "d_out": 4}, "d_in: expected an integer, got 4.0 (a number)"),
    ({"type": "linear", "d_in": 2**63, "d_out": 4}, "beyond int64"),
    ({"type": "repeat", "block": [{"type": "linear", "d_in": 4, "d_out": 4}], "n_layers": 2},
     "block: expected a block (a mapping with a 'type'), got [{"),
    ({"type": "sequential", "layers": {"type": "linear", "d_in": 4, "d_out": 4}},
     "layers: expected a list of blocks (mappings with a 'type'), got {"),
    ({"type": "lora", "base": {"type": "conv1d", "c_in": 2, "c_out": 2, "kernel": 1}, "rank": 2},
     "base: expected a linear block, got a 'conv1d' block"),
    ({"type": "attention", "d_model": 8, "n_heads": 2, "dropout": float("nan")}, "dropout: expected a finite number"),
    ({"type": "conv2d", "c_in": 2, "c_out": 2, "kernel": [3, "3"]}, "kernel.1: expected an integer, got '3'"),
    ({"type": 3}, "'type' must be a block type name (a string), got 3"),
    ({"type": "sequential", "layers": [{"d_in": 4}]}, "layers.0: expected a block: a mapping with a 'type' key"),
])
def test_types_are_checked_before_any_block_is_made(monkeypatch, data, message):
    made = []
    cls = block_class("linear")
    init = cls.__init__
    monkeypatch.setattr(cls, "__init__", lambda self, **kw: (made.append(kw), init(self, **kw))[1])
    with pytest.raises(SpecError) as err:
        from_data(data)
    assert message in str(err.value)
    assert made == []  # refused before the first block (even a valid one) was constructed


def test_blocks_made_in_python_are_checked_too():
    with pytest.raises(SpecError, match="linear.bias must be true or false, got 'no'"):
        block_class("linear")(d_in=4, d_out=4, bias="no")
    with pytest.raises(SpecError, match="moe.n_experts must be an integer, got 8.0"):
        block_class("moe")(d_model=4, d_ff=8, n_experts=8.0, top_k=2)
    assert block_class("conv1d")(c_in=2, c_out=2, kernel=[3]).kernel == (3,)  # a list is a tuple


def test_the_type_rules():
    assert conforms(3, int) and not conforms(True, int) and not conforms(3.0, int)
    assert conforms(3, float) and not conforms(float("inf"), float) and not conforms(False, float)
    assert conforms(None, int | None) and conforms([1, 2], tuple[int, ...]) and not conforms([1, "2"], tuple[int, ...])
    assert conforms((1, 2), tuple[int, int]) and not conforms((1, 2, 3), tuple[int, int])


def test_hf_config_values_are_typed():
    config = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
              "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64}
    assert from_hf_config(config).params().total > 0
    for key, value, message in [("tie_word_embeddings", "no", "'tie_word_embeddings' must be true or false"),
                                ("rms_norm_eps", float("nan"), "'rms_norm_eps' must be a finite number"),
                                ("hidden_size", 64.0, "'hidden_size' must be a positive integer"),
                                ("hidden_act", ["silu"], "'hidden_act' must be a string"),
                                ("model_type", ["llama"], "model_type ['llama'] is not supported")]:
        with pytest.raises(LayerwiseError, match=message.replace("[", r"\[").replace("]", r"\]")):
            from_hf_config({**config, key: value})


def test_training_config_values_are_typed_with_file_and_line(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 2\nlr: fast\n")
    with pytest.raises(LayerwiseError, match=rf"{path}:2: lr: must be a finite number, got 'fast'"):
        TrainConfig.from_yaml(path)
    path.write_text("epochs: 2\ndata:\n  source: digits\n  seed: true\n")
    with pytest.raises(LayerwiseError, match=rf"{path}:4: data.seed: must be an integer, got True"):
        TrainConfig.from_yaml(path)
    path.write_text("epochs: 2\nbetas: [0.9]\n")
    with pytest.raises(LayerwiseError, match="betas: must be a list of 2"):
        TrainConfig.from_yaml(path)


@pytest.mark.parametrize("data, message", [
    ({"type": "rnn", "kind": "gru", "d_in": 4, "d_hidden": 4, "n_layers": 2**31},
     "rnn.n_layers 2147483648: torch's nn.GRU holds and runs its layers one by one"),
    ({"type": "resnet", "layers": [2, 2, 5000, 2]}, "a stage lists its blocks one by one, at most 4096"),
])
def test_sizes_listed_one_by_one_have_a_ceiling(data, message):
    # what torch itself names and runs one by one cannot be read as one copy times n: refused
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        from_data(data)
    at_limit = dict(data, **({"n_layers": 1024} if data["type"] == "rnn" else {"layers": [2, 2, 4096, 2]}))
    assert from_data(at_limit).params().total > 0
