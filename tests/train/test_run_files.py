"""Every file read from a run directory is checked: truncated, bit-flipped, replaced or hand-edited
files (and malicious pickles) are one line naming the file, exit 2; a damaged newest checkpoint
falls back to the previous good one with a warning (docs/RUNS.md)."""
from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest

from layerwise.cli import main
from layerwise.spec import io as spec_io
from layerwise.train import integrity
from layerwise.train.run import load_run
from layerwise.train.trainer import train

from _train_models import config, mlp


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    train(mlp(), config(max_steps=6, checkpoint_every=2, eval_every=2, keep_last=3), run)
    return run


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _bit_flip(p):
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x10
    p.write_bytes(bytes(data))


def _replace(p):
    p.write_bytes(b"\x00\x01 not what was written \xff")


def _hand_edit(p):
    p.write_bytes(p.read_bytes() + b"\n# edited\n")


DAMAGE = {"truncated": _truncate, "bit-flipped": _bit_flip, "replaced": _replace, "hand-edited": _hand_edit}
FILES = ["checkpoints/best/model.safetensors", "checkpoints/best/state.pt", "checkpoints/best/manifest.json",
         "spec.yaml", "config.yaml", "manifest.json"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("name", FILES)
def test_each_damaged_file_is_one_line_naming_it(run, name, damage, capsys):
    DAMAGE[damage](run / name)
    assert main(["evaluate", str(run), "--which", "best", "--split", "val"]) == 2
    err = _one_line_error(capsys)
    # a manifest whose hex digits changed still parses: then the file it vouches for no longer matches it
    assert str(run / name) in err or (name.endswith("manifest.json") and "manifest.json says" in err)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["checkpoints/best/model.safetensors", "checkpoints/best/state.pt"])
def test_a_malicious_pickle_with_a_matching_checksum_is_refused(run, name, tmp_path, capsys):
    marker = tmp_path / "exploited"
    (run / name).write_bytes(pickle.dumps({"step": _Exploit(marker)}))
    integrity.record((run / name).parent, (run / name).name)  # the attacker fixed the manifest too
    assert main(["evaluate", str(run), "--which", "best", "--split", "val"]) == 2
    err = _one_line_error(capsys)
    assert str(run / name) in err and not marker.exists()


def test_yaml_that_constructs_objects_is_refused(run, tmp_path, capsys):
    marker = tmp_path / "exploited"
    (run / "config.yaml").write_text(f"lr: !!python/object/apply:os.system ['touch {marker}']\n")
    integrity.record(run, "config.yaml")
    assert main(["evaluate", str(run)]) == 2
    assert str(run / "config.yaml") in _one_line_error(capsys) and not marker.exists()


def test_damaged_latest_checkpoint_falls_back_to_the_previous_good_one(run, capsys):
    steps = sorted(int(p.name[5:]) for p in (run / "checkpoints").glob("step-*"))
    assert steps == [2, 4, 6]
    _truncate(run / "checkpoints/last/state.pt")
    _bit_flip(run / "checkpoints/step-6/model.safetensors")
    loaded = load_run(run, "last")
    assert loaded.step == 4 and "checkpoints/last/state.pt" in loaded.warnings[0]
    spec_io.dump(mlp(), run.parent / "mlp.yaml")
    args = ["train", str(run.parent / "mlp.yaml"), "--out", str(run), "--resume", "--max-steps", "8", "--json"]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "step-6/model.safetensors: sha256 differs" in out.err and "last/state.pt" in out.err
    result = json.loads(out.out)
    assert result["steps"] == 8 and load_run(run, "last").step == 8
    assert any("falling back" in w for w in result["warnings"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "val"] == [2, 4, 6, 8]  # the rows after step 4 were redone


def test_every_checkpoint_damaged_is_an_error_for_best_and_a_fresh_start_never(run, capsys):
    for folder in (run / "checkpoints").iterdir():
        _replace(folder / "state.pt")
    assert main(["evaluate", str(run), "--which", "last"]) == 2
    assert "state.pt" in _one_line_error(capsys)


def test_metrics_torn_last_line_is_dropped_with_a_warning_and_a_bad_row_is_an_error(run, capsys):
    spec_io.dump(mlp(), run.parent / "mlp.yaml")
    args = ["train", str(run.parent / "mlp.yaml"), "--out", str(run), "--resume", "--max-steps", "7", "--quiet"]
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 7, "ki')  # a kill mid-append
    assert main(args) == 0
    assert "dropped an incomplete last line" in capsys.readouterr().err
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"step": ', '"step": "x')
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert main([*args[:-3], "--max-steps", "8", "--quiet"]) == 2
    assert f"{run / 'metrics.jsonl'}:2: " in _one_line_error(capsys)


def test_a_damaged_status_file_is_named(run, capsys):
    (run / "status.json").write_text("{running")
    spec_io.dump(mlp(), run.parent / "mlp.yaml")
    assert main(["train", str(run.parent / "mlp.yaml"), "--data", "digits", "--out", str(run)]) == 2
    assert str(run / "status.json") in _one_line_error(capsys)


def test_a_compressed_artefact_is_verified_when_loaded(tmp_path):
    from layerwise.compress.qfile import load_model, save_model
    from layerwise.compress.quantize import quantize

    module = mlp().build()
    q = quantize(module, "weight-int8")
    save_model(q, tmp_path / "q.safetensors")
    integrity.record(tmp_path, "q.safetensors")
    _bit_flip(tmp_path / "q.safetensors")
    with pytest.raises(integrity.DamagedFileError, match="q.safetensors: sha256 differs"):
        load_model(quantize(mlp().build(), "weight-int8"), tmp_path / "q.safetensors")
