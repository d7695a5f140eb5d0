"""Quantization-aware training: fake-quantized fine-tuning, then the int8 model static PTQ also gives
(same file format, same predicted size), and `compress qat` on a run directory."""
from __future__ import annotations

import pytest
import torch

import _compress_models as models
from layerwise.cli import main
from layerwise.compress.finetune import FinetuneConfig, accuracy, train_loop
from layerwise.compress.qat import qat
from layerwise.compress.qfile import save_model
from layerwise.compress.quantize import quantize
from layerwise.cost.quant_size import quant_size
from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import InputSpec, Model


def _digits(n_train=640, n_test=320, batch=64):
    from layerwise.train.data_sources import read_digits

    d = read_digits()
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(d.y), generator=g)
    tr, te = perm[:n_train], perm[n_train:n_train + n_test]
    return ([(d.x[tr[i:i + batch]], d.y[tr[i:i + batch]]) for i in range(0, n_train, batch)],
            [(d.x[te[i:i + batch]], d.y[te[i:i + batch]]) for i in range(0, n_test, batch)])


def test_qat_fine_tunes_with_fake_quant_and_converts_to_static_int8(tmp_path):
    body = models.cnn(c1=4, c2=8)
    train, test = _digits()
    torch.manual_seed(0)
    fp32 = body.build()
    train_loop(fp32, train, FinetuneConfig(epochs=4, lr=3e-3))
    ptq = quantize(fp32, "static", calibration=[b[0] for b in train[:4]])
    q = qat(fp32, train, epochs=2, lr=1e-4)
    kinds = {type(m).__module__ for m in q.modules()}
    assert any(k.startswith("torch.ao.nn.quantized") for k in kinds)  # real int8 kernels, no fake quant left
    assert not any("fake_quantize" in k or ".qat." in k for k in kinds)
    q_size, p_size = save_model(q, tmp_path / "q.st"), save_model(ptq, tmp_path / "p.st")
    assert q_size == p_size
    assert abs(quant_size(body, "static").total_bytes - q_size) / q_size < 0.02
    # the fine-tuning moved the weights: QAT's int8 codes are not PTQ's
    qw = [m.weight() for m in q.modules() if hasattr(m, "weight") and callable(m.weight)]
    pw = [m.weight() for m in ptq.modules() if hasattr(m, "weight") and callable(m.weight)]
    assert len(qw) == len(pw) > 0 and any(not torch.equal(a.int_repr(), b.int_repr()) for a, b in zip(qw, pw))
    assert accuracy(q, test) >= accuracy(fp32, test) - 0.03
    with pytest.raises(LayerwiseError, match="at least 1"):
        qat(fp32, train, epochs=0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from layerwise.blocks import Embedding, LayerNorm, Linear, Sequential
    from layerwise.train.config import DataConfig, TrainConfig
    from layerwise.train.trainer import train

    root = tmp_path_factory.mktemp("qat")
    cnn = Model(name="cnn", body=models.cnn(c1=4, c2=8), input=InputSpec(kind="image", shape=(1, 8, 8)))
    train(cnn, TrainConfig(data=DataConfig(source="digits"), max_steps=30, batch_size=32, lr=1e-2, eval_every=15),
          root / "cnn")
    lm = Model(name="lm", task="lm", input=InputSpec(kind="tokens", shape=(16,), vocab_size=256),
               body=Sequential(layers=(Embedding(vocab_size=256, d_model=8), LayerNorm(d_model=8),
                                       Linear(d_in=8, d_out=256))))
    train(lm, TrainConfig(data=DataConfig(source="pystdlib", max_bytes=20000), max_steps=2, batch_size=4), root / "lm")
    return root


def test_compress_qat_writes_the_int8_file_and_compares_with_ptq(runs, capsys):
    assert main(["compress", "qat", str(runs / "cnn"), "--epochs", "1"]) == 0
    text = capsys.readouterr().out
    assert "PTQ static int8" in text and "QAT int8" in text
    out = runs / "cnn" / "compressed" / "qat-1" / "qat.safetensors"
    assert out.exists() and not list(out.parent.glob("*.tmp"))
    for args, message in ((["--epochs", "0"], "--epochs must be at least 1"), ([], "qat: layer")):
        target = runs / ("cnn" if args else "lm")
        assert main(["compress", "qat", str(target), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
