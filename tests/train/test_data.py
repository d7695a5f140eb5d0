"""Data readers, the image pipeline, splits, text windows and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from layerwise.blocks import Flatten, Linear, Sequential
from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import InputSpec, Model
from layerwise.train.config import DataConfig
from layerwise.train.data import EpochBatchSampler, make_data
from layerwise.train.data_sources import read_digits, read_sklearn_tabular, resize_images

from _train_models import mlp, tiny_lm


def features_model(n_features: int, n_classes: int) -> Model:
    return Model(name="tab", body=Sequential(layers=(Linear(d_in=n_features, d_out=n_classes),)),
                 input=InputSpec(kind="features", shape=(n_features,)))


def image_model(c: int, h: int, w: int, n_classes: int = 10) -> Model:
    return Model(name="img", body=Sequential(layers=(Flatten(), Linear(d_in=c * h * w, d_out=n_classes))),
                 input=InputSpec(kind="image", shape=(c, h, w)))


def test_builtin_files_equal_sklearn_loaders():
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine

    d = read_digits()
    ref = load_digits()
    assert torch.equal(d.x * 16, torch.tensor(ref.images, dtype=torch.float32).unsqueeze(1))
    assert d.y.tolist() == ref.target.tolist()
    for name, loader in (("wine", load_wine), ("breast-cancer", load_breast_cancer)):
        t, ref = read_sklearn_tabular(name), loader()
        assert torch.allclose(t.x, torch.tensor(ref.data, dtype=torch.float32))
        assert t.y.tolist() == ref.target.tolist() and t.class_names == list(ref.target_names)


def test_splits_are_seeded_disjoint_and_counted():
    a = make_data(DataConfig(source="digits", seed=3), mlp())
    b = make_data(DataConfig(source="digits", seed=3), mlp())
    assert a.info.sizes == {"train": 1258, "val": 180, "test": 359}  # 1797 samples, 10% / 20%
    assert torch.equal(a.test.dataset.x, b.test.dataset.x)
    assert sum(a.info.class_counts["train"]) == 1258 and len(a.info.class_counts["train"]) == 10
    tr = {tuple(r.flatten().tolist()) for r in a.train.dataset.x}
    te = [tuple(r.flatten().tolist()) for r in a.test.dataset.x]
    assert sum(t in tr for t in te) < 0.2 * len(te)  # digits has some duplicate images, not whole splits


def test_epoch_order_is_seeded_and_ranks_partition_the_global_batch():
    single = EpochBatchSampler(20, 4, shuffle=True, seed=5, drop_last=True)
    ranks = [EpochBatchSampler(20, 2, shuffle=True, seed=5, drop_last=True, rank=r, world=2) for r in (0, 1)]
    for epoch in (0, 1):
        single.set_epoch(epoch)
        for s in ranks:
            s.set_epoch(epoch)
        for big, b0, b1 in zip(single, *ranks):
            assert sorted(big) == sorted(b0 + b1)
    first = list(single)
    single.set_epoch(1, start_batch=2)
    assert list(single) == first[2:]


def test_resize_is_bilinear_and_normalisations(tmp_path):
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    small = resize_images(x, (2, 2))  # align_corners=False: each output is the mean of its 2x2 block
    assert small.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    big = make_data(DataConfig(source="digits"), image_model(1, 16, 16))  # built-in: resized to the model
    assert big.train.dataset.x.shape[1:] == (1, 16, 16)
    sym = make_data(DataConfig(source="digits", normalise="symmetric"), mlp()).train.dataset.x
    assert sym.min() == -1.0 and sym.max() == 1.0
    ms = make_data(DataConfig(source="digits", normalise="meanstd"), mlp()).train.dataset.x
    assert abs(ms.mean().item()) < 1e-4 and abs(ms.std().item() - 1) < 1e-2


def test_image_folder_and_npz(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    d = make_data(DataConfig(source=str(tmp_path / "imgs"), val_fraction=0.2), image_model(3, 6, 6, 2), batch_size=4)
    assert d.info.class_names == ["cat", "dog"] and d.train.dataset.x.shape[1:] == (3, 6, 6)
    assert 0.0 <= d.train.dataset.x.min() and d.train.dataset.x.max() <= 1.0
    with pytest.raises(LayerwiseError, match="6x6.*takes 8x8.*--resize"):
        make_data(DataConfig(source=str(tmp_path / "imgs")), image_model(3, 8, 8, 2), batch_size=4)
    ok = make_data(DataConfig(source=str(tmp_path / "imgs"), resize=True), image_model(3, 8, 8, 2), batch_size=4)
    assert ok.train.dataset.x.shape[1:] == (3, 8, 8)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (40, 10, 10), dtype=np.uint8), y=np.arange(40) % 4)
    with pytest.raises(LayerwiseError, match="10x10 \\(HxW\\), the model takes 8x8"):
        make_data(DataConfig(source=str(tmp_path / "d.npz")), image_model(1, 8, 8, 4), batch_size=4)


def test_tabular_csv_and_imbalance_warning(tmp_path):
    rows = ["a,b,label"] + [f"{i},{i * 2},{'x' if i < 45 else 'y'}" for i in range(50)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    d = make_data(DataConfig(source=str(tmp_path / "t.csv")), features_model(2, 2), batch_size=4)
    assert d.info.class_names == ["x", "y"] and d.info.warnings and "imbalanced" in d.info.warnings[0]
    with pytest.raises(LayerwiseError, match="no column 'target'"):
        make_data(DataConfig(source=str(tmp_path / "t.csv"), label_column="target"), features_model(2, 2))
    wine = make_data(DataConfig(source="wine"), features_model(13, 3), batch_size=8)
    assert abs(wine.train.dataset.x.mean().item()) < 1e-5  # standardised on the train split


def test_text_classification_jsonl_byte_and_bpe(tmp_path):
    lines = [json.dumps({"text": f"sample {'good' if i % 2 else 'bad'} {i}", "label": "pos" if i % 2 else "neg"})
             for i in range(40)]
    (tmp_path / "t.jsonl").write_text("\n".join(lines))
    from layerwise.blocks import Embedding

    m = Model(name="txt", body=Sequential(layers=(Embedding(vocab_size=300, d_model=4), Flatten(), Linear(d_in=48, d_out=2))),
              input=InputSpec(kind="tokens", shape=(12,), vocab_size=300))
    d = make_data(DataConfig(source=str(tmp_path / "t.jsonl")), m, batch_size=4)
    x = torch.cat([d.train.dataset.x, d.val.dataset.x, d.test.dataset.x])
    assert x.max() < 256 and d.info.tokenizer == "byte"
    first = d.test.dataset.x[0][:6].tolist()
    assert bytes(first).decode() == "sample"
    bpe = make_data(DataConfig(source=str(tmp_path / "t.jsonl"), tokenizer="bpe"), m, batch_size=4)
    assert bpe.info.tokenizer == "bpe" and bpe.info.vocab_size <= 300 and bpe.info.tokenizer_json


def test_lm_windows_shift_by_one(tmp_path):
    (tmp_path / "c.txt").write_text("hello world, " * 200)
    d = make_data(DataConfig(source=str(tmp_path / "c.txt")), tiny_lm(seq=16), batch_size=4)
    x, y = d.train.dataset.x, d.train.dataset.y
    assert x.shape[1] == 16 and torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(x[1:, 0], y[:-1, -1])
    assert bytes(x[0].tolist()).decode() == "hello world, hel"


def test_bad_input_gives_one_clear_error(tmp_path):
    cases = [
        (DataConfig(source=str(tmp_path / "missing")), mlp(), "no such file or folder"),
        (DataConfig(source="wine"), mlp(), "is not images"),
        (DataConfig(source="digits"), image_model(3, 8, 8), "1 channel"),
    ]
    (tmp_path / "small.txt").write_text("tiny corpus")
    cases.append((DataConfig(source=str(tmp_path / "small.txt")), tiny_lm(seq=16), "fewer than one sequence"))
    for dc, model, msg in cases:
        with pytest.raises(LayerwiseError, match=msg):
            make_data(dc, model)
