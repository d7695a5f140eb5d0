"""Initialisation by the activation that follows a layer (Xavier for tanh/sigmoid/none, Kaiming
for the ReLU family), unless the spec names an init. Applied where the sequence is known."""
from __future__ import annotations

from torch import nn

# Activation type -> (init, nonlinearity for torch.nn.init gains).
_KAIMING = {"relu": "relu", "leaky_relu": "leaky_relu"}
_XAVIER_GAIN = {"tanh": "tanh", "sigmoid": "sigmoid", "gelu": "linear", "silu": "linear"}


def init_weight(module: nn.Module, init: str, activation: str | None) -> None:
    """Initialise `module.weight` (Linear/Conv) as `init` says; 'auto' looks at the activation."""
    weight = getattr(module, "weight", None)
    if weight is None or init == "torch":
        return
    if init == "auto":
        init = "kaiming" if activation in _KAIMING else "xavier"
    if init == "kaiming":
        nn.init.kaiming_normal_(weight, nonlinearity=_KAIMING.get(activation, "relu"))
    elif init == "xavier":
        gain = nn.init.calculate_gain(_XAVIER_GAIN.get(activation, "linear"))
        nn.init.xavier_uniform_(weight, gain=gain)
    elif init == "normal":
        nn.init.normal_(weight, std=0.02)
    bias = getattr(module, "bias", None)
    if bias is not None:
        nn.init.zeros_(bias)


def init_sequence(specs, modules) -> None:
    """Walk a built sequence: each layer with an `init` field is initialised for the activation
    block that follows it (if any), looking past norms and dropout."""
    for i, (spec, module) in enumerate(zip(specs, modules)):
        init = getattr(spec, "init", None)
        if init is None:
            continue
        init_weight(module, init, _next_activation(specs[i + 1 :]))


# Blocks that sit between a conv/linear and its activation without changing which gain fits
# (conv -> batchnorm -> relu in a CNN; linear -> dropout -> relu).
_PASS_THROUGH = ("batchnorm1d", "batchnorm2d", "layernorm", "rmsnorm", "dropout")


def _next_activation(rest) -> str | None:
    """The kind of the activation that follows, looking past norms and dropout; None if none."""
    for spec in rest:
        kind = getattr(spec, "type_name", "")
        if kind == "activation":
            return spec.kind
        if kind not in _PASS_THROUGH:
            return None
    return None
