"""`--impl hf`: MambaMixer of transformers 5.23 as it runs on CPU (no mamba_ssm / causal_conv1d
kernels: `causal_conv1d_fn` and `mamba_selective_scan`'s reference PyTorch paths), op by op.
Legend: B batch, S positions, Di d_inner, N d_state, R dt_rank, K d_conv.

Read from models/mamba/modeling_mamba.py (MambaMixer.forward, causal_conv1d_fn, mamba_selective_scan):
  in_proj       P (B, S, 2Di), transposed: x and the gate are (B, Di, S) views of it
  conv          x.to(weight.dtype) (an fp32 copy under autocast, which conv1d's autocast casts back:
                the low copy is saved), conv1d (B, Di, S + K - 1), cut to S, silu (saves its input)
  x_proj        on the (B, S, Di) transpose of the silu output: matmul's contiguous copy is saved
                (at batch 1 the transpose reshapes to a view: no copy; the same for out_proj)
  dt            dt_proj.weight @ time_step^T (saves the time_step view), + dt_proj.bias, softplus
                (saves its input)
  scan          discrete_A = exp(A * dt) and discrete_B = dt * B.float() are (B, Di, S, N) fp32 and
                saved (exp's result; the product by x.float()); deltaB_u = discrete_B * x (B, Di, S, N);
                the loop: state = discrete_A[:, :, t] * state + deltaB_u[:, :, t] saves the previous
                state (the first: zeros in the input's dtype), matmul(state.to(input dtype), C_t) saves
                the state (a low copy of it under autocast); + x * D, * silu(gate): fp32
  out_proj      on the transposed scan output: matmul's contiguous copy (autocast's cast) is saved
Differences from our build (cost/act_mamba.py): discrete_B, not dt * x, is what the product by x
saves (a (B, Di, S, N) tensor, not (B, S, Di)); the conv's input copies under autocast; the low copies
of the states the output's matmul saves.
"""
from __future__ import annotations

from layerwise.cost.act_leaves import activation_op
from layerwise.cost.act_trace import T, Trace, promote
from layerwise.cost.activations import run


def mixer(b, tr: Trace, h: T, kids: dict) -> T:
    """MambaMixer.forward's slow path (training, no cache) on h (B, S, d)."""
    from layerwise.cost.act_mamba import gate_output
    bsz, s, _ = h.shape
    di, n, r = b.d_inner, b.d_state, b.dt_rank
    low = tr.policy.autocast or h.dtype
    p = run(kids["in_proj"], "in_proj", tr, h)  # (B, S, 2Di)
    x, z = tr.view(p, (bsz, di, s)), tr.view(p, (bsz, di, s))
    del p
    conv_in = x if x.dtype == tr.policy.dtype else tr.new(x.shape, tr.policy.dtype, x.grad)  # .to(weight.dtype)
    c = run(kids["conv1d"], "conv1d", tr, conv_in)  # (B, Di, S + K - 1)
    del conv_in
    tr.begin(".silu")
    x = activation_op(tr, tr.view(c, (bsz, di, s)), "silu")  # saves its input: c's storage
    del c
    xp = run(kids["x_proj"], "x_proj", tr, _transposed(tr, x, low))  # (B, S, R + 2N)
    ts, bm, cm = tr.view(xp, (bsz, s, r)), tr.view(xp, (bsz, s, n)), tr.view(xp, (bsz, s, n))
    del xp
    pre = run(kids["dt_proj"], "dt_proj", tr, ts)  # weight @ time_step^T, then + the bias
    tr.path.append("scan")
    try:
        y = _scan(kids["scan"], tr, x, pre, bm, cm)
    finally:
        tr.path.pop()
    gated = gate_output(tr, y, z)
    del y
    folded = _transposed(tr, gated, low)
    del gated
    return run(kids["out_proj"], "out_proj", tr, folded)


def _transposed(tr: Trace, t: T, low: str) -> T:
    """A linear's input t.transpose(1, 2) (B, S, Di) of a contiguous (B, Di, S): matmul's reshape to
    (B*S, Di) copies it (in the compute dtype), except at batch 1, where it is a transposed view
    (the linear then saves t itself, or autocast's cast of it)."""
    bsz, di, s = t.shape
    if bsz == 1:
        return tr.view(t, (bsz, s, di))
    return tr.new((bsz, s, di), low, t.grad)


def _scan(b, tr: Trace, x: T, pre: T, bm: T, cm: T) -> T:
    """mamba_selective_scan(x (B, Di, S), dt, A, B, C, D, z, delta_bias, softplus): one step."""
    from layerwise.cost.act_mamba import scan_params

    tr.begin()
    bsz, di, s = x.shape
    n = b.d_state
    a, d = scan_params(b, tr, di)  # -exp(A_log.float()), D
    dt = tr.new(pre.shape, pre.dtype, pre.grad)  # softplus(dt + bias): saves its input
    tr.save(pre)
    grad = dt.grad or a.grad
    big = promote(dt.dtype, a.dtype)
    prod = tr.new((bsz, di, s, n), big, grad)  # A * dt: saves both
    tr.save(a, dt)
    da = tr.new(prod.shape, big, grad)  # exp: saves its result
    tr.save(da)
    del prod
    bf = bm if bm.dtype == "fp32" else tr.new(bm.shape, "fp32", bm.grad)  # B.float()
    db = tr.new((bsz, di, s, n), promote(dt.dtype, "fp32"), dt.grad or bm.grad)  # dt * B: saves both
    tr.save(dt, bf)
    del bf
    xf = x if x.dtype == "fp32" else tr.new(x.shape, "fp32", x.grad)  # x.float()
    dbx = tr.new(db.shape, "fp32", db.grad or xf.grad)  # discrete_B * x: saves both
    tr.save(db, xf)
    del xf, db
    h = tr.new((bsz, di, n), x.dtype, False)  # zeros in the input's dtype
    ys = []
    for _ in range(s):
        step = tr.new(h.shape, promote(da.dtype, h.dtype), da.grad or h.grad)  # dA_t * state: saves state
        tr.save(h)
        nxt = tr.new(h.shape, promote(step.dtype, dbx.dtype), step.grad or dbx.grad)  # + deltaB_u_t
        del step
        h = nxt
        del nxt
        lo = h if h.dtype == x.dtype else tr.new(h.shape, x.dtype, h.grad)  # .to(input dtype)
        tr.save(lo, cm)
        ys.append(tr.new((bsz, di, 1), x.dtype, lo.grad))
        del lo
    stacked = tr.new((bsz, di, s), x.dtype, ys[0].grad)
    del ys
    xd = tr.new(x.shape, promote(x.dtype, d.dtype), x.grad or d.grad)  # x * D: saves x
    tr.save(x)
    out = tr.new(x.shape, promote(stacked.dtype, xd.dtype), stacked.grad or xd.grad)
    # its backward per position, as our build's (cost/act_mamba.py): the selects of discrete_A and
    # deltaB_u make zero (B, Di, S, N) gradients added to the accumulated ones, next to the
    # gradients of x and of the gate
    full = max(da.storage.nbytes, dbx.storage.nbytes)
    pending = 2 * x.storage.nbytes
    tr.steps[-1].io = (da.storage.nbytes + dbx.storage.nbytes + 2 * full + pending, out.storage.nbytes)
    del stacked, xd, h, da, dbx
    return out

