"""Absurd sizes answer with exact integers (issue #15): a million layers and 2**31 experts are read
as one layer and one expert, multiplied. Each number is checked against small models of the same
family read copy by copy: every layer sees the same shape, so parameters, FLOPs and the memory's
peak grow by the same amount per layer (an affine function of the layer count), and the answer at
10**6 layers must be that function's value. The time (well under a second) is bench/huge.py's."""
from __future__ import annotations

import contextlib
import io
import json

import pytest

from layerwise.cli import main
from layerwise.presets import get_preset
from layerwise.spec.io import dump

LLAMA = dict(d_model=64, n_heads=4, d_ff=128, vocab_size=100, max_seq=64)
MIXTRAL = dict(d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, vocab_size=100, max_seq=64)


def _read(tmp_path, preset: str, workload: tuple, **kw) -> dict:
    """summary, flops and memory --json of the preset with `kw`, through the CLI's main()."""
    path = tmp_path / f"{preset}-{'-'.join(f'{k}{v}' for k, v in sorted(kw.items()))}.yaml"
    dump(get_preset(preset, **kw), path)
    out = {}
    for command in ("summary", "flops", "memory"):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            flags = workload if command != "summary" else ()  # summary: one sample, no workload
            assert main([command, str(path), "--json", *flags]) == 0, command
        out[command] = json.loads(buf.getvalue())
    return out


def _numbers(answer: dict) -> dict[str, int]:
    return {"params": answer["summary"]["params"]["total"], "flops": answer["flops"]["total"],
            "forward": answer["flops"]["forward"], "peak": answer["memory"]["peak_bytes"],
            **{part: answer["memory"]["components"][part] for part in ("weights", "gradients", "optimizer_states")}}


# 4 tokens x top-2 = 8 (token, expert) pairs: with 16, 17 or 2**31 experts, experts 0-7 get one
# row each and the others none (balanced routing), so each added expert adds the same bytes
@pytest.mark.parametrize("preset, kw, key, big, workload", [
    ("llama-2-7b", LLAMA, "n_layers", 10**6, ("--batch", "2", "--seq", "16")),
    ("mixtral-8x7b", dict(MIXTRAL, n_layers=1), "n_experts", 2**31, ("--batch", "1", "--seq", "4")),
    ("mixtral-8x7b", dict(MIXTRAL, n_experts=8), "n_layers", 10**6, ("--batch", "1", "--seq", "8")),
])
def test_a_million_copies_answer_exactly(tmp_path, preset, kw, key, big, workload):
    first = 16
    small = [_numbers(_read(tmp_path, preset, workload, **{**kw, key: n})) for n in (first, first + 1)]
    huge = _numbers(_read(tmp_path, preset, workload, **{**kw, key: big}))
    for name, value in huge.items():
        if name == "peak" and key == "n_experts":  # the router becomes the largest tensor: the loop
            continue  # optimizer's temporaries (2 x the largest) are not affine in n_experts
        step = small[1][name] - small[0][name]
        assert step > 0, name
        assert value == small[0][name] + (big - first) * step, name


def test_expert_combinations_too_long_to_write_are_named(tmp_path):
    # C(2**31, 2**20) has ~4 million digits (minutes to compute, past Python's int-to-text limit)
    path = tmp_path / "moe.yaml"
    dump(get_preset("mixtral-8x7b", **dict(MIXTRAL, n_layers=1, n_experts=2**31, top_k=2**20)), path)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["summary", str(path), "--json"]) == 0
    (row,) = json.loads(buf.getvalue())["moe"]
    assert row["combinations"] is None and (row["n_experts"], row["top_k"]) == (2**31, 2**20)
    small = get_preset("mixtral-8x7b", **dict(MIXTRAL, n_layers=1, n_experts=64, top_k=8))
    dump(small, path)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["summary", str(path), "--json"]) == 0
    assert json.loads(buf.getvalue())["moe"][0]["combinations"] == 4_426_165_368  # 64 choose 8
