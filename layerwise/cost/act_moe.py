"""Saved tensors of the MoE layer, mirroring build/moe.py and build/moe_dispatch.py op by op.
Legend: T tokens, k top_k, E experts, C capacity, d d_model; a pair is a (token, choice).
Balanced routing (what the measure reading runs under fake tensors): expert e gets
`_rows_for(T, k, E, e)` pairs, so dropless shapes and capacity overflow follow from T, k, E, C."""
from __future__ import annotations

from dataclasses import replace

from layerwise.cost.act_leaves import activation_op
from layerwise.cost.act_trace import T, Trace, promote
from layerwise.cost.activations import act, run


@act("moe")
def _moe(b, tr: Trace, x: T) -> T:
    """Router logits (fp32) -> softmax (saved) -> top-k weights renormalised; router losses; then
    the experts, dropless or through the capacity buffers; the shared expert on every token."""
    d = x.shape[-1]
    rows = x.numel // d
    flat = tr.view(x, (rows, d))
    logits = _logits(b, tr, flat)
    tr.begin(".route")
    probs = tr.new(logits.shape, "fp32", logits.grad)
    tr.save(probs)  # softmax result
    k = b.top_k
    idx = tr.new((rows, k), "int64", False)
    topw = tr.new((rows, k), "fp32", probs.grad)
    tr.save(idx)  # gather/topk backward: the indices
    ssum = tr.new((rows, 1), "fp32", probs.grad)
    tr.save(topw, ssum)  # weights / sum: div saves both
    weights = tr.new((rows, k), x.dtype, topw.grad) if x.dtype != "fp32" else tr.new((rows, k), "fp32", topw.grad)
    del topw, ssum
    loss = _router_loss(b, tr, logits, probs, idx)
    del logits
    cap = b.capacity(rows)
    out = _capacity(b, tr, flat, idx, weights, cap) if cap else _dropless(b, tr, flat, weights)
    del loss  # kept by the module until the next forward; 0-dim
    if b.shared_expert is not None:
        shared = run(b.shared_expert, "shared_expert", tr, flat)
        if b.shared_expert_gate is not None:  # sigmoid(gate(x)) * shared: mul saves both factors
            logit = run(b.shared_expert_gate, "shared_expert_gate", tr, flat)
            tr.begin(".shared_sigmoid")
            gate = activation_op(tr, logit, "sigmoid")
            tr.begin(".shared_scale")
            if gate.grad or shared.grad:
                tr.save(gate, shared)
            shared = tr.new(shared.shape, promote(gate.dtype, shared.dtype), gate.grad or shared.grad)
        out = tr.pointwise(out, shared)
    return tr.view(out, x.shape)


def _logits(b, tr: Trace, flat: T) -> T:
    """(T, E) fp32. Under autocast the router runs with autocast off on flat.float() (a copy unless
    fp32); otherwise router(flat).float(), a copy (the low-precision logits die) unless fp32."""
    if tr.policy.autocast is None:
        logits = run(b.router, "router", tr, flat)
        if logits.dtype == "fp32":
            return logits
        tr.begin(".route")
        return tr.new(logits.shape, "fp32", logits.grad)
    policy = tr.policy
    if flat.dtype != "fp32":
        tr.begin(".router_input")
        flat = tr.new(flat.shape, "fp32", flat.grad)
    tr.policy = replace(policy, autocast=None)
    try:
        return run(b.router, "router", tr, flat)
    finally:
        tr.policy = policy


def _router_loss(b, tr: Trace, logits: T, probs: T, idx: T):
    """aux: one_hot(idx) (kT, E) int64 -> counts (E,) -> share (E,) fp32 (no grad); share * mean(probs)
    saves share. z: logsumexp saves the fp32 logits and its (T,) result, which pow(2) saves too."""
    loss = None
    if b.aux_loss_coef:
        tr.begin(".aux_loss")
        onehot = tr.new((idx.numel, b.n_experts), "int64", False)
        counts = tr.new((b.n_experts,), "int64", False)
        del onehot
        share = tr.new((b.n_experts,), "fp32", False)
        del counts
        mean = tr.new((b.n_experts,), "fp32", probs.grad)
        if mean.grad:
            tr.save(share)
        prod_ = tr.new((b.n_experts,), "fp32", probs.grad)
        del mean, share
        loss = _scalars(tr, prod_.grad, 2)
        del prod_
    if b.z_loss_coef:
        tr.begin(".z_loss")
        lse = tr.new((idx.shape[0],), "fp32", logits.grad)
        if logits.grad:
            tr.save(logits, lse)
        sq = tr.new(lse.shape, "fp32", lse.grad)
        del lse
        z = _scalars(tr, sq.grad, 2)
        del sq
        loss = z if loss is None else _scalars(tr, True, 1)
    return loss


def _scalars(tr: Trace, grad: bool, n: int) -> T:
    """n 0-dim fp32 results in a row (sum/mean, then the coefficient's mul): the last survives."""
    out = None
    for _ in range(n):
        out = tr.new((), "fp32", grad)
    return out


def _dropless(b, tr: Trace, flat: T, weights: T) -> T:
    """Each expert runs on its n_e routed rows (balanced routing), gathered by an index (saved),
    scaled by its weights (mul saves both) and index_add'ed back (saves the index)."""
    rows, d = flat.shape
    out = tr.new((rows, d), flat.dtype, False)
    for e, (name, expert) in enumerate(_experts(b)):
        n_e = _rows_for(rows, b.top_k, b.n_experts, e)
        if n_e == 0:
            continue
        tr.begin(f".gather{e}")
        tok = tr.new((n_e,), "int64", False)
        tr.save(tok)
        xin = tr.new((n_e, d), flat.dtype, flat.grad)
        y = run(expert, name, tr, xin)
        tr.begin(f".combine{e}")
        w_e = tr.new((n_e, 1), weights.dtype, weights.grad)
        slot = tr.new((n_e,), "int64", False)
        tr.save(tok, slot, y, w_e)  # weights[tok, slot]: saves both indices; y * w saves both
        prod_ = tr.new((n_e, d), promote(y.dtype, w_e.dtype), True)
        tr.save(prod_)  # index_add keeps its source for backward
        out = tr.new((rows, d), prod_.dtype, True)
    return out


def _capacity(b, tr: Trace, flat: T, idx: T, weights: T, cap: int) -> T:
    """build/moe_dispatch.capacity_combine: positions by one-hot cumsum, the (E*C + 1, d) buffer
    (index_copy_ saves the destinations), experts on C rows each, cat of their outputs, the pairs'
    rows gathered back (saves the destinations), times the weights (mul saves both), summed over k."""
    rows, d = flat.shape
    k, n = b.top_k, b.n_experts
    pairs = rows * k
    tr.begin(".dispatch")
    order = idx if k == 1 else tr.new((pairs,), "int64", False)  # idx.t().reshape(-1)
    onehot = tr.new((pairs, n), "int64", False)
    ranks = tr.new((pairs, n), "int64", False)
    picked = tr.new((pairs, 1), "int64", False)
    pos = tr.new((pairs,), "int64", False)
    del picked, ranks, onehot
    scaled = tr.new((pairs,), "int64", False)  # order * C
    dest = tr.new((pairs,), "int64", False)
    del scaled
    over = tr.new((pairs,), "bool", False)
    arange = tr.new((rows,), "int64", False)
    tok = tr.new((pairs,), "int64", False)
    del arange
    buf = tr.new((n * cap + 1, d), flat.dtype, False)
    picked_rows = tr.new((pairs, d), flat.dtype, flat.grad)
    if flat.grad:
        # flat[tok]: index saves the indices; index_copy_ the destinations and its source
        tr.save(tok, dest, picked_rows)
    buf = T(buf.shape, buf.dtype, picked_rows.grad, buf.storage)  # in place: now in the graph
    del picked_rows
    ys = [run(expert, name, tr, tr.view(buf, (cap, d))) for name, expert in _experts(b)]
    tr.begin(".combine")
    zero = tr.new((1, d), ys[0].dtype, False)
    out_rows = tr.new((n * cap + 1, d), ys[0].dtype, any(y.grad for y in ys))
    del zero, ys
    gathered = tr.new((pairs, d), out_rows.dtype, out_rows.grad)
    if out_rows.grad:
        tr.save(dest)  # out_rows[dest]: index saves the indices
    del out_rows
    w = weights if k == 1 else tr.new((pairs, 1), weights.dtype, weights.grad)  # weights.t().reshape(-1, 1)
    if w.grad:
        tr.save(gathered)
    if gathered.grad:
        tr.save(w)
    mixed = tr.new((pairs, d), promote(gathered.dtype, w.dtype), gathered.grad or w.grad)
    del gathered, w
    out = tr.new((rows, d), mixed.dtype, mixed.grad)  # view(k, T, d).sum(0)
    del order, pos, dest, over, tok
    return out


def _experts(b):
    return [(f"experts.{i}", e) for i, e in enumerate(b.experts)]


def _rows_for(tokens: int, k: int, n: int, expert: int) -> int:
    """Pairs routed to `expert` under balanced routing: slots t*k + j with (t*k + j) % n == e."""
    total = tokens * k
    return total // n + (1 if expert < total % n else 0)
