"""Augmentation, input noise, max-norm and the shorter-side resize: what each does to a batch or to
the weights, where each is refused, and a run using all of them resuming bitwise after a kill."""
from __future__ import annotations


import pytest
import torch

from layerwise.cli import main
from layerwise.spec import io as spec_io
from layerwise.spec.errors import LayerwiseError
from layerwise.train import augment as A
from layerwise.train.data_sources import resize_images
from layerwise.train.run import load_run
from layerwise.train.trainer import train

from _train_models import config, mlp, resumed_equals_uninterrupted, tiny_lm


def test_random_resized_crop_samples_a_box_of_the_stated_area_and_aspect():
    torch.manual_seed(0)
    h, w = 16, 24
    cols = torch.arange(w, dtype=torch.float32).expand(h, w)  # value = column index: a ramp
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    x = torch.stack([cols, rows])[None].repeat(64, 1, 1, 1)  # (64, 2, H, W)
    out = A.random_resized_crop(x)
    # bilinear sampling of a linear ramp is exact: the slope per output pixel is the box's share
    bw = (out[:, 0, 4, 1:] - out[:, 0, 4, :-1]).mean(-1)  # box width / image width
    bh = (out[:, 1, 1:, 4] - out[:, 1, :-1, 4]).mean(-1)
    area, aspect = bw * bh, (bw * w) / (bh * h) / (w / h)
    assert (area >= A.CROP_SCALE[0] - 1e-4).all() and (area <= A.CROP_SCALE[1] + 1e-4).all()
    assert (aspect >= A.CROP_RATIO[0] - 1e-3).all() and (aspect <= A.CROP_RATIO[1] + 1e-3).all()
    assert area.std() > 0.05  # boxes differ from sample to sample
    assert (out[:, 0] >= -0.5).all() and (out[:, 0] <= w - 0.5).all()  # inside the image


def test_flip_jitter_and_noise():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    f = A.random_flip(x)
    same = (f == x).flatten(1).all(1)
    flipped = (f == x.flip(-1)).flatten(1).all(1)
    assert (same | flipped).all() and same.any() and flipped.any()
    j = A.colour_jitter(x)
    assert j.min() >= 0 and j.max() <= 1 and not torch.equal(j, x)
    # normalised data: un-normalised, jittered, normalised back; with factors of 1 it is the identity
    t = A.Transform(("jitter",), 0.0, "meanstd", (0.4, 0.5, 0.6), (0.2, 0.3, 0.25))
    z = (x - t.mean) / t.std
    old = A.JITTER
    A.JITTER = 0.0
    try:
        assert torch.allclose(t(z), z, atol=1e-5)
    finally:
        A.JITTER = old
    n = A.Transform((), 0.3)(torch.zeros(256, 64))
    assert n.std().item() == pytest.approx(0.3, rel=0.02) and abs(n.mean().item()) < 0.01


def test_shorter_side_resize_keeps_the_aspect_and_centre_crops():
    x = torch.rand(2, 1, 4, 8)  # H 4, W 8 -> 2x2: scale 1/2 to 2x4, then the centre columns 1..2
    ref = torch.nn.functional.interpolate(x, size=(2, 4), mode="bilinear", align_corners=False)[:, :, :, 1:3]
    assert torch.equal(resize_images(x, (2, 2), "shorter-side"), ref)
    stretched = resize_images(x, (2, 2))
    assert stretched.shape == ref.shape and not torch.allclose(stretched, ref)
    assert resize_images(torch.rand(1, 3, 5, 7), (4, 4), "shorter-side").shape == (1, 3, 4, 4)


def test_max_norm_bounds_every_units_incoming_weights(tmp_path):
    cfg = config(max_steps=6, lr=0.2, optimizer="sgd")
    train(mlp(), cfg, tmp_path / "free")
    train(mlp(), cfg.with_overrides(max_norm=0.5), tmp_path / "bounded")
    for run, bounded in (("free", False), ("bounded", True)):
        sd = load_run(tmp_path / run, "last").module.state_dict()
        norms = torch.cat([sd[k].norm(dim=1) for k in ("1.weight", "3.weight")])
        assert (norms.max() <= 0.5 + 1e-5) == bounded


def test_a_run_with_every_option_resumes_bitwise_after_a_kill(tmp_path):
    cfg = config(max_steps=8, checkpoint_every=3, optimizer="adamw", eval_every=4, augment=("crop", "flip", "jitter"),
                 input_noise=0.1, max_norm=1.0, l1=1e-4, l2=1e-4)
    _, same = resumed_equals_uninterrupted(mlp(), cfg, tmp_path, kill_step=5)
    assert same
    plain = load_run(tmp_path / "full", "last").module.state_dict()
    train(mlp(), config(max_steps=8, checkpoint_every=3, optimizer="adamw", eval_every=4), tmp_path / "plain")
    other = load_run(tmp_path / "plain", "last").module.state_dict()
    assert not all(torch.equal(plain[k], other[k]) for k in plain)  # the options did something


def test_options_are_refused_where_they_do_not_apply(tmp_path, capsys):
    from layerwise.blocks import Linear, Sequential
    from layerwise.spec.model import InputSpec, Model

    spec_io.dump(tiny_lm(), tmp_path / "lm.yaml")
    feats = Model(name="f", body=Sequential(layers=(Linear(d_in=13, d_out=3),)), input=InputSpec(kind="features", shape=(13,)))
    spec_io.dump(feats, tmp_path / "f.yaml")
    lm = ["lm.yaml", "--data", "pystdlib", "--max-bytes", "20000"]
    cases = ((["f.yaml", "--data", "wine", "--augment", "flip"], "applies to image inputs; this model takes features"),
             ([*lm, "--input-noise", "0.1"], "this model takes token ids"),
             ([*lm, "--resize-mode", "shorter-side"], "applies to image inputs"),
             (["f.yaml", "--data", "wine", "--augment", "flop"], "did you mean 'flip'"),
             (["f.yaml", "--data", "wine", "--max-norm", "-1"], "max_norm must be a finite number >= 0"))
    for args, message in cases:
        code = main(["train", str(tmp_path / args[0]), *args[1:], "--max-steps", "1", "--batch", "4",
                     "--out", str(tmp_path / "r"), "--overwrite"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(LayerwiseError, match="fsdp"):
        config(max_norm=1.0, strategy="fsdp")
