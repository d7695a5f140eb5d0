"""Saved tensors of Mamba's block (layerwise/build/mamba.py), op by op as its forward runs them.
Legend: B batch, S positions, Di d_inner, N d_state, R dt_rank, K d_conv.

  norm, in_proj          P (B, S, 2Di); x, z are views of it (conv1d and silu(z) save P)
  conv1d                 on x^T (B, Di, S), padding K - 1: C (B, Di, S + K - 1), saved by silu
  silu                   X (B, S, Di) in C's (B, Di, S) layout, so x_proj's matmul folds a copy of it
                         (B*S, Di) and saves that; dt * x and x * D save X itself
  x_proj, dt_proj        XP (B, S, R + 2N); dt, Bm, Cm are views (dt_proj's fold of dt is a view)
  softplus               saves its input (B, S, Di), returns dt (B, S, Di)
  scan                   A = -exp(A_log): exp saves its result (Di, N); dt * A saves A (and dt);
                         dA = exp(.) saves dA (B, S, Di, N); dt * x saves both; (dt x) * Bm saves
                         dt x (B, S, Di) and Bm; the loop over S positions: h = dA_t * h + dBx_t
                         saves the previous h, h * Cm_t saves the new one: S + 1 states (B, Di, N)
                         (the first the zeros it starts from); y_t (B, Di) are kept in a list until
                         the stack; x * D saves x
  gate                   silu(z) saves z; y * silu(z) saves both factors; out_proj saves the product
Under autocast the projections and the conv run in the low dtype (their outputs low); the scan's
elementwise ops promote to fp32 where a parameter (A, D) or an fp32 tensor meets them.
"""
from __future__ import annotations

from layerwise.cost.act_composites import residual_add
from layerwise.cost.act_leaves import activation_op
from layerwise.cost.act_trace import T, Trace, promote
from layerwise.cost.activations import act, run
from layerwise.spec.errors import LayerwiseError


@act("mamba_block")
def _block(b, tr: Trace, x: T) -> T:
    """x + mixer(norm(x))."""
    kids = dict(b.children())
    start = len(tr.steps)
    return residual_add(tr, x, start, run(kids["mixer"], "mixer", tr, run(kids["norm"], "norm", tr, x)))


@act("mamba_mixer")
def _mixer(b, tr: Trace, h: T) -> T:
    kids = dict(b.children())
    if tr.policy.hf is not None:  # --impl hf: transformers' MambaMixer on CPU (cost/act_hf_mamba.py)
        from layerwise.cost.act_hf_mamba import mixer

        return mixer(b, tr, h, kids)
    bsz, s, _ = h.shape
    di, n, r = b.d_inner, b.d_state, b.dt_rank
    p = run(kids["in_proj"], "in_proj", tr, h)  # (B, S, 2Di)
    x, z = tr.view(p, (bsz, s, di)), tr.view(p, (bsz, s, di))
    del p
    c = run(kids["conv1d"], "conv1d", tr, tr.view(x, (bsz, di, s)))  # (B, Di, S + K - 1)
    tr.begin(".silu")
    x = activation_op(tr, tr.view(c, (bsz, s, di)), "silu")  # saves its input: c's storage
    del c
    folded = tr.new((bsz, s, di), x.dtype, x.grad)  # matmul's contiguous copy of x (B*S, Di)
    xp = run(kids["x_proj"], "x_proj", tr, folded)  # (B, S, R + 2N)
    del folded
    dt, bm, cm = tr.view(xp, (bsz, s, r)), tr.view(xp, (bsz, s, n)), tr.view(xp, (bsz, s, n))
    del xp
    pre = run(kids["dt_proj"], "dt_proj", tr, dt)  # (B, S, Di)
    tr.begin(".softplus")
    dt = tr.new(pre.shape, pre.dtype, pre.grad)
    tr.save(pre)
    del pre
    tr.path.append("scan")
    try:
        y = _scan(kids["scan"], tr, x, dt, bm, cm)
    finally:
        tr.path.pop()
    return run(kids["out_proj"], "out_proj", tr, gate_output(tr, y, z))


def gate_output(tr: Trace, y: T, z: T) -> T:
    """y * silu(z): silu saves z (the in_proj output's storage), the product saves both factors."""
    tr.begin(".gate")
    gate = activation_op(tr, z, "silu")
    out = tr.new(y.shape, promote(y.dtype, gate.dtype), y.grad or gate.grad)
    tr.save(y, gate)
    return out


@act("selective_scan")
def _scan_alone(b, tr: Trace, x: T) -> T:
    """The scan's module takes dt, Bm and Cm from its mixer's projections: it runs inside a mixer."""
    raise LayerwiseError(f"{'.'.join(tr.path) or b.type_name}: a selective_scan runs inside a mamba_mixer "
                         f"(dt, Bm, Cm come from the mixer's projections); size the mixer or the block")


def scan_params(b, tr: Trace, di: int) -> tuple[T, T]:
    """The scan's parameters A_log (Di, N) and D (Di): A = -exp(A_log) (exp saves its result)."""
    n = b.d_state
    a_log = tr.param("A_log", di * n, b.trainable, (di, n))
    d = tr.param("D", di, b.trainable)
    e = tr.new((di, n), a_log.dtype, a_log.grad)
    tr.save(e)
    return tr.new((di, n), e.dtype, e.grad), d


def _scan(b, tr: Trace, x: T, dt: T, bm: T, cm: T) -> T:
    """selective_scan(x, dt, -exp(A_log), Bm, Cm, D) (build/mamba.py), one step for the whole loop."""
    tr.begin()
    bsz, s, di = x.shape
    n = b.d_state
    a, d = scan_params(b, tr, di)
    grad = dt.grad or a.grad
    big = promote(dt.dtype, a.dtype)
    prod = tr.new((bsz, s, di, n), big, grad)  # dt[..., None] * A: saves A and dt
    if a.grad:
        tr.save(dt)
    if dt.grad:
        tr.save(a)
    da = tr.new(prod.shape, big, grad)  # exp: saves its result
    tr.save(da)
    del prod
    dx = tr.new(x.shape, promote(dt.dtype, x.dtype), dt.grad or x.grad)  # dt * x: saves both
    tr.save(dt, x)
    dbx = tr.new((bsz, s, di, n), promote(dx.dtype, bm.dtype), dx.grad or bm.grad)  # saves dt x and Bm
    tr.save(dx, bm)
    del dx
    h = tr.new((bsz, di, n), da.dtype, False)  # zeros_like(dA[:, 0])
    ys = []
    for _ in range(s):
        step = tr.new(h.shape, promote(da.dtype, h.dtype), da.grad or h.grad)  # dA_t * h
        tr.save(h)
        nxt = tr.new(h.shape, promote(step.dtype, dbx.dtype), step.grad or dbx.grad)  # + dBx_t
        del step
        h = nxt
        del nxt
        prod = tr.new(h.shape, promote(h.dtype, cm.dtype), h.grad or cm.grad)  # h * Cm_t: saves both
        tr.save(h, cm)
        ys.append(tr.new((bsz, di), prod.dtype, prod.grad))  # .sum(-1)
        del prod
    stacked = tr.new((bsz, s, di), ys[0].dtype, ys[0].grad)
    xd = tr.new(x.shape, promote(x.dtype, d.dtype), x.grad or d.grad)  # x * D: saves x (and D)
    tr.save(x)
    out = tr.new(x.shape, promote(stacked.dtype, xd.dtype), stacked.grad or xd.grad)
    # Its backward, per position (measured: tests/presets/test_hf_mamba.py): dA[:, t] and dBx[:, t]
    # are selects, whose backward makes a zero (B, S, Di, N) gradient and adds it to the
    # accumulated one (out of place): both accumulators, a fresh zero tensor and the sum at once,
    # next to the gradients of x (x * D) and of z (silu(z)), each (B, S, Di).
    full = max(da.storage.nbytes, dbx.storage.nbytes)
    pending = 2 * x.storage.nbytes
    tr.steps[-1].io = (da.storage.nbytes + dbx.storage.nbytes + 2 * full + pending, out.storage.nbytes)
    del stacked, xd, ys, h, da, dbx
    return out
