"""Activation dataflow of the recurrent layers (rnn, gru, lstm), as torch's non-mkldnn CPU kernels
run them (what the measure reading runs): the saved per-step states, the input projections, and in
backward the time loops whose hidden-weight gradients autograd sums step by step."""
from __future__ import annotations

from layerwise.cost.act_leaves import dropout_op
from layerwise.cost.act_trace import Storage, T, Trace
from layerwise.cost.activations import act
from layerwise.cost.precision import nbytes


# Tensors of shape (B, H) each time step saves, per layer and direction, in the non-mkldnn CPU
# RNN (`torch.backends.mkldnn.flags(enabled=False)`, what the measure reading runs): rnn: h_{t-1}
# for the hidden matmul (tanh's result is the next step's h_{t-1}); gru/lstm: 4 (B, H) + one
# (B, 3H) / 3 (B, H) + one (B, 4H) gate tensor = 7. The initial states are views of one zeros
# (layers*dirs, B, H) storage (lstm: h0 and c0).
_RNN_PER_STEP = {"rnn": 1, "gru": 7, "lstm": 7}  # rnn: plus h0 itself (S + 1 in all)
_RNN_INIT = {"rnn": 1, "gru": 1, "lstm": 2}
_GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # gate blocks of d_hidden rows in each weight


def _time_loops(b, tr: Trace, bsz: int, seq: int, saved: list[int]) -> tuple[tuple[int, int, int], ...]:
    """Step.summed of an RNN, one entry per layer and direction:
    - its gradients' bytes (fp32 .grad);
    - what its loop holds at once: the hidden weight's and bias's gradient sums (in the autocast
      dtype for the GRU, whose cells run low), two more of the hidden weight's (the step's and the
      new sum) and, below the top layer, the gradient of its output;
    - the saved bytes freed by then: the loops back-propagated before it (`saved`: what each loop
      saved) and two of its own time steps' states."""
    gates = _GATES[b.kind] * b.d_hidden
    low = (tr.policy.autocast if b.kind == "gru" else None) or tr.policy.dtype
    dirs = 2 if b.bidirectional else 1
    two_steps = 2 * nbytes(_RNN_PER_STEP[b.kind] * bsz * b.d_hidden, low)
    out_grad = nbytes(bsz * seq * b.d_hidden * dirs, tr.policy.dtype)  # a lower layer's output gradient
    out = []
    for layer in range(b.n_layers):
        width = b.d_in if layer == 0 else b.d_hidden * dirs
        n_bias = 2 * gates if b.bias else 0
        hh, bias_hh = nbytes(gates * b.d_hidden, low), (nbytes(gates, low) if b.bias else 0)
        for d in range(dirs):
            later = sum(saved[layer * dirs + d + 1:])  # back-propagated before this loop
            out.append((nbytes(gates * (width + b.d_hidden) + n_bias, tr.policy.dtype),
                        3 * hh + bias_hh + (out_grad if layer < b.n_layers - 1 else 0), later + two_steps))
    return tuple(out)


@act("rnn")
def _rnn(b, tr: Trace, x: T) -> T:
    """Saved per layer: its input (B*S, d_in) (the reverse direction: a flipped copy), the
    per-step states above, and with dropout between layers, the dropout mask."""
    tr.begin()
    bsz, s, _ = x.shape
    h, dirs, layers = b.d_hidden, 2 if b.bidirectional else 1, b.n_layers
    d_in = b.d_in
    gates = _GATES[b.kind] * h
    for layer in range(layers):
        width = d_in if layer == 0 else h * dirs
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            tr.param(f"rnn.weight_ih{sfx}", gates * width, b.trainable)
            tr.param(f"rnn.weight_hh{sfx}", gates * h, b.trainable)
            if b.bias:
                tr.param(f"rnn.bias_ih{sfx}", gates, b.trainable)
                tr.param(f"rnn.bias_hh{sfx}", gates, b.trainable)
    grad = (x.grad or b.trainable) and tr.policy.grad
    # CPU autocast runs the GRU in the low dtype (measured with saved_tensors_hooks, oneDNN off): the
    # gates save the cached low casts of the weights, a low copy of the input, and per layer and
    # direction all per-step states low except s - 1 (B, h) ones kept in fp32. rnn/lstm under
    # autocast are not modelled (their full-precision accounting is used).
    low = tr.policy.autocast if b.kind == "gru" else None
    cast_saved = [0] * (layers * dirs)  # bytes of each loop's weight casts it saves
    if low:  # the casts are made (and cached) under no_grad too; saved only when training
        for layer in range(layers):
            for d in range(dirs):
                before = tr.saved_bytes(("cast",))
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                width = d_in if layer == 0 else h * dirs
                tensors = [(f"rnn.weight_ih{sfx}", gates * width, True), (f"rnn.weight_hh{sfx}", gates * h, True)]
                if b.bias:  # cast (and cached) too, but not saved
                    tensors += [(f"rnn.bias_ih{sfx}", gates, False), (f"rnn.bias_hh{sfx}", gates, False)]
                for name, n, saved in tensors:
                    cast = tr.low_param(tr.key(name), T((n,), tr.policy.dtype, b.trainable, Storage(0, "param")))
                    if saved and grad:
                        tr.save(cast)
                cast_saved[layer * dirs + d] = tr.saved_bytes(("cast",)) - before
    if grad:
        n_init = _RNN_INIT[b.kind]
        for _ in range(n_init):
            tr.save(tr.new((layers * dirs, bsz, h), x.dtype, False))
    inp = x
    saved = []  # bytes each loop (layer, direction) saves
    for layer in range(layers):
        # all time steps' input projections at once (B*S, gates): two, briefly, under no_grad or
        # autocast; training in full precision keeps one through the time loop, plus a time-major
        # copy of the input (fitted to the measure reading on the GRU; an estimate for rnn/lstm)
        # (the GRU under autocast keeps one low projection; its low input copy is the saved one)
        # With one sequence the time-major view of a batch-first input is contiguous: torch.linear
        # folds it into one addmm, with no copy of the input and no second projection (measured)
        folded = bsz == 1 and low is None
        held = (grad and tr.policy.autocast is None) or low is not None or folded
        each = not held and dirs > 1  # two directions without grad: each its own projection, kept to the end
        proj = [tr.new((bsz * s, gates), tr.policy.autocast or x.dtype, False) for _ in range(1 if held else 2)
                if not each]
        if held and low is None and not folded:
            proj.append(tr.new(inp.shape, inp.dtype, False))
        elif not held:
            del proj[:]
        if folded and not grad:  # the per-step outputs, listed until they are stacked
            proj.append(tr.new((s, bsz, h * dirs), x.dtype, False))
        for d in range(dirs):
            # the first layer's reverse direction saves a flipped copy of x; deeper layers' two
            # directions share one saved input (measured: tests/cost/test_activations.py)
            before = tr.saved_bytes(("act", "cast"))
            src = inp if d == 0 or layer > 0 else tr.new(inp.shape, inp.dtype, inp.grad)
            if low and d == 0:
                src = tr.low(src)
            if each:  # its mm and the bias added out of place; the sum lives through the layer (measured)
                mm = tr.new((bsz * s, gates), x.dtype, False)
                proj.append(tr.new((bsz * s, gates), x.dtype, False))
                del mm
            if grad:
                tr.save(src)
                total = s * _RNN_PER_STEP[b.kind] + (1 if b.kind == "rnn" else 0)
                steps = total - _RNN_INIT[b.kind]  # the initial-state views are counted above
                if low:
                    tr.save(tr.new((steps - (s - 1), bsz, h), low, False), tr.new((s - 1, bsz, h), x.dtype, False))
                else:
                    tr.save(tr.new((steps, bsz, h), x.dtype, False))
            if low or dirs > 1:  # the per-step outputs are fp32 (not the low saved states), stacked at
                proj.append(tr.new((s, bsz, h), x.dtype, False))  # the end; two directions' then concatenated
            del src  # a low copy that is not saved (no_grad) is freed once its projection is made
            saved.append(tr.saved_bytes(("act", "cast")) - before + cast_saved[layer * dirs + d])
        inp = tr.new((bsz, s, h * dirs), x.dtype, grad)  # fp32 even under autocast (per-step states are)
        del proj
        if layer < layers - 1:
            inp = dropout_op(tr, inp, b.dropout)
    if b.trainable and tr.policy.grad:
        tr.steps[-1].summed = _time_loops(b, tr, bsz, s, saved)
    if b.output == "last":
        return tr.new((bsz, h * dirs), x.dtype, grad)  # cat of h_n: saves nothing
    return inp
