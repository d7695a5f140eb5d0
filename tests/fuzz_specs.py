"""The fuzzing engine shared by tests/test_fuzz.py (hypothesis, in make test) and bench/fuzz.py (a
long campaign): valid inputs mutated the way a careless hand or a hostile file would (types swapped,
keys dropped or added, sizes 0, -1, huge, floats, strings, the block type renamed), each run through
what reads them; the only acceptable outcomes are an answer or one LayerwiseError line (exit 2).

`Pick` is where the randomness comes from: hypothesis's `draw` in the test (so failures shrink) or a
seeded `random.Random` in the bench.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import yaml

from layerwise.cli import main
from layerwise.presets import get_preset
from layerwise.spec.base import REGISTRY
from layerwise.spec.io import to_data
from layerwise.train.config import TrainConfig

from refdata import HF_CONFIGS

# Small overrides of the presets: every family, each reading in milliseconds
SPEC_SEEDS = [
    ("tiny-gpt", {}),
    ("llama-2-7b", dict(n_layers=2, d_model=64, n_heads=4, d_ff=128, vocab_size=100, max_seq=32)),
    ("mixtral-8x7b", dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, vocab_size=100, max_seq=32,
                          n_experts=4)),
    ("phi-2", dict(n_layers=2, d_model=64, n_heads=4, vocab_size=100, max_seq=32)),
    ("bert-base", dict(n_layers=2, d_model=64, n_heads=4, vocab_size=100, max_seq=32)),
    ("vit-b-16", dict(n_layers=2, d_model=64, n_heads=4, image_size=32)),
    ("resnet-18", {}),
    ("digits-cnn", {}),
    ("text-gru", {}),
]
HF_SEEDS = ["gpt2.json", "llama-2-7b.json", "mixtral-8x7b-v0.1.json", "bert-base-uncased.json",
            "vit-base-patch16-224.json"]

# Values a mutation puts in place of another: wrong types, sizes at and past every edge
VALUES = [0, -1, 1, 2, 3, 7, 2**31, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63), 0.5, 1.0, -2.5, 1e308, float("nan"),
          float("inf"), float("-inf"), True, False, None, "", "x", "no", "true", "12", "relu", "rmsnorm", [], [0], [1, 2],
          [[1]], ["a"], {}, {"a": 1}, {"type": "linear"}, {"type": "linear", "d_in": 4, "d_out": 4},
          {"type": "nope"}, {"type": 3}]
KEYS = ["d_model", "n_heads", "n_layers", "type", "bias", "d_ff", "rank", "x", "", "block", "layers", "shape"]
COMMANDS = ("summary", "flops", "memory")


class Pick:
    """Choices for a mutation. `index(n)`: an int in [0, n)."""

    def __init__(self, index):
        self.index = index

    def one(self, seq):
        return seq[self.index(len(seq))]


def spec_seeds() -> list[dict]:
    return [to_data(get_preset(name, **kw)) for name, kw in SPEC_SEEDS]


def hf_seeds() -> list[dict]:
    return [json.loads((HF_CONFIGS / name).read_text()) for name in HF_SEEDS]


def train_seeds() -> list[dict]:
    base = TrainConfig().to_dict()
    return [base, dict(base, data={"source": "wine", "val_fraction": 0.2}, lora_rank=4, freeze=["q_proj"]),
            {"epochs": 2, "lr": 0.01, "data": "digits"}]


# ---- mutations ------------------------------------------------------------------------------------
def _slots(node, out: list) -> list:
    """(container, key) of every value in the tree, containers first."""
    if isinstance(node, dict):
        for key in list(node):
            out.append((node, key))
            _slots(node[key], out)
    elif isinstance(node, list):
        for i in range(len(node)):
            out.append((node, i))
            _slots(node[i], out)
    return out


def _containers(node, out: list) -> list:
    if isinstance(node, (dict, list)):
        out.append(node)
        for value in (node.values() if isinstance(node, dict) else node):
            _containers(value, out)
    return out


def mutate(data, pick: Pick, n: int):
    """`data` with `n` mutations applied (a deep copy)."""
    data = copy.deepcopy(data)
    for _ in range(n):
        slots = _slots(data, [])
        op = pick.one(("value", "value", "swap", "drop", "add", "type", "scale"))
        if op == "add" or not slots:
            box = pick.one(_containers(data, []) or [data])
            if isinstance(box, dict):
                box[pick.one(KEYS)] = copy.deepcopy(pick.one(VALUES))
            elif isinstance(box, list):
                box.append(copy.deepcopy(pick.one(VALUES + [s[0][s[1]] for s in slots[:50]])))
            continue
        box, key = pick.one(slots)
        if op == "value":
            box[key] = copy.deepcopy(pick.one(VALUES))
        elif op == "swap":  # a value of another field, perhaps of another type
            other, okey = pick.one(slots)
            box[key] = copy.deepcopy(other[okey])
        elif op == "drop":
            del box[key]
        elif op == "type":  # another registered block type, or the model
            box[key] = pick.one(sorted(REGISTRY) + ["model"]) if isinstance(box, dict) else pick.one(VALUES)
        elif op == "scale" and isinstance(box[key], int) and not isinstance(box[key], bool):
            box[key] = box[key] * pick.one((0, -1, 2, 1000, 2**31, 10**12)) + pick.one((0, 1, -1))
    return data


# ---- running a case -------------------------------------------------------------------------------
def write(data, path: Path, as_json: bool) -> Path:
    path = path.with_suffix(".json" if as_json else ".yaml")
    if as_json:
        path.write_text(json.dumps(data))
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli(*args: str) -> tuple[int, str, str]:
    """main() in process: (exit code, stdout, stderr); an exception escaping main() propagates."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def check_commands(path: Path, commands=COMMANDS) -> list[int]:
    """Each command on the file answers (exit 0, valid JSON) or refuses in one line (exit 2)."""
    codes = []
    for command in commands:
        code, out, err = cli(command, str(path), "--json")
        assert code in (0, 2), (command, code, err)
        if code == 0:
            json.loads(out)
        else:
            assert err.strip() and len(err.strip().splitlines()) <= 2 and "Traceback" not in err, (command, err)
        codes.append(code)
    return codes


def check_train_config(path: Path) -> bool:
    """The training config loads or is one LayerwiseError."""
    from layerwise.spec.errors import LayerwiseError

    try:
        TrainConfig.from_yaml(path)
    except LayerwiseError as err:
        assert str(err) and "\n" not in str(err).strip(), str(err)
        return False
    return True
