"""The compress/export commands on a real run directory from the trainer, and their bad input."""
from __future__ import annotations

import pytest
from safetensors.torch import load_file

import _compress_models as models
from layerwise.cli import main
from layerwise.compress.qfile import unpack
from layerwise.cost.quant_size import quant_size
from layerwise.spec import io as spec_io
from layerwise.spec.model import InputSpec, Model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from layerwise.train.config import DataConfig, TrainConfig
    from layerwise.train.trainer import train

    path = tmp_path_factory.mktemp("runs") / "cnn"
    model = Model(name="cnn", body=models.cnn(c1=4, c2=8), input=InputSpec(kind="image", shape=(1, 8, 8)))
    train(model, TrainConfig(data=DataConfig(source="digits"), max_steps=30, batch_size=32, lr=1e-2, eval_every=15,
                             log_every=15), path)
    return path


def _newest(root, stem):
    return max(root.glob(f"{stem}-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))


def test_quantize_static_writes_the_predicted_file(run_dir, capsys):
    assert main(["compress", "quantize", str(run_dir), "--mode", "static"]) == 0
    out = _newest(run_dir / "compressed", "quantize") / "static.safetensors"
    body = spec_io.load(run_dir / "spec.yaml").body
    size = out.stat().st_size
    assert abs(quant_size(body, "static").total_bytes - size) / size < 0.02
    assert unpack(load_file(str(out)))["0.weight"].dtype.is_floating_point is False  # int8 codes
    assert "predicted file size" in capsys.readouterr().out


def test_prune_structured_writes_a_smaller_spec(run_dir):
    assert main(["compress", "prune", str(run_dir), "--sparsity", "0.5", "--steps", "2", "--epochs", "1"]) == 0
    outdir = _newest(run_dir / "compressed", "prune")
    pruned = spec_io.load(outdir / "pruned-spec.yaml")
    original = spec_io.load(run_dir / "spec.yaml")
    assert pruned.params().total < original.params().total
    tensors = load_file(str(outdir / "pruned-2.safetensors"))
    assert sum(t.numel() for k, t in tensors.items() if "running" not in k and "num_batches" not in k) \
        == pruned.params().total


def test_export_onnx(run_dir, capsys):
    assert main(["export", "onnx", str(run_dir)]) == 0
    assert (_newest(run_dir / "export", "onnx") / "model.onnx").exists()
    assert "max rel" in capsys.readouterr().out


def test_bad_input_is_one_clear_error(run_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compress", "quantize", str(tmp_path / "empty")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["compress", "prune", str(run_dir), "--sparsity", "1.0"]) == 2
    assert "[0, 1)" in capsys.readouterr().err
    assert main(["compress", "quantize", str(run_dir), "--mode", "weight-int4", "--which", "step-999"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_distill_compares_with_the_student_alone(run_dir, tmp_path, capsys):
    student = Model(name="student", body=models.cnn(c1=2, c2=4), input=InputSpec(kind="image", shape=(1, 8, 8)))
    spec_io.dump(student, tmp_path / "student.yaml")
    assert main(["compress", "distill", str(run_dir), "--student", str(tmp_path / "student.yaml"),
                 "--epochs", "1", "--temperature", "2", "--alpha", "0.5"]) == 0
    out = _newest(run_dir / "compressed", "distill")
    assert (out / "student-alone.safetensors").exists() and (out / "student-distilled.safetensors").exists()
    assert "distill T=2.0 alpha=0.5" in capsys.readouterr().out


def test_student_with_another_input_is_a_clear_error(run_dir, tmp_path, capsys):
    student = Model(name="s", body=models.cnn(c1=2, c2=4), input=InputSpec(kind="image", shape=(1, 16, 16)))
    spec_io.dump(student, tmp_path / "s.yaml")
    assert main(["compress", "distill", str(run_dir), "--student", str(tmp_path / "s.yaml")]) == 2
    assert "teacher's input" in capsys.readouterr().err


def test_a_second_run_never_overwrites_the_first(run_dir, tmp_path, capsys):
    from layerwise.compress.qfile import load_model
    from layerwise.compress.quantize import quantize
    from layerwise.train import integrity

    before = set((run_dir / "compressed").glob("quantize-*")) if (run_dir / "compressed").exists() else set()
    for _ in range(2):
        assert main(["compress", "quantize", str(run_dir), "--mode", "weight-int8", "--quiet"]) == 0
    new = sorted(set((run_dir / "compressed").glob("quantize-*")) - before)
    assert len(new) == 2
    body = spec_io.load(run_dir / "spec.yaml").body
    for folder in new:  # both load, each checked against its own manifest
        integrity.verify(folder / "weight-int8.safetensors")
        load_model(quantize(body.build(), "weight-int8"), folder / "weight-int8.safetensors")
    taken = new[0] / "weight-int8.safetensors"
    assert main(["compress", "quantize", str(run_dir), "--out", str(taken)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "onnx", str(run_dir), "--out", str(taken)]) == 2
    assert "already exists" in capsys.readouterr().err
