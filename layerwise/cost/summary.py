"""The summary reading: per-layer shapes and parameters, depth, and the split by layer type."""
from __future__ import annotations

import math
from dataclasses import dataclass

from layerwise.spec.base import Block, Shape, walk
from layerwise.spec.counts import Params


@dataclass(frozen=True)
class LayerRow:
    path: str
    type: str
    level: int
    output_shape: Shape
    params: int  # all parameters in this subtree (tied ones once); a collapsed row: of all its copies
    trainable: int
    own_params: int  # held by this node itself (leaves: all of theirs)
    count: int = 1  # > 1: one row standing for this many equal copies ("blocks.1-79")


@dataclass(frozen=True)
class Summary:
    model: str
    input_shape: Shape
    output_shape: Shape
    params: Params
    active_params: Params
    depth: int
    layers: tuple[LayerRow, ...]
    by_type: dict[str, int]  # layer type -> parameters held by nodes of that type
    # distinct MoE layers (first path of each): expert combinations C(n_experts, top_k), the
    # "smaller experts" argument (DeepSeekMoE, arXiv 2401.06066: 16 choose 2 = 120 vs 64 choose 8)
    moe: tuple[dict, ...] = ()


DEPTH_DEFINITION = ("depth = parameterised layers on the longest input-to-output path; norms (scale and shift "
                    "only) and residual skips add 0, so ResNet-50 has depth 50")


# Layer families that own their projections: a Linear inside an attention block is attention's cost.
FAMILIES = ("attention", "ffn", "moe", "rnn")

# A run of more equal copies than this (a repeat's layers, a MoE's experts) is listed as its first
# copy and one row for the others, so a million layers make a table of a few rows.
COLLAPSE_OVER = 64


def summarize(name: str, body: Block, in_shape: Shape) -> Summary:
    """Per-layer rows and the split by layer type. `by_type` charges a leaf's parameters to the
    nearest enclosing family (attention, ffn, moe, rnn), else to the leaf's own type, so a user can
    compare what attention, the FFN, convolutions and embeddings cost."""
    rows, by_type, family_at, moe = [], {}, {}, {}
    for info in walk(body, in_shape, collapse_over=COLLAPSE_OVER):
        if info.block.type_name == "moe":
            moe.setdefault(_moe_key(info.block), _moe_row(info.path, info.block))
        family_at = {lvl: fam for lvl, fam in family_at.items() if lvl < info.level}
        family = next(iter(family_at.values()), None)
        if info.count > 1:  # copies of an already listed subtree
            for kind, n in _by_type(info.block, family).items():
                by_type[kind] = by_type.get(kind, 0) + n * info.count
            p = info.block.params() * info.count
            rows.append(LayerRow(info.path, info.block.type_name, info.level, info.out_shape, p.total, p.trainable,
                                 info.block.own_params().total * info.count, info.count))
            continue
        if info.block.type_name in FAMILIES and not family_at:
            family_at[info.level] = info.block.type_name
        p, own = info.block.params(), info.block.own_params().total
        if own:
            kind = next(iter(family_at.values()), info.block.type_name)
            by_type[kind] = by_type.get(kind, 0) + own
        if info.path:
            rows.append(LayerRow(info.path, info.block.type_name, info.level, info.out_shape, p.total, p.trainable, own))
    return Summary(model=name, input_shape=tuple(in_shape), output_shape=tuple(body.out_shape(in_shape)),
                   params=body.params(), active_params=body.active_params(), depth=body.depth(),
                   layers=tuple(rows), by_type=dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
                   moe=tuple(moe.values()))


def _moe_key(b) -> tuple:
    return (b.n_experts, b.top_k, b.capacity_factor, b.aux_loss_coef, b.z_loss_coef)


def _moe_row(path: str, b) -> dict:
    return {"path": path, "n_experts": b.n_experts, "top_k": b.top_k,
            "combinations": _combinations(b.n_experts, b.top_k), "capacity_factor": b.capacity_factor,
            "aux_loss_coef": b.aux_loss_coef, "z_loss_coef": b.z_loss_coef}


def _by_type(block: Block, family: str | None) -> dict[str, int]:
    """Parameters of one subtree by type (charged to `family` if set), each distinct child once."""
    if family is None and block.type_name in FAMILIES:
        family = block.type_name
    out: dict[str, int] = {}
    own = block.own_params().total
    if own:
        out[family or block.type_name] = own
    for names, child in block.child_groups():
        for kind, n in _by_type(child, family).items():
            out[kind] = out.get(kind, 0) + n * len(names)
    return out


COMBINATION_DIGITS = 100  # beyond, C(n_experts, top_k) is named, not written out (it could take minutes)


def _combinations(n: int, k: int) -> int | None:
    """C(n, k) if it has at most COMBINATION_DIGITS digits (estimated from log-gamma), else None."""
    digits = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(10)
    return math.comb(n, k) if digits <= COMBINATION_DIGITS else None
