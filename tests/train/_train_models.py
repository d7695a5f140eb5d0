"""Small models and configs for the training tests: each trains in well under a second."""
from __future__ import annotations

from layerwise.blocks import Activation, Dropout, Embedding, Flatten, LayerNorm, Linear, Sequential
from layerwise.spec.model import InputSpec, Model
from layerwise.train.config import DataConfig, TrainConfig


def mlp(dropout: float = 0.0, d_hidden: int = 32) -> Model:
    """digits as (1, 8, 8) images -> 10 logits."""
    layers = [Flatten(), Linear(d_in=64, d_out=d_hidden), Activation(kind="relu")]
    if dropout:
        layers.append(Dropout(p=dropout))
    layers.append(Linear(d_in=d_hidden, d_out=10))
    return Model(name="mlp", body=Sequential(layers=tuple(layers)), input=InputSpec(kind="image", shape=(1, 8, 8)))


def tiny_lm(seq: int = 16, vocab: int = 256) -> Model:
    body = Sequential(layers=(Embedding(vocab_size=vocab, d_model=16), LayerNorm(d_model=16),
                              Linear(d_in=16, d_out=vocab)))
    return Model(name="tiny-lm", body=body, input=InputSpec(kind="tokens", shape=(seq,), vocab_size=vocab), task="lm")


def config(**kw) -> TrainConfig:
    base = dict(data=DataConfig(source="digits"), max_steps=8, batch_size=16, lr=1e-2, log_every=2,
                eval_every=4, optimizer="sgd-momentum")
    base.update(kw)
    return TrainConfig(**base)


class Killed(Exception):
    """Raised by kill_at's hook: the process dying mid-run."""


def kill_at(step: int):
    def hook(s, module):
        if s == step:
            raise Killed
    return hook


def resumed_equals_uninterrupted(model: Model, cfg: TrainConfig, root, kill_step: int):
    """Train `cfg` through, and again killed after `kill_step` steps then resumed: -> (the
    uninterrupted RunResult, whether the two runs' last weights are bitwise equal)."""
    import pytest
    import torch

    from layerwise.train.run import load_run
    from layerwise.train.trainer import train

    full = train(model, cfg, root / "full")
    with pytest.raises(Killed):
        train(model, cfg, root / "killed", hooks={"after_step": kill_at(kill_step)})
    train(model, cfg, root / "killed", resume=True)
    a, b = (load_run(root / r, "last").module.state_dict() for r in ("full", "killed"))
    return full, all(torch.equal(a[k], b[k]) for k in a)
