"""Optimizer, parameter groups and learning-rate schedule.

Weight decay goes only to weights that are matrices of a linear/conv map: never to biases, norm
scales/shifts or embeddings (tokens, positions, CLS). Which is which is read from the spec tree (the
leaf block type that owns each parameter, found through its path), not guessed from names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from layerwise.spec.base import Block
from layerwise.spec.errors import LayerwiseError
from layerwise.train.config import TrainConfig

EMBEDDING_TYPES = frozenset({"embedding", "learned_positions", "cls_token", "sinusoidal_positions"})
NORM_TYPES = frozenset({"layernorm", "rmsnorm", "batchnorm1d", "batchnorm2d", "groupnorm", "instancenorm"})


@dataclass
class ParamGroups:
    decay: list[str] = field(default_factory=list)  # parameter names (module paths)
    no_decay: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # no spec leaf found: decided by ndim (>= 2 decays)


def spec_nodes(block: Block, path: str = "") -> dict[str, Block]:
    """Every node of the spec tree by path ('' = the root), shape-independent."""
    out = {path: block}
    for name, child in block.children():
        out.update(spec_nodes(child, f"{path}.{name}" if path else name))
    return out


def owner(nodes: dict[str, Block], param_name: str) -> tuple[str, Block | None]:
    """The deepest spec node whose path is a prefix of `param_name` (module path + local name)."""
    parts = param_name.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        path = ".".join(parts[:cut])
        if path in nodes:
            return path, nodes[path]
    return "", None


def split_decay(body: Block, module: torch.nn.Module) -> ParamGroups:
    """Names of trainable parameters that get weight decay, and those that do not."""
    nodes = spec_nodes(body)
    groups = ParamGroups()
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        path, node = owner(nodes, name)
        local = name[len(path) + 1:] if path else name
        if node is None or node.children():  # no leaf owns it (a composite's own parameter)
            groups.unmatched.append(name)
            (groups.decay if p.ndim >= 2 else groups.no_decay).append(name)
            continue
        t = node.type_name
        is_bias = local.split(".")[-1].startswith("bias")
        if t in EMBEDDING_TYPES or t in NORM_TYPES or t.endswith("norm") or is_bias:
            groups.no_decay.append(name)
        else:
            groups.decay.append(name)
    return groups


def make_optimizer(module: torch.nn.Module, body: Block, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, ParamGroups]:
    groups = split_decay(body, module)
    params = dict(module.named_parameters())
    if not groups.decay and not groups.no_decay:
        raise LayerwiseError("no trainable parameters: everything is frozen (check --freeze / LoRA targets)")
    pg = [{"params": [params[n] for n in groups.decay], "weight_decay": cfg.weight_decay},
          {"params": [params[n] for n in groups.no_decay], "weight_decay": 0.0}]
    pg = [g for g in pg if g["params"]]
    o, lr = cfg.optimizer, cfg.lr
    if o == "sgd":
        opt = torch.optim.SGD(pg, lr=lr)
    elif o == "sgd-momentum":
        opt = torch.optim.SGD(pg, lr=lr, momentum=cfg.momentum)
    elif o == "adagrad":
        opt = torch.optim.Adagrad(pg, lr=lr)
    elif o == "rmsprop":
        opt = torch.optim.RMSprop(pg, lr=lr, eps=cfg.eps)
    elif o == "adam":
        opt = torch.optim.Adam(pg, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)
    elif o == "adamw":
        opt = torch.optim.AdamW(pg, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)
    elif o == "adafactor":
        opt = torch.optim.Adafactor(pg, lr=lr)
    else:  # lion: only through the maintained lion-pytorch package, which layerwise does not depend on
        try:
            from lion_pytorch import Lion
        except ImportError:
            raise LayerwiseError("optimizer 'lion' needs the lion-pytorch package (pip install lion-pytorch); "
                                 "torch does not ship Lion") from None
        opt = Lion(pg, lr=lr, betas=tuple(cfg.betas))
    for g in opt.param_groups:
        g["base_lr"] = lr
    return opt, groups


def lr_factor(step: int, total: int, warmup: int, kind: str, min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr for optimizer step `step` (0-based) of `total`.

    Warmup: (step + 1) / warmup for the first `warmup` steps. Then with progress
    p = (step - warmup) / (total - warmup) in [0, 1): cosine min + (1 - min)(1 + cos(pi p)) / 2,
    linear min + (1 - min)(1 - p), constant 1.
    """
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    p = (step - warmup) / max(1, total - warmup)
    p = min(max(p, 0.0), 1.0)
    if kind == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    return min_ratio + (1.0 - min_ratio) * (1.0 - p)


def set_lr(opt: torch.optim.Optimizer, factor: float) -> float:
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor
    return opt.param_groups[0]["lr"]
