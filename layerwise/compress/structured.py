"""Structured pruning that really removes units: conv output channels, FFN neurons, attention heads.

The result is a smaller SPEC (dataclasses.replace on the block specs through spec.transform.map_tree)
and the dense module built from it, with the kept weights copied in. So params and FLOPs from the cost
reading shrink, and they are the built module's exactly (the spec is the module's description).

Units and the tensors each one owns (a "group": every slice removed together):
  conv   a conv2d/conv1d output channel c: conv.weight[c], conv.bias[c]; the batchnorm right after it
         (weight, bias, running stats)[c]; the next conv's weight[:, c] or, after a flatten, the next
         linear's weight[:, c*S:(c+1)*S] (S = spatial positions). Only convs whose ancestors are all
         `sequential` (no residual add, no shared Repeat copy) and whose output reaches the next conv
         or linear through batchnorm/activation/pool/dropout/flatten only.
  mlp    a hidden unit of a linear followed (through activation/dropout) by another linear in a
         sequential: the first's weight row and bias, the second's weight column.
  ffn    a hidden neuron i of an ffn: up_proj (and gate_proj) row i, down_proj column i.
  heads  an attention head h (MHA only): q/k/v_proj rows h*d_head..(h+1)*d_head, o_proj columns.
Scores: L2 norm of what each unit writes (conv filter; up row x down column; o_proj head columns);
the lowest-scoring units go. Shared specs (a Repeat's block) get the same kept COUNT in every copy,
but each copy keeps its own indices.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from layerwise.spec.base import Block, walk
from layerwise.spec.errors import LayerwiseError
from layerwise.spec.transform import map_tree

TARGETS = ("conv", "mlp", "ffn", "heads")
_PASS = ("activation", "maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d", "dropout")


@dataclass
class Group:
    """One prunable layer: its units' scores and the (tensor name, dim, unit width) slices."""

    path: str
    kind: str  # conv | ffn | heads
    n: int  # units before pruning
    slices: list[tuple[str, int, int]] = field(default_factory=list)  # (state_dict name, dim, width)
    score_of: tuple[str, int, int] | None = None  # tensor whose unit norms score the units
    extra_score: list[tuple[str, int, int]] = field(default_factory=list)  # multiplied in
    spec_edits: dict[str, dict] = field(default_factory=dict)  # conv chains: path -> {field: new}


@dataclass(frozen=True)
class PruneStep:
    body: Block
    module: nn.Module
    kept: dict[str, tuple[int, int]]  # group path -> (kept, before)
    indices: dict[str, "torch.Tensor"]  # group path -> kept unit indices (sorted)
    groups: tuple[Group, ...]


def keep_count(n: int, amount: float) -> int:
    """Units kept when removing `amount` of n (at least one)."""
    return max(1, n - int(round(n * amount)))


def check_amount(amount: float, what: str = "sparsity") -> None:
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < 1:
        raise LayerwiseError(f"prune: {what} must be in [0, 1), got {amount!r}")


# ---- finding groups ----------------------------------------------------------------------------
def find_groups(body: Block, in_shape, targets=TARGETS) -> list[Group]:
    bad = [t for t in targets if t not in TARGETS]
    if bad:
        raise LayerwiseError(f"prune: structured targets must be among {', '.join(TARGETS)}, got {bad}")
    infos = list(walk(body, tuple(in_shape)))
    groups = []
    if "conv" in targets or "mlp" in targets:
        groups += _chain_groups(infos, targets)
    for info in infos:
        t = info.block.type_name
        if t == "ffn" and "ffn" in targets:
            groups.append(_ffn_group(info.path, info.block))
        elif t == "attention" and "heads" in targets and info.block.n_heads > 1:
            groups.append(_head_group(info.path, info.block))
    return groups


def _chain_groups(infos, targets) -> list[Group]:
    """Conv channels and linear hidden units whose consumer is found by walking on in execution order."""
    by_path = {i.path: i for i in infos}
    leaves = [i for i in infos if not i.block.children()]
    out = []
    for j, info in enumerate(leaves):
        b = info.block
        conv = b.type_name in ("conv1d", "conv2d") and getattr(b, "groups", 1) == 1 and "conv" in targets
        lin = b.type_name == "linear" and "mlp" in targets
        if not (conv or lin) or not _seq_only(info.path, by_path):
            continue
        n, field_ = (b.c_out, "c_out") if conv else (b.d_out, "d_out")
        g = Group(info.path, "conv" if conv else "mlp", n, slices=[(f"{info.path}.weight", 0, 1)],
                  score_of=(f"{info.path}.weight", 0, 1))
        if b.bias:
            g.slices.append((f"{info.path}.bias", 0, 1))
        g.spec_edits[info.path] = {field_: None}
        ok = False
        for nxt in leaves[j + 1:]:
            t, p = nxt.block.type_name, nxt.path
            if not _seq_only(p, by_path):
                break
            if t in ("batchnorm1d", "batchnorm2d") and conv:
                g.slices += [(f"{p}.{nm}", 0, 1) for nm in ("weight", "bias", "running_mean", "running_var")
                             if nxt.block.affine or nm.startswith("running")]
                g.spec_edits[p] = {"n_features": None}
                continue
            if t in _PASS or (t == "flatten" and conv):
                continue
            if conv and t in ("conv1d", "conv2d") and getattr(nxt.block, "groups", 1) == 1:
                g.slices.append((f"{p}.weight", 1, 1))
                g.spec_edits[p] = {"c_in": None}
                ok = True
            elif t == "linear" and nxt.in_shape[-1] % n == 0 and (lin or len(nxt.in_shape) == 2):
                width = nxt.in_shape[-1] // n  # flatten lays out (C, H, W): channel-major
                g.slices.append((f"{p}.weight", 1, width))
                g.spec_edits[p] = {"d_in": ("x", width)}
                ok = True
            break
        if ok:
            out.append(g)
    return out


def _seq_only(path: str, by_path) -> bool:
    """Every ancestor of `path` is a sequential (so editing its spec edits only this instance)."""
    parts = path.split(".")
    for k in range(len(parts)):
        anc = ".".join(parts[:k])
        node = by_path.get(anc)
        if node is not None and node.block.type_name != "sequential":
            return False
    return True


def _ffn_group(path: str, b) -> Group:
    for name in ("up_proj", "down_proj") + (("gate_proj",) if b.gated else ()):
        if getattr(b, name).type_name != "linear":
            raise LayerwiseError(f"prune: {path}.{name} is a {getattr(b, name).type_name}; structured ffn "
                                 "pruning needs plain linear projections (merge LoRA first)")
    g = Group(path, "ffn", b.d_ff, score_of=(f"{path}.up_proj.weight", 0, 1),
              extra_score=[(f"{path}.down_proj.weight", 1, 1)])
    for name in ("up_proj", "gate_proj") if b.gated else ("up_proj",):
        g.slices.append((f"{path}.{name}.weight", 0, 1))
        if b.bias:
            g.slices.append((f"{path}.{name}.bias", 0, 1))
    g.slices.append((f"{path}.down_proj.weight", 1, 1))
    return g


def _head_group(path: str, b) -> Group:
    if b.kv_heads != b.n_heads:
        raise LayerwiseError(f"prune: {path} uses grouped-query attention (n_kv_heads={b.n_kv_heads}); "
                             "head pruning supports multi-head attention only")
    if b.context_dim:
        raise LayerwiseError(f"prune: {path} is cross attention; head pruning supports self attention only")
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        if getattr(b, name).type_name != "linear":
            raise LayerwiseError(f"prune: {path}.{name} is a {getattr(b, name).type_name}; merge LoRA first")
    d = b.head_dim
    g = Group(path, "heads", b.n_heads, score_of=(f"{path}.o_proj.weight", 1, d))
    for name in ("q_proj", "k_proj", "v_proj"):
        g.slices.append((f"{path}.{name}.weight", 0, d))
        if b.qkv_bias:
            g.slices.append((f"{path}.{name}.bias", 0, d))
    g.slices.append((f"{path}.o_proj.weight", 1, d))
    return g


# ---- pruning -----------------------------------------------------------------------------------
def _unit_norms(t: torch.Tensor, dim: int, width: int) -> torch.Tensor:
    """L2 norm of each unit (a block of `width` slices along `dim`) -> (n_units,)."""
    t = t.detach().float().movedim(dim, 0)
    return t.reshape(t.shape[0] // width, -1).norm(dim=1)


def _expand(idx: torch.Tensor, width: int) -> torch.Tensor:
    """Unit indices -> slice indices (unit u covers u*width .. u*width + width - 1)."""
    return (idx[:, None] * width + torch.arange(width)[None, :]).reshape(-1)


def choose(groups: list[Group], state: dict[str, torch.Tensor], amount: float) -> dict[str, torch.Tensor]:
    """Group path -> sorted kept unit indices (the highest scores)."""
    kept = {}
    for g in groups:
        score = _unit_norms(state[g.score_of[0]], g.score_of[1], g.score_of[2])
        for name, dim, width in g.extra_score:
            score = score * _unit_norms(state[name], dim, width)
        k = keep_count(g.n, amount)
        kept[g.path] = torch.sort(torch.topk(score, k).indices).values
    return kept


def shrink_spec(body: Block, groups: list[Group], amount: float) -> Block:
    """The spec with each group's unit count reduced to keep_count(n, amount)."""
    edits: dict[str, dict] = {}
    for g in groups:
        if g.kind in ("conv", "mlp"):
            k = keep_count(g.n, amount)
            for p, fields_ in g.spec_edits.items():
                for f, how in fields_.items():
                    edits.setdefault(p, {})[f] = k * how[1] if isinstance(how, tuple) else k
    kinds = {g.kind for g in groups}

    def fn(path: str, node: Block) -> Block:
        if path in edits:
            return replace(node, **edits[path])
        if node.type_name == "ffn" and "ffn" in kinds and keep_count(node.d_ff, amount) < node.d_ff:
            k = keep_count(node.d_ff, amount)
            gate = replace(node.gate_proj, d_out=k) if node.gated else None
            return replace(node, d_ff=k, up_proj=replace(node.up_proj, d_out=k), gate_proj=gate,
                           down_proj=replace(node.down_proj, d_in=k))
        if node.type_name == "attention" and "heads" in kinds and keep_count(node.n_heads, amount) < node.n_heads:
            k, d = keep_count(node.n_heads, amount), node.head_dim
            n_kv = k if node.n_kv_heads else 0
            return replace(node, n_heads=k, n_kv_heads=n_kv, d_head=d,
                           q_proj=replace(node.q_proj, d_out=k * d), k_proj=replace(node.k_proj, d_out=k * d),
                           v_proj=replace(node.v_proj, d_out=k * d), o_proj=replace(node.o_proj, d_in=k * d))
        return node

    return map_tree(body, fn)


def copy_kept(new: nn.Module, old_state: dict[str, torch.Tensor], groups: list[Group],
              kept: dict[str, torch.Tensor]) -> None:
    """Copy the kept slices of every old tensor into the new module (names are spec paths)."""
    cuts: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for g in groups:
        for name, dim, width in g.slices:
            cuts.setdefault(name, []).append((dim, _expand(kept[g.path], width)))
    new_state = new.state_dict()
    with torch.no_grad():
        for name, dst in new_state.items():
            src = old_state[name]
            for dim, idx in cuts.get(name, ()):
                src = src.index_select(dim, idx)
            if src.shape != dst.shape:
                raise LayerwiseError(f"prune: {name}: kept slice has shape {tuple(src.shape)}, the pruned spec "
                                     f"builds {tuple(dst.shape)}")
            dst.copy_(src)


def prune_structured(body: Block, module: nn.Module, in_shape, amount: float, targets=TARGETS) -> PruneStep:
    """Remove `amount` of the units of every prunable group; returns the smaller spec and module."""
    check_amount(amount)
    groups = find_groups(body, in_shape, targets)
    if not groups:
        raise LayerwiseError(f"prune: no structured {'/'.join(targets)} group found in this model "
                             "(convs need a sequential chain to the next conv or linear)")
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    kept = choose(groups, state, amount)
    new_body = shrink_spec(body, groups, amount)
    new_module = new_body.build()
    copy_kept(new_module, state, groups, kept)
    new_module.train(module.training)
    return PruneStep(new_body, new_module, {g.path: (len(kept[g.path]), g.n) for g in groups}, kept, tuple(groups))
