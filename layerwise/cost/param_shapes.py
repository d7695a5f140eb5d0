"""Parameter shapes of a spec tree, keyed by the same paths as the built module's
`named_parameters()`. The optimizer-state and step-temporary models need shapes, not just counts
(Adafactor factors matrices; a for-loop step's temporaries are sized by the largest tensor).
Pure Python: one small shape function per leaf type; composites recurse through `children()`.
"""
from __future__ import annotations

from layerwise.spec.base import Block
from layerwise.spec.errors import LayerwiseError

Shapes = dict[str, tuple[int, ...]]


def _pair(v) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _linear(b) -> Shapes:
    return {"weight": (b.d_out, b.d_in), **({"bias": (b.d_out,)} if b.bias else {})}


def _conv(b) -> Shapes:
    kernel = (b.kernel,) if b.type_name == "conv1d" and isinstance(b.kernel, int) else _pair(b.kernel)
    if b.type_name == "conv1d":
        kernel = kernel[:1]
    return {"weight": (b.c_out, b.c_in // b.groups, *kernel), **({"bias": (b.c_out,)} if b.bias else {})}


def _patch(b) -> Shapes:
    ph, pw = _pair(b.patch)
    weight = (b.d_model, b.c_in, ph, pw) if b.kind == "conv" else (b.d_model, b.c_in * ph * pw)
    return {"proj.weight": weight, **({"proj.bias": (b.d_model,)} if b.bias else {})}


def _norm(b) -> Shapes:
    n = getattr(b, "n_features", None) or b.d_model
    if b.type_name.startswith("batchnorm") and not b.affine:
        return {}
    with_bias = b.type_name.startswith("batchnorm") or (b.type_name == "layernorm" and b.bias)
    return {"weight": (n,), **({"bias": (n,)} if with_bias else {})}


_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _rnn(b) -> Shapes:
    g, h, out = _GATES[b.kind], b.d_hidden, {}
    dirs = 2 if b.bidirectional else 1
    for layer in range(b.n_layers):
        d_in = b.d_in if layer == 0 else h * dirs
        for suffix in ("", "_reverse")[:dirs]:
            out[f"rnn.weight_ih_l{layer}{suffix}"] = (g * h, d_in)
            out[f"rnn.weight_hh_l{layer}{suffix}"] = (g * h, h)
            if b.bias:
                out[f"rnn.bias_ih_l{layer}{suffix}"] = (g * h,)
                out[f"rnn.bias_hh_l{layer}{suffix}"] = (g * h,)
    return out


_LEAVES = {
    "linear": _linear,
    "conv1d": _conv,
    "conv2d": _conv,
    "embedding": lambda b: {"weight": (b.vocab_size, b.d_model)},
    "learned_positions": lambda b: {"weight": (b.max_seq, b.d_model)},
    "cls_token": lambda b: {"weight": (1, 1, b.d_model)},
    "patch_embedding": _patch,
    "token_type": lambda b: {"weight": (b.type_vocab_size, b.d_model)},
    "batchnorm1d": _norm,
    "batchnorm2d": _norm,
    "layernorm": _norm,
    "rmsnorm": _norm,
    "rnn": _rnn,
    "relative_position_bias": lambda b: {"weight": (b.n_buckets, b.n_heads)},
}


def own_param_shapes(block: Block) -> Shapes:
    """Shapes of the parameters a block holds itself (not its children's)."""
    fn = _LEAVES.get(block.type_name)
    if fn is not None:
        return fn(block)
    own = block.own_params().total
    if own and block.type_name == "selective_scan":
        return {"A_log": (block.d_inner, block.d_state), "D": (block.d_inner,)}
    if own and block.type_name == "encoder":  # the MLM decoder's own bias (its weight is embed.weight)
        return {"mlm_bias": (own,)}
    if own:
        raise LayerwiseError(f"no parameter-shape rule for block type {block.type_name!r} ({own} own parameters)")
    return {}


def param_shapes(block: Block, prefix: str = "") -> Shapes:
    """Every parameter's shape in the tree, keyed by its path (tied tensors once)."""
    out = {f"{prefix}{k}": v for k, v in own_param_shapes(block).items()}
    for name, child in block.children():
        out.update(param_shapes(child, f"{prefix}{name}."))
    return out


def param_shapes_at(block: Block, keys) -> Shapes:
    """The shapes of the parameters at paths `keys` (those found), walking only the children on
    their paths, each once: a repeat of 10**6 layers or 2**31 experts is not listed."""
    own = own_param_shapes(block)
    out = {k: own[k] for k in keys if k in own}
    rest = [k for k in keys if k not in own]
    if not rest:
        return out
    for names, child in block.child_groups():
        below: dict[str, list[str]] = {}
        for k in rest:
            sub = _below(names, k)
            if sub is not None:
                below.setdefault(sub, []).append(k)
        if below:
            for sub, shape in param_shapes_at(child, list(below)).items():
                for k in below[sub]:
                    out.setdefault(k, shape)
    return out


def _below(names, key: str) -> str | None:
    """`key` with the one of `names` it lies under stripped (`names`: a tuple, or base.Names),
    None if it lies under none of them."""
    from layerwise.spec.base import Names

    if isinstance(names, Names):
        if not key.startswith(names.prefix):
            return None
        head, _, rest = key[len(names.prefix):].partition(".")
        ok = head.isdigit() and names.start <= int(head) < names.stop and str(int(head)) == head
        return rest if ok and rest else None
    for name in names:
        if key.startswith(name + "."):
            return key[len(name) + 1:]
    return None
