"""Saved tensors of the MoE layer, mirroring build/moe.py and build/moe_dispatch.py op by op.
Legend: T tokens, k top_k, E experts, C capacity, d d_model; a pair is a (token, choice).
Balanced routing (what the measure reading runs under fake tensors): expert e gets T*k // E
pairs, one more if e < T*k % E (`_expert_segments`), so dropless shapes and capacity overflow
follow from T, k, E, C. Equal experts with equal rows are traced as three and a lump."""
from __future__ import annotations

from dataclasses import replace

from layerwise.cost.act_leaves import activation_op
from layerwise.cost.precision import nbytes
from layerwise.cost.act_trace import T, Trace, promote
from layerwise.cost.activations import act, run, run_copies, run_outputs


@act("moe")
def _moe(b, tr: Trace, x: T) -> T:
    """Router logits (fp32) -> softmax (saved) -> top-k weights renormalised; router losses; then
    the experts, dropless or through the capacity buffers; the shared expert on every token."""
    hf = tr.policy.hf
    if hf is not None and hf.moe:  # --impl hf: transformers' router and grouped experts
        from layerwise.cost.act_hf_moe import moe

        return moe(b, tr, x, renormalise=hf.moe_renormalise, float_logits=hf.moe == "mixtral")
    d = x.shape[-1]
    rows = x.numel // d
    flat = tr.view(x, (rows, d))
    logits = _logits(b, tr, flat)
    tr.begin(".route")
    probs = tr.new(logits.shape, "fp32", logits.grad)
    tr.save(probs)  # softmax result
    k = b.top_k
    pairs = tr.new((rows * k,), "int64", False)  # balanced routing: arange(T*k) % E
    idx = tr.new((rows, k), "int64", False)
    del pairs
    topw = tr.new((rows, k), "fp32", probs.grad)
    tr.save(idx)  # gather/topk backward: the indices
    if b.norm_topk:
        ssum = tr.new((rows, 1), "fp32", probs.grad)
        tr.save(topw, ssum)  # weights / sum: div saves both
        topw = tr.new((rows, k), "fp32", topw.grad)
        del ssum
    if b.routed_scale != 1:  # times a Python number: nothing saved
        topw = tr.new((rows, k), "fp32", topw.grad)
    weights = tr.new((rows, k), x.dtype, topw.grad) if x.dtype != "fp32" else topw
    del topw
    if b.scoring == "sigmoid":  # e_score_correction_bias, in the parameters' dtype
        tr.buffers += nbytes(b.n_experts, tr.policy.dtype)
    loss = _router_loss(b, tr, logits, probs, idx)
    del logits
    cap = b.capacity(rows)
    out = _capacity(b, tr, flat, idx, weights, cap) if cap else _dropless(b, tr, flat, weights)
    del loss  # kept by the module until the next forward; 0-dim
    if b.shared_expert is not None:
        shared = run(b.shared_expert, "shared_expert", tr, flat)
        out = tr.pointwise(out, gate_shared(b, tr, flat, shared))
    return tr.view(out, x.shape)


def gate_shared(b, tr: Trace, flat: T, shared: T) -> T:
    """Qwen2-MoE's sigmoid(gate(x)) * shared (the mul saves both factors); `shared` as is without a gate."""
    if b.shared_expert_gate is None:
        return shared
    logit = run(b.shared_expert_gate, "shared_expert_gate", tr, flat)
    tr.begin(".shared_sigmoid")
    gate = activation_op(tr, logit, "sigmoid")
    tr.begin(".shared_scale")
    if gate.grad or shared.grad:
        tr.save(gate, shared)
    return tr.new(shared.shape, promote(gate.dtype, shared.dtype), gate.grad or shared.grad)


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
    # the loop's locals in build/moe.py: out, then the last expert's tok, slot and y, each dying as
    # the next expert rebinds it (a list replaced in place, so no stale reference keeps one alive)
    state = [tr.new((rows, d), flat.dtype, False), None, None, None]
    for first, count, n_e, expert in _expert_segments(b, rows * b.top_k):
        if n_e == 0:
            _unrouted(tr, expert, first, count, d)
            continue

        def copy(i: int, state: list, expert=expert, first=first, n_e=n_e) -> list:
            e = first + i
            tr.begin(f".gather{e}")
            pair = tr.new((n_e,), "int64", False)  # the expert's pairs: arange, then // k and % k
            state[1:3] = tr.new((n_e,), "int64", False), tr.new((n_e,), "int64", False)  # tok, slot
            del pair
            tok, slot = state[1:3]
            tr.save(tok)
            xin = tr.new((n_e, d), flat.dtype, flat.grad)
            ye = run(expert, f"experts.{e}", tr, xin)
            del xin  # flat[tok]: a temporary of the call (saved by the expert if it needs it)
            tr.begin(f".combine{e}")
            w_e = tr.new((n_e, 1), weights.dtype, weights.grad)
            tr.save(tok, slot, ye, w_e)  # weights[tok, slot]: saves both indices; y * w saves both
            state[3] = tr.new((n_e, d), promote(ye.dtype, w_e.dtype), True)  # y = expert(..) * w
            del ye, w_e, tok, slot  # the product's temporaries
            tr.save(state[3])  # index_add keeps its source for backward
            state[0] = tr.new((rows, d), state[3].dtype, True)  # out = out.index_add(0, tok, y)
            return state

        # a run of equal experts with equal rows: traced as three and a lump (run_copies)
        state = run_copies(tr, count, copy, state, lambda i, first=first: f"experts.{first + i}")
    return state[0]  # the last tok, slot, y die as _dropless returns


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
    ys, start = [], 0
    for names, expert in b.expert_groups():  # equal experts on equal buffers: three and a lump
        ys += run_outputs(tr, len(names), lambda i, e=expert, s=start: run(e, f"experts.{s + i}", tr,
                                                                          tr.view(buf, (cap, d))),
                          lambda i, s=start: f"experts.{s + i}")
        start += len(names)
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


def _expert_segments(b, pairs: int):
    """(first expert, count, rows each, expert spec): runs of equal experts receiving equal rows
    under balanced routing (experts below pairs % n_experts get one row more)."""
    q, r = divmod(pairs, b.n_experts)
    start = 0
    for names, expert in b.expert_groups():
        end = start + len(names)
        for a, z, n_e in ((start, min(end, r), q + 1), (max(start, r), end, q)):
            if a < z:
                yield a, z - a, n_e, expert
        start = end


def _unrouted(tr: Trace, expert, first: int, count: int, d: int) -> None:
    """Experts no token reaches: their weights and optimizer state exist (a steady-state step: other
    batches reached them), but MoEModule never calls them, so they get no gradient in this step."""
    sub = Trace(replace(tr.policy, grad=False))
    sub.path = [*tr.path, f"experts.{first}" if count == 1 else f"experts.{first}-{first + count - 1}"]
    here, one = ".".join(sub.path), ".".join([*tr.path, f"experts.{first}"])
    sub.begin()
    run(expert, "", sub, sub.new((1, d), tr.policy.dtype, False))
    for key, (numel, dtype, trainable) in sub.params.items():
        tr.params.setdefault(key, (numel, dtype, trainable))
        if count > 1:  # the real shape is the first expert's (memory.param_shapes_of)
            tr.origin[key] = one + sub.origin.get(key, key)[len(here):]
        tr.idle.add(key)
        tr.shapes.setdefault(key, sub.shapes[key])
        tr.counts[key] = count * sub.counts.get(key, 1)
    tr.buffers += sub.buffers * count
