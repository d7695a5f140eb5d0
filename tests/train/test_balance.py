"""--balance on the built-in imbalanced task (digits-imbalanced): class weights against scikit-learn,
the resamplers' counts and samples, refusals where a remedy does not apply, bitwise resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from layerwise.blocks import Embedding, Flatten, Linear, Sequential
from layerwise.cli import main
from layerwise.spec import io as spec_io
from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import InputSpec, Model
from layerwise.train import data_sources as src
from layerwise.train.balance import rebalance
from layerwise.train.config import DataConfig
from layerwise.train.data import make_data
from layerwise.train.losses import LossFn

from _train_models import config, mlp, resumed_equals_uninterrupted, tiny_lm

IMB = DataConfig(source="digits-imbalanced")


def test_digits_imbalanced_is_a_long_tail_of_factor_20_taken_from_digits():
    full, lt = src.read_digits(), src.read_digits_imbalanced()
    counts = torch.bincount(lt.y, minlength=10).tolist()
    assert counts[0] == 160 and counts[9] == 8 and counts[0] / counts[9] == 20
    assert counts == sorted(counts, reverse=True)
    # every kept image is one of digits' with its own label (the first n_c of each class, file order)
    for c in (0, 5, 9):
        assert torch.equal(lt.x[lt.y == c], full.x[full.y == c][:counts[c]])


def test_class_weights_are_scikit_learns_balanced():
    from sklearn.utils.class_weight import compute_class_weight

    cfg = config(data=IMB, balance="class-weights")
    d = make_data(cfg, mlp())
    y = d.train.dataset.y.numpy()
    ref = compute_class_weight("balanced", classes=np.arange(10), y=y)
    w = LossFn(cfg, "classify", d.info.class_counts["train"]).weight
    assert w.tolist() == pytest.approx(ref.tolist(), rel=1e-6)


@pytest.mark.parametrize("how", ["oversample", "undersample", "smote"])
def test_resamplers_even_out_the_train_split_only(how):
    cfg = config(data=IMB, balance=how)
    d = make_data(cfg, mlp())
    x0, y0 = d.train.dataset.x.clone(), d.train.dataset.y.clone()
    before = torch.bincount(y0, minlength=10)
    val = d.val.dataset.y.clone()
    d = rebalance(d, cfg)
    x, y = d.train.dataset.x, d.train.dataset.y
    after = torch.bincount(y, minlength=10).tolist()
    target = int(before.min()) if how == "undersample" else int(before.max())
    assert after == [target] * 10 and d.info.class_counts["train_balanced"] == after
    assert torch.equal(d.val.dataset.y, val) and not any("imbalanced" in w for w in d.info.warnings)
    flat0 = x0.reshape(len(x0), -1)
    if how != "smote":  # every sample is one of the split's, with its label
        rows = {tuple(r.tolist()): int(c) for r, c in zip(flat0, y0)}
        assert all(rows[tuple(r.tolist())] == int(c) for r, c in zip(x.reshape(len(x), -1), y))
    else:  # the originals first, then new ones inside their class's bounding box
        assert torch.equal(x[:len(x0)], x0)
        new_x, new_y = x[len(x0):].reshape(-1, 64), y[len(x0):]
        for c in new_y.unique():
            own = flat0[y0 == c]
            assert (new_x[new_y == c] >= own.min(0).values - 1e-6).all()
            assert (new_x[new_y == c] <= own.max(0).values + 1e-6).all()


@pytest.mark.parametrize("how", ["class-weights", "oversample", "undersample", "smote"])
def test_a_balanced_run_resumes_bitwise_after_a_kill(tmp_path, how):
    cfg = config(data=IMB, balance=how, max_steps=8, checkpoint_every=3, optimizer="adamw", eval_every=4,
                 batch_size=8 if how == "undersample" else 16)  # undersampling leaves ~50 samples
    _, same = resumed_equals_uninterrupted(mlp(), cfg, tmp_path, kill_step=5)
    assert same
    info = json.loads((tmp_path / "full" / "data.json").read_text())
    counts = info["class_counts"]
    if how == "class-weights":  # the loss is weighted, the split is left as it is
        assert "train_balanced" not in counts
    else:
        target = min(counts["train"]) if how == "undersample" else max(counts["train"])
        assert counts["train_balanced"] == [target] * 10


def _token_classifier() -> Model:
    body = Sequential(layers=(Embedding(vocab_size=256, d_model=4), Flatten(), Linear(d_in=32, d_out=2)))
    return Model(name="tok", body=body, input=InputSpec(kind="tokens", shape=(8,), vocab_size=256))


def test_remedies_are_refused_where_they_do_not_apply(tmp_path, capsys):
    texts = tmp_path / "t.jsonl"
    texts.write_text("".join(json.dumps({"text": f"line {i}", "label": "a" if i % 5 else "b"}) + "\n" for i in range(60)))
    spec_io.dump(_token_classifier(), tmp_path / "tok.yaml")
    spec_io.dump(tiny_lm(), tmp_path / "lm.yaml")
    spec_io.dump(mlp(), tmp_path / "mlp.yaml")
    cases = ((["tok.yaml", "--data", str(texts), "--balance", "smote"], "this model takes token ids"),
             (["lm.yaml", "--data", "pystdlib", "--max-bytes", "20000", "--balance", "oversample"],
              "applies to classification"),
             (["mlp.yaml", "--data", "digits", "--balance", "smote", "--class-weights", "balanced"], "use one"),
             (["mlp.yaml", "--data", "digits", "--balance", "smote-nc"], "balance must be one of"))
    for args, message in cases:
        code = main(["train", str(tmp_path / args[0]), *args[1:], "--max-steps", "1", "--batch", "4",
                     "--out", str(tmp_path / "r"), "--overwrite"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(LayerwiseError, match="token ids"):  # the oversampler takes tokens, SMOTE never
        rebalance(make_data(config(data=DataConfig(source=str(texts)), batch_size=4, balance="oversample"),
                            _token_classifier(), batch_size=4), config(balance="smote", batch_size=4))
