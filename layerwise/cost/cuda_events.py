"""The allocation sequence of one training step (or inference) in the cost reading, for the CUDA
caching-allocator replay (cost/cuda_alloc.py): "allocated" and "reserved" as named estimates.

The allocator's numbers depend on the individual tensors, not on byte totals: every storage is
rounded up to 512 B, and which segment a tensor lands in depends on what was freed before it. So
the step is written as (key, nbytes) / (key, 0) events, in the order the measure reading's tensors
are born and die (measure/step.py):
  persistent  each parameter, the buffers, each parameter's optimizer state tensors and `step`
              scalar, earlier micro-batches' gradients (grad_accum > 1), the input batch, targets;
  forward     the symbolic forward's own allocations and frees (act_trace.Liveness: every
              activation, autocast copy and transient, freed when its last reference dies);
  loss        the fp32 copy of the logits (autocast), the saved log-softmax, the loss scalar, the
              autocast cache released, the logits freed if nothing saved them;
  backward    steps in reverse (memory._backward_phases' walk): the gradient seeds of the loss, then
              per step the fresh parameter gradients (one tensor each; the low-precision ones
              first under autocast), the gradient of its input, the gradient of its output freed,
              its saved tensors freed, a residual's gradient held through its branch, a
              checkpointed region's tensors recomputed on entry and freed step by step;
  optimizer   step()'s temporaries: per-tensor scratch (loop) or full lists (foreach), freed.
The gradients outlive the step (the next zero_grad frees them). Pure Python.
"""
from __future__ import annotations

from layerwise.cost.act_trace import nbytes
from layerwise.cost.cuda_alloc import AllocatorPeaks, steady_state_peaks
from layerwise.cost.optimizers import STEP_BYTES, WITH_STEP, adafactor_state_elements, state_bytes
from layerwise.cost.precision import policy as precision_policy

# optimizer state tensors per parameter tensor (torch.optim; lion-pytorch): Adam's exp_avg and
# exp_avg_sq, a momentum buffer, Adagrad's sum, RMSprop's square_avg, Lion's exp_avg
_MOMENTS = {"sgd": 0, "sgd-momentum": 1, "adagrad": 1, "rmsprop": 1, "adam": 2, "adamw": 2, "lion": 1,
            "adam-8bit": 2}


class _Seq:
    def __init__(self):
        self.events: list[tuple[object, int]] = []
        self._n = 0

    def alloc(self, nbytes: int, tag: str = "t") -> object:
        self._n += 1
        key = (tag, self._n)
        self.events.append((key, nbytes))
        return key

    def free(self, key) -> None:
        if key is not None:
            self.events.append((key, 0))


def _optimizer_tensors(optimizer: str, shape: tuple[int, ...], dtype: str) -> list[int]:
    """Bytes of each state tensor the optimizer keeps for one parameter (its `step` scalar apart)."""
    if optimizer == "adafactor":
        if len(shape) > 1:  # row_var (..., rows, 1) and col_var (..., 1, cols)
            rows, cols = shape[-2], shape[-1]
            lead = adafactor_state_elements(shape) // (rows + cols) if rows + cols else 0
            return [nbytes(lead * rows, dtype), nbytes(lead * cols, dtype)]
        return [nbytes(adafactor_state_elements(shape), dtype)]
    k = _MOMENTS[optimizer]
    if not k:
        return []
    total = state_bytes(optimizer, [shape], dtype=dtype).state
    return [total // k] * k


def persistent_events(st, workload, optimizer: str) -> list[tuple[object, int]]:
    """In the measure reading's registration order: parameters, buffers, earlier micro-batches'
    gradients, master weights, then per parameter its optimizer state as torch creates it (the
    `step` scalar first, then the moments), the input batch and the targets."""
    tr, pol = st.trace, precision_policy(workload.precision)
    seq = _Seq()
    for numel, dtype, _ in tr.params.values():
        seq.alloc(nbytes(numel, dtype), "w")
    if tr.buffers:
        seq.alloc(tr.buffers, "buf")
    trainable = [(k, numel) for k, (numel, _, t) in tr.params.items() if t]
    if workload.grad_accum > 1:
        for _, numel in trainable:
            seq.alloc(nbytes(numel, pol.grads), "grad")
    if pol.master:
        for _, numel in trainable:
            seq.alloc(nbytes(numel, pol.master), "master")
    opt_dtype = pol.master or pol.optimizer_states
    for key, _ in trainable:
        if optimizer in WITH_STEP:
            seq.alloc(STEP_BYTES, "opt")
        for n in _optimizer_tensors(optimizer, tr.shapes[key], opt_dtype):
            seq.alloc(n, "opt")
    seq.alloc(tr.input_bytes, "input")
    seq.alloc(st.inputs - tr.input_bytes, "targets")
    return seq.events


def forward_events(st, seq: _Seq, skip=()) -> None:
    """The liveness log without the input (persistent), the output's free (after the loss) and
    the `skip` keys (the saved log-softmax, re-placed by loss_events)."""
    for key, n in st.trace.liveness.events:
        if key != st.input_key and key not in skip and not (key == st.output_key and n == 0):
            seq.events.append((key, n))


def loss_events(st, seq: _Seq, ls_key, ls_bytes: int, cast_bytes: int) -> None:
    """cross_entropy under the tracker: the fp32 copy (autocast), the saved log-softmax, the loss
    and nll's total_weight scalars; then autocast's cache is cleared and the logits die."""
    tr = st.trace
    cast = seq.alloc(cast_bytes) if cast_bytes else None
    seq.events.append((ls_key, ls_bytes))
    seq.free(cast)
    seq.alloc(4)
    seq.alloc(4)
    _free_unsaved_casts(tr, seq)
    if not any(s.key == st.output_key for s, _ in tr.saved.values()):
        seq.events.append((st.output_key, 0))


def _free_unsaved_casts(tr, seq: _Seq) -> None:
    """autocast's weight-copy cache is cleared when the autocast region ends (the saved copies live on)."""
    for s in tr.casts.values():
        if id(s) not in tr.saved:
            seq.free(s.key)


def backward_events(st, seq: _Seq, workload, ls_key, ls_bytes: int, out_bytes: int) -> None:
    tr = st.trace
    accum = workload.grad_accum > 1
    first: dict[int, list] = {}
    for storage, step in tr.saved.values():
        if storage.kind in ("act", "cast"):
            first.setdefault(step, []).append(storage.key)
    current = None
    if ls_key is not None:  # the loss's seeds: d(nll)/d(log-softmax), then d/d(logits)
        g1 = seq.alloc(ls_bytes)
        current = seq.alloc(ls_bytes)
        seq.free(g1)
        seq.free(ls_key)
        if out_bytes != ls_bytes:  # autocast: the gradient cast back to the logits' dtype
            cast, current = current, seq.alloc(out_bytes)
            seq.free(cast)
    held: dict[int, list] = {}
    for first_step, last_step, n in tr.holds:
        held.setdefault(last_step, []).append((first_step, n))
    releasing: dict[int, list] = {}
    regions = {r[0]: r for r in tr.recompute_logs}
    recomputed: dict[int, list] = {}
    grads: dict[str, object] = {}  # parameter key -> its gradient's key
    for i in range(len(tr.steps) - 1, -1, -1):
        step = tr.steps[i]
        if i in regions:  # a checkpointed region: its forward runs again
            _recompute(tr, seq, regions[i], recomputed)
        for first_step, n in held.get(i, ()):
            releasing.setdefault(first_step, []).append(seq.alloc(n))
        new = [k for k in step.grad_params if k not in grads]
        tied = [k for k in step.grad_params if k in grads]  # a second use: grad = grad + new
        # computing: (the low-precision weight gradients), the input's gradient, fresh gradients
        extra = seq.alloc(step.extra) if step.extra else None
        g_in, _ = step.io if step.io is not None else (step.big[0], step.big[1])
        if ls_key is not None and i == len(tr.steps) - 1:
            g_in = 0  # the loss: its gradients are the seeds above
        grad_in = seq.alloc(g_in) if g_in else None
        if extra is None:
            _fresh_grads(tr, seq, new, grads, accum)
        partial = {k: seq.alloc(_param_nbytes(tr, k)) for k in tied}
        # attaching: the output's gradient is freed, fp32 gradients cast from the low ones, sums
        if grad_in is not None:
            seq.free(current)
            current = grad_in
        if extra is not None:
            _fresh_grads(tr, seq, new, grads, accum)
        for k, key in partial.items():
            total = seq.alloc(_param_nbytes(tr, k), "grad")
            seq.free(key)
            seq.free(grads[k])
            grads[k] = total
        seq.free(extra)
        for key in first.get(i, ()):
            seq.free(key)
        for key in recomputed.pop(i, ()):
            seq.free(key)
        for key in releasing.pop(i, ()):
            seq.free(key)
    seq.free(current)


def _recompute(tr, seq: _Seq, log, recomputed: dict) -> None:
    """torch.utils.checkpoint's recomputation: the region's forward events again, in order; what
    its backward needs stays (freed after the step that saved it), the rest dies as it did."""
    _, start, end, keep = log
    live = {}
    for key, n in tr.liveness.events[start:end]:
        if n:
            live[key] = seq.alloc(n, "re")
        elif key in live and key not in keep:
            seq.free(live.pop(key))
    for key, new in live.items():
        if key in keep:
            recomputed.setdefault(keep[key], []).append(new)
        else:  # the recomputed output and other results nothing saved
            seq.free(new)


def _param_nbytes(tr, key: str) -> int:
    numel, dtype, _ = tr.params[key]
    return nbytes(numel, dtype)


def _fresh_grads(tr, seq: _Seq, keys, grads: dict, accum: bool) -> None:
    """A parameter's first gradient becomes its .grad (accumulation: added in place, no new one)."""
    for k in keys:
        grads[k] = None if accum else seq.alloc(_param_nbytes(tr, k), "grad")


def optimizer_events(st, seq: _Seq, temporaries: int, impl: str, dtype: str) -> None:
    """step()'s temporaries: `temporaries` bytes as whole copies in the optimizer's dtype, of every
    trainable tensor (foreach: one tensor per parameter per copy) or of the largest one (loop: the
    per-tensor scratch, e.g. AdamW's sqrt and quotient, two tensors at once)."""
    if not temporaries:
        return
    numels = [numel for numel, _, t in st.trace.params.values() if t]
    if impl == "foreach":
        copy = [nbytes(n, dtype) for n in numels]
    else:
        copy = [nbytes(max(numels, default=0), dtype)]
    full = sum(copy)
    keys = []
    for _ in range(temporaries // full if full else 0):
        keys += [seq.alloc(n) for n in copy]
    if full and temporaries % full or not full:
        keys.append(seq.alloc(temporaries % full if full else temporaries))
    for key in keys:
        seq.free(key)


def training_allocator_peaks(st, workload, optimizer: str, opt_temporaries: int) -> AllocatorPeaks:
    tr = st.trace
    seq = _Seq()
    ls_key = ls_bytes = out_bytes = None
    if st.log_softmax:  # the storage the "loss" step saved
        loss_step = len(tr.steps) - 1
        ls_key = next(s.key for s, step in tr.saved.values() if step == loss_step)
        ls_bytes = st.log_softmax
    forward_events(st, seq, skip=(ls_key,))
    if ls_key is not None:
        cast = ls_bytes if st.output_dtype != ("fp32" if tr.policy.autocast else st.output_dtype) else 0
        loss_events(st, seq, ls_key, ls_bytes, cast)
        out_bytes = ls_bytes * nbytes(1, st.output_dtype) // nbytes(1, "fp32") if cast else ls_bytes
    else:
        _free_unsaved_casts(tr, seq)
    backward_events(st, seq, workload, ls_key, ls_bytes, out_bytes)
    optimizer_events(st, seq, opt_temporaries, workload.impl, precision_policy(workload.precision).optimizer_states)
    return steady_state_peaks(persistent_events(st, workload, optimizer), seq.events)


def inference_allocator_peaks(st, kv_cache_bytes: int, kv_tensors: int) -> AllocatorPeaks:
    """Weights and buffers, the KV cache (one tensor per layer for K and for V), the input, then
    the prefill's own allocations and frees."""
    tr = st.trace
    seq = _Seq()
    for numel, dtype, _ in tr.params.values():
        seq.alloc(nbytes(numel, dtype), "w")
    if tr.buffers:
        seq.alloc(tr.buffers, "buf")
    for _ in range(kv_tensors):
        seq.alloc(kv_cache_bytes // kv_tensors, "kv")
    seq.alloc(tr.input_bytes, "input")
    step = _Seq()
    forward_events(st, step)
    step.events.append((st.output_key, 0))
    return steady_state_peaks(seq.events, step.events)
