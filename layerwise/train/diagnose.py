"""Diagnostics at initialisation: one forward and one backward, and what every layer did.

Per leaf module, in the order the forward pass reached it: the mean and std of its output, the
norm of the gradient of its own parameters (None for a layer without any), the fraction of dead
ReLU units (a unit is dead when it outputs 0 for every sample of the batch; units are the channels
of a (B, C, H, W) map, else the last dim) and the fraction of saturated sigmoid/tanh outputs.
Why these (the design notes, after Glorot & Bengio 2010 and He et al. 2015): with Xavier's
variance 1/fan_in a ReLU halves the variance at every layer, so after 20 layers the activations
are ~2**-10 of the input's; Kaiming's 2/fan_in keeps them. Post-norm stacks (Xiong et al. 2020,
arXiv:2002.04745) pass gradients to the first layers through every norm and get smaller ones.

The thresholds a layer is flagged at are constants here, and every flag's message states its own.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from layerwise.spec.errors import LayerwiseError

INITS = ("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "normal:STD")
VANISH_RATIO = 1e-2  # activation std below 1/100 of the input's: vanishing
EXPLODE_RATIO = 1e2  # activation std above 100x the input's: exploding
GRAD_RATIO = 1e2  # a layer's parameter-gradient norm 100x below / above the median layer's
DEAD_FRAC = 0.5  # more than half of a ReLU's units dead on the whole batch
SATURATED_FRAC = 0.5  # more than half of a sigmoid/tanh's outputs saturated
SATURATION = {nn.Tanh: (-0.99, 0.99), nn.Sigmoid: (0.01, 0.99)}  # outside these bounds = saturated
DEAD_TYPES = (nn.ReLU, nn.ReLU6)


@dataclass
class LayerStats:
    path: str
    act_mean: float
    act_std: float
    grad_norm: float | None  # of the layer's own parameters' gradients; None: it has none
    dead_frac: float | None  # ReLU layers only
    saturated_frac: float | None  # sigmoid / tanh layers only
    type: str = ""  # the module's class name (terminal and HTML only)


@dataclass
class Diagnosis:
    layers: list[LayerStats]
    init: str
    norm_position: str  # "pre", "post" or "as built"
    flags: list[dict] = field(default_factory=list)  # {"path", "kind", "message"}
    input_std: float = 0.0  # the reference the activation flags compare with
    loss: float = 0.0

    def to_dict(self) -> dict:
        """The JSON of `layerwise diagnose` (the issue's keys; `type` is for display only)."""
        layers = [{k: v for k, v in asdict(s).items() if k != "type"} for s in self.layers]
        return {"layers": layers, "init": self.init, "norm_position": self.norm_position, "flags": self.flags}


# ---- init schemes --------------------------------------------------------------------------------
def parse_init(name: str) -> tuple[str, float]:
    """'kaiming_normal' -> ('kaiming_normal', 0); 'normal:0.02' -> ('normal', 0.02)."""
    if name.startswith("normal:"):
        try:
            std = float(name.split(":", 1)[1])
        except ValueError:
            std = -1.0
        if not (std > 0 and math.isfinite(std)):
            raise LayerwiseError(f"--init {name!r}: normal:STD needs a positive number, e.g. normal:0.02")
        return "normal", std
    if name not in INITS:
        raise LayerwiseError(f"--init {name!r}: expected one of {', '.join(INITS)}")
    return name, 0.0


def reinit(module: nn.Module, init: str) -> int:
    """Re-initialise the weight of every Linear and Conv layer as `init` says (biases to zero);
    'default' leaves the model's own init. Kaiming assumes ReLU (gain sqrt 2, fan_in), Xavier gain 1,
    as torch.nn.init defines them. -> the number of layers re-initialised."""
    kind, std = parse_init(init)
    if kind == "default":
        return 0
    n = 0
    for m in module.modules():
        if not isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            continue
        w = m.weight
        if kind == "xavier_uniform":
            nn.init.xavier_uniform_(w)
        elif kind == "xavier_normal":
            nn.init.xavier_normal_(w)
        elif kind == "kaiming_uniform":
            nn.init.kaiming_uniform_(w, nonlinearity="relu")
        elif kind == "kaiming_normal":
            nn.init.kaiming_normal_(w, nonlinearity="relu")
        else:
            nn.init.normal_(w, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
        n += 1
    return n


# ---- one forward and backward --------------------------------------------------------------------
def diagnose(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None, task: str, *, init: str = "default",
             norm_position: str = "as built") -> Diagnosis:
    """Forward `x`, backward the task's loss (cross-entropy against `y` for classify / lm / mlm, MSE
    for regress; half the mean square of the output otherwise), and read every leaf module. The module is left in
    training mode (what the first step sees) with its gradients cleared."""
    leaves = {m: name for name, m in module.named_modules() if not list(m.children())}
    outputs: list[tuple[str, nn.Module, torch.Tensor]] = []
    seen: set[int] = set()

    def hook(m, args, out):
        t = out[0] if isinstance(out, (tuple, list)) else out
        if id(m) in seen or not isinstance(t, torch.Tensor) or not t.is_floating_point():
            return
        seen.add(id(m))
        outputs.append((leaves[m], m, t.detach()))

    handles = [m.register_forward_hook(hook) for m in leaves]
    module.train()
    module.zero_grad(set_to_none=True)
    try:
        out = module(x)
        loss = _loss(out, y, task)
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    layers = [_stats(path, m, t) for path, m, t in outputs]
    module.zero_grad(set_to_none=True)
    ref = float(x.float().std()) if x.is_floating_point() else (layers[0].act_std if layers else 1.0)
    d = Diagnosis(layers=layers, init=init, norm_position=norm_position, input_std=ref, loss=float(loss.detach()))
    d.flags = flags(d)
    return d


def _loss(out, y, task: str) -> torch.Tensor:
    out = out[0] if isinstance(out, (tuple, list)) else out
    if task in ("classify", "lm", "mlm") and y is not None:
        return nn.functional.cross_entropy(out.float().reshape(-1, out.shape[-1]), y.reshape(-1))
    if task == "regress" and y is not None:
        return nn.functional.mse_loss(out.float(), y.float().reshape(out.shape))
    return 0.5 * out.float().pow(2).mean()


def _stats(path: str, m: nn.Module, t: torch.Tensor) -> LayerStats:
    t = t.float()
    grads = [p.grad for p in m.parameters(recurse=False) if p.grad is not None]
    grad = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))) \
        if grads else None
    return LayerStats(path=path, act_mean=float(t.mean()), act_std=float(t.std()) if t.numel() > 1 else 0.0,
                      grad_norm=grad, dead_frac=_dead(m, t), saturated_frac=_saturated(m, t), type=type(m).__name__)


def _dead(m: nn.Module, t: torch.Tensor) -> float | None:
    if not isinstance(m, DEAD_TYPES) or t.ndim < 2:
        return None
    unit_dim = 1 if t.ndim == 4 else t.ndim - 1  # (B, C, H, W): channels; (B, ..., D): the last dim
    alive = (t > 0).movedim(unit_dim, 0).reshape(t.shape[unit_dim], -1).any(dim=1)
    return 1.0 - float(alive.float().mean())


def _saturated(m: nn.Module, t: torch.Tensor) -> float | None:
    bounds = next((b for cls, b in SATURATION.items() if isinstance(m, cls)), None)
    if bounds is None:
        return None
    lo, hi = bounds
    return float(((t < lo) | (t > hi)).float().mean())


# ---- flags ---------------------------------------------------------------------------------------
def flags(d: Diagnosis) -> list[dict]:
    """Layers whose numbers cross a threshold; each message says which and what the threshold is."""
    out = []
    ref = d.input_std if d.input_std > 0 else 1.0
    grads = sorted(s.grad_norm for s in d.layers if s.grad_norm is not None)
    median = grads[len(grads) // 2] if grads else 0.0
    for s in d.layers:
        if not (math.isfinite(s.act_std) and (s.grad_norm is None or math.isfinite(s.grad_norm))):
            out.append(_flag(s, "non_finite", "activation or gradient is NaN/inf"))
            continue
        ratio = s.act_std / ref
        if ratio < VANISH_RATIO:
            out.append(_flag(s, "vanishing_activations",
                             f"activation std {s.act_std:.3g} is {ratio:.3g}x the input's, below {VANISH_RATIO:g}x"))
        elif ratio > EXPLODE_RATIO:
            out.append(_flag(s, "exploding_activations",
                             f"activation std {s.act_std:.3g} is {ratio:.3g}x the input's, above {EXPLODE_RATIO:g}x"))
        if s.grad_norm is not None and median > 0:
            g = s.grad_norm / median
            if g < 1 / GRAD_RATIO:
                out.append(_flag(s, "vanishing_gradients", f"gradient norm {s.grad_norm:.3g} is {g:.3g}x the median "
                                                           f"layer's, below 1/{GRAD_RATIO:g}"))
            elif g > GRAD_RATIO:
                out.append(_flag(s, "exploding_gradients", f"gradient norm {s.grad_norm:.3g} is {g:.3g}x the median "
                                                           f"layer's, above {GRAD_RATIO:g}x"))
        if s.dead_frac is not None and s.dead_frac > DEAD_FRAC:
            out.append(_flag(s, "dead_relus", f"{s.dead_frac:.0%} of units output 0 on the whole batch, "
                                              f"above {DEAD_FRAC:.0%}"))
        if s.saturated_frac is not None and s.saturated_frac > SATURATED_FRAC:
            out.append(_flag(s, "saturated", f"{s.saturated_frac:.0%} of outputs saturated, above {SATURATED_FRAC:.0%}"))
    return out


def _flag(s: LayerStats, kind: str, message: str) -> dict:
    return {"path": s.path, "kind": kind, "message": message}


# ---- a model's variant and its batch -------------------------------------------------------------
def with_norm_position(model, position: str):
    """The model with every transformer block's norm_position set to `position` (pre | post)."""
    from dataclasses import replace

    from layerwise.spec.transform import map_tree

    if position not in ("pre", "post"):
        raise LayerwiseError(f"--norm-position {position!r}: expected pre or post")
    found = []

    def fn(path, node):
        if getattr(node, "type_name", "") != "transformer_block":
            return node
        found.append(path)
        return replace(node, norm_position=position)

    body = map_tree(model.body, fn)
    if not found:
        raise LayerwiseError(f"--norm-position: model {model.name!r} has no transformer blocks to put norms in")
    return replace(model, body=body)


def synthetic_batch(model, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Standard-normal images/features, uniform token ids; targets uniform over the output classes."""
    g = torch.Generator().manual_seed(seed)
    shape = model.input_shape(batch)
    if model.input.kind == "tokens":
        x = torch.randint(0, model.input.vocab_size, shape, generator=g)
    else:
        x = torch.randn(shape, generator=g)
    out = model.out_shape(shape)
    if model.task == "classify":
        return x, torch.randint(0, out[-1], (batch,), generator=g)
    if model.task in ("lm", "mlm"):
        return x, torch.randint(0, out[-1], tuple(out[:-1]), generator=g)
    if model.task == "regress":
        return x, torch.randn(tuple(out), generator=g)
    return x, None
