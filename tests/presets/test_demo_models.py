"""The small demo presets do what their descriptions promise; every preset survives a spec file."""
from __future__ import annotations

import pytest
import torch

from layerwise.presets import PRESETS, get_preset
from layerwise.spec.io import dump, from_data, to_data


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_yaml(name, tmp_path):
    model = get_preset(name)
    path = tmp_path / f"{name}.yaml"
    dump(model, path)
    from layerwise.presets import resolve_model

    assert resolve_model(str(path)) == model
    assert from_data(to_data(model)).params() == model.params()


def test_digits_cnn_trains_above_97_percent():
    """sklearn's digits (1797 8x8 images, 10 classes): a held-out 25% split, plain Adam, 12 epochs
    (seeds 0-2 reach 98.7 / 98.0 / 99.6%). One thread: a tiny model on a shared 2-core box."""
    from sklearn.datasets import load_digits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_digits(load_digits())
    finally:
        torch.set_num_threads(threads)


def _train_digits(digits) -> None:
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    y = torch.tensor(digits.target)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=g)
    test, train = order[: len(y) // 4], order[len(y) // 4:]
    torch.manual_seed(0)
    model = get_preset("digits-cnn")
    module = model.build()
    assert model.out_shape((2, 1, 8, 8)) == (2, 10)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    for _ in range(12):
        module.train()
        for idx in train[torch.randperm(len(train), generator=g)].split(64):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(module(x[idx]), y[idx]).backward()
            opt.step()
    module.eval()
    with torch.no_grad():
        accuracy = (module(x[test]).argmax(-1) == y[test]).float().mean().item()
    assert accuracy > 0.97, accuracy


def test_tiny_gpt_and_text_gru_shapes():
    gpt = get_preset("tiny-gpt")
    assert gpt.input.vocab_size == 256 and gpt.input.max_seq == 128 and gpt.body.tie_embeddings
    assert gpt.out_shape((2, 128)) == (2, 128, 256)
    gru = get_preset("text-gru", n_classes=4)
    assert gru.out_shape((3, 50)) == (3, 4)
    vit = get_preset("digits-vit")
    assert vit.out_shape((2, 1, 8, 8)) == (2, 10)
