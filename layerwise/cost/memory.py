"""The memory of a training step or an inference, by phase: the cost reading of DESIGN.md's
"Training memory". Pure Python.

A steady-state step (the measure reading's step 2) holds the model states all along (weights,
master weights, optimizer state) and, in turn:
  forward    + every saved activation, the input batch, autocast's weight-copy cache, and at the
               loss the logits, their fp32 copy and the saved log-softmax (the forward's peak);
  backward   + the loss-gradient temporaries at the start (two (N, V) tensors next to the saved
               log-softmax), then leaf by leaf in reverse: saved tensors are freed once the leaf
               that first saved them has run its backward, parameter gradients appear (under
               autocast first in low precision), the gradients of the leaf's input and output pass
               through, a residual's gradient waits through its branch, and with checkpointing the
               region being back-propagated is recomputed (and freed leaf by leaf);
  optimizer  + gradients + optimizer.step()'s temporaries (cost/optimizers.py).
The forward's own peak (inside the model: a GRU's projections, eager attention's scores) comes
from the liveness of the symbolic tensors (act_trace.Liveness). The peak is the largest phase,
never the sum of everything. Model states come from cost/model_states.py and are sharded per
device by cost/parallel.py. Checked against the measure reading in tests/cost/test_memory.py and
bench/accuracy.py.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from layerwise.cost.act_trace import ActPolicy, Step, Trace, nbytes
from layerwise.cost.activations import input_tensor, run
from layerwise.cost.model_states import ModelStates, torch_model_states
from layerwise.cost.optimizers import LOOP_CARRY, shared_state_bytes, step_temporary_bytes
from layerwise.cost.precision import policy as precision_policy
from layerwise.spec.applies import check_applies
from layerwise.spec.errors import WorkloadError
from layerwise.spec.model import Model
from layerwise.workload import Workload

COMPONENTS = ("weights", "master_weights", "gradients", "optimizer_states", "activations", "temporaries",
              "kv_cache")


@dataclass(frozen=True)
class Components:
    weights: int = 0
    master_weights: int = 0
    gradients: int = 0
    optimizer_states: int = 0
    activations: int = 0
    temporaries: int = 0
    kv_cache: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Phase:
    name: str  # forward | backward | optimizer (the measure reading's phase names)
    where: str  # the moment inside the phase ("loss", "start", "blocks.3.attn", "step")
    components: Components
    op: str = ""  # the block type of that moment's step (the memory timeline names it)

    @property
    def total(self) -> int:
        return self.components.total


@dataclass(frozen=True)
class MemoryReport:
    """Peak tensor bytes of one step on one device, with the phase it occurs in and the breakdown
    at that moment. `device_overhead_bytes` (CUDA context, allocator cache) is reported apart."""

    model: str
    peak_bytes: int
    peak_phase: str
    peak_where: str
    components: Components
    phases: tuple[Phase, ...]
    device_overhead_bytes: int
    per_device: bool
    notes: tuple[str, ...] = ()
    timeline: tuple[Phase, ...] | None = None  # every step's moment in order (cost/timeline.py), if asked
    saved_by_path: tuple[tuple[str, int], ...] = ()  # with the timeline: bytes each leaf saved for backward
    cuda_allocator: object = None  # --device cuda: cost.cuda_alloc.AllocatorPeaks (named estimates)

    def to_json(self) -> dict:
        out = {"peak_bytes": self.peak_bytes, "peak_phase": self.peak_phase,
               "components": self.components.as_dict(), "device_overhead_bytes": self.device_overhead_bytes,
               "per_device": self.per_device}
        if self.cuda_allocator is not None:
            out["cuda_allocated_bytes"] = self.cuda_allocator.allocated
            out["cuda_reserved_bytes"] = self.cuda_allocator.reserved
        return out


# ---- the symbolic step ------------------------------------------------------------------------
def act_policy(workload: Workload, hf=None) -> ActPolicy:
    """`hf`: an act_hf.HFOps for --impl hf (cost/hf.py), None for our build."""
    pol = precision_policy(workload.precision)
    return ActPolicy(dtype=pol.weights, autocast=pol.activations if pol.autocast else None,
                     autocast_device=workload.device, dropout_mask_bytes=workload.dropout_mask_bytes,
                     attention=workload.attention, grad=workload.mode == "train",
                     checkpointing=workload.checkpointing, hf=hf)


@dataclass
class StepTrace:
    """The symbolic forward + loss of one micro-batch."""

    trace: Trace
    inputs: int  # the input batch and the targets (registered as inputs: always alive)
    loss_fwd: int  # at the log-softmax: logits + their fp32 copy (autocast) + the log-softmax
    loss_bwd: int  # at its backward: the two (N, V) gradients next to the saved log-softmax
    log_softmax: int = 0  # saved; part of loss_fwd too
    input_key: object = None  # the liveness keys of the input batch and of the model's output
    output_key: object = None
    output_dtype: str = "fp32"


def trace_step(model: Model, workload: Workload, hf=None, *, lumping: bool = False,
               prefill_cache: bool = False, decode: tuple[int, int] | None = None) -> StepTrace:
    """The symbolic forward + loss. `lumping`: equal copies (a repeat's layers) traced as three and
    a lump, exact for the phases and the peak (not for readers of every op's moment).
    prefill_cache: an inference forward that fills a KV cache (an encoder-decoder then projects
    its memory into the cross-attention caches and drops it before the decoder runs).
    decode: (start, total) a decode step at position `start` through a cache of `total` positions
    (cost/decode.py), every weight's autocast cast already made."""
    import layerwise.cost.act_composites  # noqa: F401  (registers the activation functions)
    import layerwise.cost.act_leaves  # noqa: F401
    import layerwise.cost.act_seq  # noqa: F401
    import layerwise.cost.act_seq2seq  # noqa: F401
    import layerwise.cost.act_mamba  # noqa: F401
    import layerwise.cost.act_mla  # noqa: F401

    tr = Trace(act_policy(workload, hf), lumping=lumping)
    tr.prefill_cache = prefill_cache or decode is not None
    tr.decode, tr.casts_cached = decode, decode is not None
    shape = model.input_shape(workload.batch, workload.seq, workload.image)
    model.body.out_shape(shape)  # every shape checked (a SpecError naming the block) before the trace
    x = input_tensor(tr, shape, tokens=model.input.kind == "tokens", grad=False)
    out = run(model.body, "", tr, x)
    if tr.steps:
        tr.liveness.mark()  # the last step of the forward has ended
    inputs = x.storage.nbytes
    keys = dict(input_key=x.storage.key, output_key=out.storage.key, output_dtype=out.dtype)
    if model.task == "none":
        return StepTrace(tr, inputs, 0, 0, **keys)
    if model.task == "regress":  # fp32 targets of the output's shape; MSE saves nothing of its own
        # (its backward reads the output and the targets, both alive) and its temporaries are
        # (B, n_targets) values: bytes per sample, left out
        return StepTrace(tr, inputs + nbytes(out.numel, "fp32"), 0, 0, **keys)
    rows, classes = out.numel // out.shape[-1], out.shape[-1]
    inputs += nbytes(rows, "int64")  # the targets
    ls_dtype = "fp32" if tr.policy.autocast else out.dtype  # log_softmax runs in fp32 under autocast
    ls = nbytes(rows * classes, ls_dtype)
    logits = 0 if id(out.storage) in tr.saved else out.storage.nbytes
    cast = ls if out.dtype != ls_dtype else 0
    tr.steps.append(Step("loss"))
    if tr.policy.grad:
        tr.save(tr.new((rows, classes), ls_dtype, False))  # the log-softmax, saved by its backward
    return StepTrace(tr, inputs, logits + cast + ls, 2 * ls, ls if tr.policy.grad else 0, **keys)


# ---- the phases ---------------------------------------------------------------------------------
def _param_bytes(tr: Trace, keys, counted: bool = True) -> int:
    """Bytes of the trainable parameters `keys` (a lumped key counts its copies unless not `counted`)."""
    return sum(nbytes(tr.params[k][0], tr.params[k][1]) * (tr.counts.get(k, 1) if counted else 1)
               for k in keys if k in tr.params and tr.params[k][2] and k not in tr.idle)


def _by_count(tr: Trace) -> dict[int, list[str]]:
    """Parameter keys by the copies each stands for (1 for a parameter traced for real)."""
    out: dict[int, list[str]] = {}
    for k in tr.params:
        out.setdefault(tr.counts.get(k, 1), []).append(k)
    return out


def _scaled(states: ModelStates, k: int) -> ModelStates:
    return ModelStates(*(getattr(states, f.name) * k for f in fields(states)))


def param_shapes_of(model: Model, tr: Trace, trainable: bool, keys=None) -> dict[str, tuple[int, ...]]:
    """The trainable (or frozen) parameters' real shapes (of `keys`, default all), keyed like
    named_parameters(): Adafactor factors >= 2-D tensors, and a for-loop step's temporaries follow
    the largest tensor. A lumped key takes the shape of the copy it stands for (Trace.origin)."""
    from layerwise.cost.param_shapes import param_shapes_at

    if tr.real_shapes is None:  # found once per trace, for every key (a lumped one: its origin's)
        tr.real_shapes = param_shapes_at(model.body, sorted({tr.origin.get(k, k) for k in tr.params}))
    keys = tr.params if keys is None else keys
    return {k: tr.real_shapes.get(tr.origin.get(k, k)) or tr.shapes[k] for k in keys if tr.params[k][2] == trainable}


def _states(model: Model, workload: Workload, tr: Trace) -> ModelStates:
    """Model states summed per group of equal copies (each state is a sum over parameter tensors)."""
    total = ModelStates()
    for count, keys in _by_count(tr).items():
        total = total + _scaled(_group_states(model, workload, tr, keys), count)
    once = shared_state_bytes(workload.optimizer, param_shapes_of(model, tr, True))  # Adam8bit's qmaps
    return replace(total, weights=total.weights + tr.buffers,  # + BatchNorm running stats
                   optimizer_states=total.optimizer_states + once)


def _group_states(model: Model, workload: Workload, tr: Trace, keys) -> ModelStates:
    idle = [k for k in keys if k in tr.idle]
    if idle:  # weights and optimizer state, no gradient in this step
        busy = _group_states(model, workload, tr, [k for k in keys if k not in tr.idle])
        return busy + replace(_group_states(model, workload, replace(tr, idle=set()), idle), gradients=0)
    params = {k: tr.params[k] for k in keys}
    trainable, frozen = param_shapes_of(model, tr, True, keys), param_shapes_of(model, tr, False, keys)
    states = torch_model_states(trainable, frozen, precision=workload.precision, optimizer=workload.optimizer)
    states = replace(states, optimizer_states=states.optimizer_states  # held once: added by _states
                     - (shared_state_bytes(workload.optimizer, trainable) if trainable else 0))
    if workload.quant != "none":  # QLoRA-style: frozen matrices stored quantized (with their scales)
        from layerwise.cost.inference import QuantConfig, weight_bytes

        dtype = precision_policy(workload.precision).weights
        frozen_shapes = {k: tr.shapes[k] for k, (_, _, t) in params.items() if not t}
        train_bytes = sum(nbytes(n, dtype) for n, _, t in params.values() if t)
        states = replace(states, weights=train_bytes + weight_bytes(frozen_shapes, QuantConfig(quant=workload.quant,
                                                                                             dtype=dtype)))
    return states


def _optimizer_temporaries(model: Model, workload: Workload, tr: Trace) -> int:
    """optimizer.step()'s temporaries: the loop implementation's (and adam-8bit's chunked step's)
    are per tensor (the largest counts, however many copies), foreach's are sums over tensors."""
    pol = precision_policy(workload.precision)
    if workload.optimizer == "adafactor" or (workload.impl == "loop" and workload.optimizer in LOOP_CARRY):
        # order-dependent (cost/optimizers.py): every tensor in order
        return _ordered_temporaries(model, workload, tr, pol.optimizer_states)
    per_tensor = workload.impl == "loop" or workload.optimizer == "adam-8bit"
    parts = []
    for count, keys in _by_count(tr).items():
        shapes = param_shapes_of(model, tr, True, [k for k in keys if k not in tr.idle])
        tmp = step_temporary_bytes(workload.optimizer, shapes, impl=workload.impl,
                                   dtype=pol.grads if workload.optimizer == "adam-8bit" else pol.optimizer_states,
                                   weight_decay=0.01 if workload.optimizer == "adamw" else 0.0)
        parts.append(tmp if per_tensor else tmp * count)
    return max(parts, default=0) if per_tensor else sum(parts)


def _ordered_temporaries(model: Model, workload: Workload, tr: Trace, dtype: str) -> int:
    """Step temporaries that depend on the tensors' order (Adafactor's; a for-loop step's that
    keeps the previous tensor's result), over the trainable tensors in named_parameters() order
    (the optimizer's): a lumped key once for the loop (its copies repeat the same neighbours),
    `count` times for foreach (its sums)."""
    shapes = param_shapes_of(model, tr, True, [k for k in tr.params if k not in tr.idle])
    times = (lambda k: 1) if workload.impl == "loop" else (lambda k: tr.counts.get(k, 1))
    return step_temporary_bytes(workload.optimizer, [s for k, s in shapes.items() for _ in range(times(k))],
                                impl=workload.impl, dtype=dtype,
                                weight_decay=0.01 if workload.optimizer == "adamw" else 0.0)


def _backward_phases(st: StepTrace, base: Components, grads_total: int, accum: bool,
                     shard=lambda n: n) -> list[Phase]:
    """Walk the steps in reverse: free what each step was first to save, add its gradients."""
    tr = st.trace
    first = {}
    for storage, step in tr.saved.values():
        if storage.kind in ("act", "cast"):
            first[step] = first.get(step, 0) + storage.nbytes
    live = sum(first.values())
    produced, grads = set(), grads_total if accum else 0
    out = [Phase("backward", "start", replace(base, activations=base.activations + live, gradients=grads,
                                              temporaries=st.loss_bwd))]
    region_at = {r[1]: r for r in tr.regions}  # entered (in reverse) at its last step
    freed_in_region = {}
    for r in tr.regions:
        for step, n in r[2].items():
            freed_in_region[step] = freed_in_region.get(step, 0) + n
    held = [0] * (len(tr.steps) + 1)  # residual gradients waiting, by step (a difference array)
    for first_, last_, n in tr.holds:
        held[first_] += n
        held[last_ + 1] -= n
    for i in range(1, len(held)):
        held[i] += held[i - 1]
    tied_w = _tied_waiting(tr, accum)
    recomputed = 0  # checkpointing: the region being back-propagated is recomputed, all at once
    for i in range(len(tr.steps) - 1, -1, -1):
        step = tr.steps[i]
        if step.lumped:  # equal copies: their gradients and freed tensors, no moment of their own
            for keys, copies in step.lumped:
                produced.update(keys)
                if not accum:
                    grads += shard(_param_bytes(tr, keys, counted=False)) * copies
            live -= first.get(i, 0)
            continue
        new = [k for k in step.grad_params if k not in produced]
        tied = [k for k in step.grad_params if k in produced]  # a second use: grad = grad + new
        produced.update(new)
        fresh = shard(_param_bytes(tr, [k for k in new if k not in tied_w.late]))  # ZeRO-2/3: each device its shard
        before = grads
        if not accum:
            grads += fresh
        g_in, g_out = step.io if step.io is not None else (step.big[0], step.big[1])
        # ZeRO-2/3: a waiting fp32 gradient under accumulation at shard size, as `acc` below; one that
        # autocast made whole, in either case (the planner, cut from this reading, does the same)
        carry = held[i] + shard(tied_w.sharded.get(i, 0)) + tied_w.whole.get(i, 0)
        # two moments: computing the gradients (grad_out, grad_in and the fresh parameter
        # gradients, low-precision ones under autocast) and attaching them (grad_out freed)
        tied_b = _param_bytes(tr, tied)  # tied: the new gradient, then old + new summed
        # (fresh fp32 gradients are born as the .grad itself: the tracker counts them as gradients)
        own = 0 if step.extra or accum else fresh
        # gradient accumulation: .grad exists, so each new gradient is a temporary until
        # AccumulateGrad adds it in place (torch/csrc/autograd/functions/accumulate_grad.h); under
        # autocast it is the fp32 cast of the low gradient, made after the node's saved tensors go
        acc = shard(_param_bytes(tr, new)) if accum else 0
        computing = (step.inner or g_in + g_out) + carry + step.extra + tied_b + (0 if step.extra else acc)
        if step.summed:  # an RNN: its fullest moment is inside a time loop, its input's gradient and
            own, in_loop, loop_freed = _in_time_loop(step.summed, accum, shard)  # not all of its own made
            computing = g_out + carry + tied_b + in_loop
        join = tied_w.joining.get(i, 0)  # a late tied gradient's sum: the .grad from its attach on
        attaching = g_in + carry + step.extra + 2 * tied_b + (acc if step.extra else 0) + tied_w.made.get(i, 0) - join
        # the step's own saved tensors are released when its node has run, before the attach
        acts = live
        if i in region_at:
            recomputed = sum(region_at[i][2].values())
            # the recomputation runs when the region's backward starts: its output's gradient
            # arrives and its forward runs again (its transients, the saved ones kept)
            peak, out_grad = tr.recompute_peaks.get(i, (recomputed, 0))
            out.append(Phase("backward", (step.path or "loss") + " (recompute)",
                             replace(base, activations=base.activations + live, gradients=before,
                                     temporaries=out_grad + carry + _trailing_holds(tr, region_at[i]) + peak),
                             step.op))
        # a checkpointed region's tensors that this step saved are freed with the others
        released = first.get(i, 0) + freed_in_region.get(i, 0)
        if before + own + computing - step.early >= grads + shard(join) + attaching - released:
            temp, shown = computing + recomputed, before + own
            if freed_in_region.get(i, 0):  # its saved tensors already freed at that moment: recomputed
                temp -= step.early  # ones (a checkpointed region's), else activations
            else:
                acts = live - (loop_freed if step.summed else step.early)
        else:
            temp, shown = attaching + recomputed - freed_in_region.get(i, 0), grads + shard(join)
            acts = live - first.get(i, 0)
        out.append(Phase("backward", step.path or "loss", replace(base, activations=base.activations + acts,
                                                                  gradients=shown, temporaries=temp),
                         step.op or ("cross_entropy" if step.path == "loss" else "")))
        live -= first.get(i, 0)
        recomputed -= freed_in_region.get(i, 0)
        grads += shard(join)  # a late tied gradient's sum, now the .grad (ZeRO-2/3: its shard)
    return out


def _in_time_loop(loops, accum: bool, shard) -> tuple[int, int, int]:
    """(gradients attached, temporaries, saved bytes freed) at an RNN step's fullest moment: a time
    loop's sums and their transient, the loops back-propagated before it (later layers) done and
    attached (with accumulation: added in place into the existing .grad)."""
    best, attached = (0, 0, 0), 0
    for grads, held, freed in reversed(loops):
        if attached + held - freed > best[0] + best[1] - best[2]:
            best = (attached, held, freed)
        attached += 0 if accum else shard(grads)
    return best


def _trailing_holds(tr: Trace, region) -> int:
    """Gradients that wait when a checkpointed region's recomputation starts. torch.utils.checkpoint
    recomputes when the first backward node of the region unpacks a saved tensor; the nodes that
    run before it save nothing (a residual add, a LoRA's add and scaling), but can leave new
    gradients waiting for the nodes after it: the holds that begin at or after the region's last
    saving step (a LoRA's scaled gradient through its base's matmul)."""
    first, last, freed = region
    trigger = max(freed, default=last)
    return sum(n for lo, hi, n in tr.holds if trigger <= lo and hi < last)


@dataclass(frozen=True)
class TiedWaiting:
    """Tied parameters' gradients waiting, by step (_tied_waiting)."""

    sharded: dict[int, int]  # fp32 ones under accumulation (ZeRO-2/3: at shard size, as each new one)
    whole: dict[int, int]  # autocast's (the planner keeps them whole too)
    late: set[str]  # keys whose gradient is not a .grad until its first use (no accumulation)
    joining: dict[int, int]  # bytes of those joining the gradients at a step (their sum)
    made: dict[int, int]  # bytes of those a step makes (its attach holds them as temporaries)


def _tied_waiting(tr: Trace, accum: bool) -> TiedWaiting:
    """The autograd engine sums a parameter's gradients from its several uses in the input buffer
    of its AccumulateGrad node, which runs once the last of them (its first use in the forward) is
    done; until then the first one computed (its last use) is a temporary. With accumulation
    always; without, where autocast made it (a cast of a low gradient): the sum is then out of place
    and the new tensor becomes the .grad (measured); in fp32 it is summed in place and the tracker
    counts the first one a gradient throughout."""
    users: dict[str, list[int]] = {}
    for i, step in enumerate(tr.steps):
        for k in step.grad_params:
            users.setdefault(k, []).append(i)
    out = TiedWaiting({}, {}, set(), {}, {})
    for k, steps in users.items():
        low = bool(tr.steps[steps[-1]].extra)
        if len(steps) < 2 or not (accum or low):
            continue
        n = _param_bytes(tr, [k])
        by_step = out.whole if low else out.sharded
        for i in range(steps[0], steps[-1]):  # from its last use's attach to its first use
            by_step[i] = by_step.get(i, 0) + n
        if not accum:
            out.late.add(k)
            out.joining[steps[0]] = out.joining.get(steps[0], 0) + n
            out.made[steps[-1]] = out.made.get(steps[-1], 0) + n
    return out


def training_memory(model: Model, workload: Workload = Workload(), *, timeline: bool = False,
                    cuda_allocator: bool = True, hf=None) -> MemoryReport:
    """The step's phases and peak; with --device cuda also the caching allocator's view (unless
    `cuda_allocator` is False: callers that only need the tensor bytes skip the replay). `hf`:
    transformers' ops (act_hf.HFOps) for --impl hf; cost/hf.py's hf_training_memory sets it with the
    spec carrying HF's dropouts."""
    if workload.mode != "train":
        raise WorkloadError("training_memory needs --mode train; use inference_memory for --mode infer")
    check_applies(model, workload)
    model = _with_lora(model, workload)
    if workload.checkpointing == "full" and first_repeat(model.body) is None:  # as the measure reading
        raise WorkloadError("--checkpointing full: the model has no repeated blocks (a `repeat`) to checkpoint")
    # lumped copies only when no reader wants every op's moment, and --impl hf traces every layer
    per_op = timeline or (workload.device == "cuda" and cuda_allocator)
    st = trace_step(model, workload, hf, lumping=not per_op and hf is None)
    tr = st.trace
    states = _device_states(_states(model, workload, tr), workload, _step_scalar_bytes(workload, tr))
    accum = workload.grad_accum > 1
    base = Components(weights=states.weights, master_weights=states.master_weights,
                      optimizer_states=states.optimizer_states, activations=st.inputs)
    saved = tr.saved_bytes(("act", "cast"))
    # autocast's cache of weight copies lives to the end of forward; under ZeRO-3/FSDP the gathered
    # parameters are views of a flat buffer, which autocast does not cache (only the saved ones stay)
    unsaved_casts = 0 if workload.zero == 3 else sum(s.nbytes for s in tr.casts.values() if id(s) not in tr.saved)
    held = 0
    if hf is not None:  # --impl hf: the KV cache and last hidden state transformers keeps to the loss
        from layerwise.cost.act_hf import held_bytes

        held = held_bytes(tr)
    fwd = replace(base, gradients=states.gradients if accum else 0,  # the log-softmax: in loss_fwd
                  activations=st.inputs + saved - st.log_softmax + unsaved_casts + st.loss_fwd + held)
    targets = st.inputs - _input_bytes(tr)
    all_unsaved = sum(s.nbytes for s in tr.casts.values() if id(s) not in tr.saved)
    inner = replace(base, gradients=fwd.gradients,  # the forward's own peak, inside the model
                    activations=tr.liveness.peak - all_unsaved + unsaved_casts + targets)
    phases = [Phase("forward", tr.liveness.where, inner), Phase("forward", "loss", fwd)]
    full_grads = _param_bytes(tr, tr.params)
    shard = (lambda n: -(-n * states.gradients // full_grads)) if full_grads else (lambda n: n)
    phases += _backward_phases(st, base, states.gradients, accum, shard)
    opt_tmp = _optimizer_temporaries(model, workload, tr)
    phases.append(Phase("optimizer", "step", replace(base, gradients=states.gradients, temporaries=opt_tmp),
                        workload.optimizer))
    line = None
    if timeline:
        from layerwise.cost.timeline import training_moments

        line, _ = _parallel_activations(model, workload, training_moments(
            tr, base, fwd, phases, states.gradients, forward_extra=targets + unsaved_casts - all_unsaved))
    phases, notes = _parallel_activations(model, workload, phases)
    report = _report(model, workload, phases, notes)
    if line is not None:
        from layerwise.cost.timeline import saved_by_path

        report = replace(report, timeline=tuple(line), saved_by_path=saved_by_path(tr))
    if workload.device != "cuda" or not cuda_allocator:
        return report
    if report.per_device:
        return replace(report, notes=report.notes + ("CUDA caching allocator view: single-device set-ups only",))
    from layerwise.cost.cuda_events import training_allocator_peaks

    optimizer = workload.optimizer if workload.optimizer != "adam-8bit" else "adam"
    return replace(report, cuda_allocator=training_allocator_peaks(st, workload, optimizer, opt_tmp))


def _parallel_activations(model: Model, workload: Workload, phases: list[Phase]):
    """Per-device activations under tp/pp and ZeRO-3's gathered layer (estimates, named in notes):
    tp divides them (Megatron shards attention/MLP activations; norms and residuals are in fact
    replicated without sequence parallelism, so this is a lower bound there); the first pipeline
    stage holds its share of the layers for min(pp, grad_accum) micro-batches in flight (1F1B);
    ZeRO-3 gathers one repeated block's full weights at a time."""
    from layerwise.cost.parallel import inflight_microbatches, layers_per_stage

    notes, scale_num, scale_den = [], 1, workload.tp
    layers = _repeat_layers(model.body)
    if workload.pp > 1 and layers:
        stage0 = layers_per_stage(layers, workload.pp)[0]
        scale_num = stage0 * inflight_microbatches(workload.pp, 0, workload.grad_accum)
        scale_den *= layers
        notes.append(f"pipeline stage 0: {stage0}/{layers} layers, "
                     f"{inflight_microbatches(workload.pp, 0, workload.grad_accum)} micro-batches in flight (1F1B)")
    if workload.tp > 1:
        notes.append(f"activations divided by tp={workload.tp} (norms/residuals are replicated without "
                     f"sequence parallelism: an underestimate there)")
    gathered = 0
    if workload.zero == 3 and workload.dp > 1:
        gathered = -(-_repeat_block_bytes(model, workload) // workload.tp)
        notes.append("ZeRO-3: one repeated block's full weights gathered at a time (temporaries)")
    if scale_num == scale_den and not gathered:
        return phases, notes
    out = []
    for ph in phases:
        c = ph.components
        act = c.activations * scale_num // scale_den
        tmp = c.temporaries * scale_num // scale_den + (gathered if ph.name != "optimizer" else 0)
        out.append(replace(ph, components=replace(c, activations=act, temporaries=tmp)))
    return out, notes


def first_repeat(block):
    if block.type_name == "repeat":
        return block
    for _, child in block.child_groups():
        found = first_repeat(child)
        if found is not None:
            return found
    return None


def _repeat_layers(body) -> int:
    rep = first_repeat(body)
    return rep.n_layers if rep is not None else 0


def _repeat_block_bytes(model: Model, workload: Workload) -> int:
    from layerwise.cost.precision import nbytes as packed

    rep = first_repeat(model.body)
    return packed(rep.block.params().total, precision_policy(workload.precision).weights) if rep else 0


def _input_bytes(tr: Trace) -> int:
    return tr.input_bytes


def _report(model: Model, workload: Workload, phases: list[Phase], notes=()) -> MemoryReport:
    from layerwise.cost.overhead import device_overhead_bytes

    peak = max(phases, key=lambda p: p.total)
    overhead = device_overhead_bytes(peak.total, device=workload.device).total
    per_device = workload.dp * workload.tp * workload.pp > 1 or workload.zero > 0
    return MemoryReport(model.name, peak.total, peak.name, peak.where, peak.components, tuple(phases), overhead,
                        per_device, tuple(notes))


def _with_lora(model: Model, workload: Workload) -> Model:
    if not workload.lora_rank:
        return model
    from layerwise.spec.lora import apply_lora

    return apply_lora(model, workload.lora_rank)


def _step_scalar_bytes(workload: Workload, tr: Trace) -> int:
    """The optimizer's scalar `step` tensors (one per trainable parameter tensor): under FSDP (ZeRO-3)
    every rank steps its shard of every parameter and keeps them all (tests/distributed)."""
    from layerwise.cost.optimizers import state_bytes

    return sum(state_bytes(workload.optimizer, [(tr.params[k][0],) for k in keys if tr.params[k][2]]).step * count
               for count, keys in _by_count(tr).items())


def _device_states(states: ModelStates, workload: Workload, step_scalars: int = 0) -> ModelStates:
    """ZeRO shards over dp; tp and pp divide the parameters (an even split: an estimate)."""
    if workload.dp * workload.tp * workload.pp == 1 and workload.zero == 0:
        return states
    from layerwise.cost.parallel import Parallel, shard_model_states

    split = workload.tp * workload.pp
    if split > 1:
        states = ModelStates(*(-(-getattr(states, f.name) // split) for f in fields(states)))
    whole = step_scalars if workload.zero == 3 else 0
    return shard_model_states(states, Parallel(dp=workload.dp, tp=1, pp=1, zero=workload.zero),
                              replicated_optimizer_bytes=whole).gpu


# ---- inference -----------------------------------------------------------------------------------
def _kv_config(model: Model, dtype: str):
    from layerwise.cost.kv_cache import KVConfig

    body = model.body
    block = getattr(body, "block", None)
    attn = getattr(block, "attn", None)
    if attn is None or not getattr(attn, "causal", False):
        return None
    if attn.type_name == "mla":  # its compressed cache: kv_rank + d_rope per token and layer
        return KVConfig(n_layers=body.n_layers, n_kv_heads=1, d_head=attn.cache_width, dtype=dtype, latent=True)
    return KVConfig(n_layers=body.n_layers, n_kv_heads=attn.kv_heads, d_head=attn.head_dim, dtype=dtype,
                    sliding_window=attn.sliding_window)


def kv_groups(model: Model, dtype: str) -> tuple:
    """The decoder's caches by kind of layer (cost/kv_cache.kv_configs): one group, or Gemma 2/3's
    global layers (every position) and sliding-window layers (the window: our build's rolling
    buffer, build/lm.py init_kv_cache), or () for a model without a KV cache."""
    from layerwise.cost.kv_cache import kv_configs

    if _kv_config(model, dtype) is None:
        return ()
    return kv_configs(model.body, dtype)


def has_kv_cache(model: Model) -> bool:
    """A causal decoder whose built module decodes with a KV cache (layerwise.build.lm), an
    encoder-decoder (layerwise.build.seq2seq: self- and cross-attention caches), or a Mamba LM (its
    states in the cache's role)."""
    return (_kv_config(model, "fp32") is not None or model.body.type_name == "encoder_decoder"
            or mamba_mixer(model) is not None)


def mamba_mixer(model: Model):
    """The mixer spec of a Mamba LM's repeated block, else None."""
    block = getattr(model.body, "block", None)
    return block.mixer if getattr(block, "type_name", "") == "mamba_block" else None


def state_bytes(model: Model, batch: int, dtype: str) -> tuple[int, int]:
    """A Mamba LM's decode state (build/mamba.py init_state), in the KV cache's role: per layer the
    conv state (B, d_inner, d_conv) and the scan state (B, d_inner, d_state), whatever the length
    (HF MambaCache's conv_states and ssm_states); (bytes, tensors)."""
    mixer, n = mamba_mixer(model), model.body.n_layers
    return nbytes(batch * n * mixer.d_inner * (mixer.d_conv + mixer.d_state), dtype), 2 * n


def inference_memory(model: Model, workload: Workload = Workload(mode="infer"), *, timeline: bool = False) -> MemoryReport:
    """Weights by storage dtype (quantized matrices with their scales), the KV cache for prompt +
    new tokens, and the prefill's transient activation peak."""
    from layerwise.cost.inference import QuantConfig, weight_bytes
    from layerwise.cost.kv_cache import kv_cache_bytes

    workload = replace(workload, mode="infer")
    check_applies(model, workload)
    pol = precision_policy(workload.precision)
    st = trace_step(replace(model, task="none"), workload, lumping=not timeline and workload.device != "cuda",
                    prefill_cache=workload.new_tokens > 0)
    tr = st.trace
    dtype = pol.weights
    q = QuantConfig(quant=workload.quant, dtype=dtype)
    weights = sum(weight_bytes({k: tr.shapes[k] for k in keys}, q) * count for count, keys in _by_count(tr).items())
    weights += tr.buffers
    kv = n_cache = 0
    cfg = _kv_config(model, workload.kv_dtype or pol.activations)
    if cfg is None and workload.new_tokens and not has_kv_cache(model):
        raise WorkloadError(f"--new-tokens: {model.name} has no KV-cache decoding (a causal decoder LM has)")
    if workload.new_tokens:
        seq = model.input_shape(workload.batch, workload.seq, workload.image)[1]
        if cfg is not None:
            groups = kv_groups(model, cfg.dtype)
            kv = sum(kv_cache_bytes(g, batch=workload.batch, prompt=seq, new_tokens=workload.new_tokens)
                     for g in groups)
            n_cache = 2 * sum(g.n_layers for g in groups)
        elif mamba_mixer(model) is not None:
            kv, n_cache = state_bytes(model, workload.batch, workload.kv_dtype or pol.activations)
        else:
            from layerwise.cost.kv_cache import seq2seq_kv_bytes

            kv, n_cache = seq2seq_kv_bytes(model.body, batch=workload.batch, prompt=seq,
                                           new_tokens=workload.new_tokens, dtype=workload.kv_dtype or pol.activations)
    live = tr.liveness  # the forward's transient peak (the input batch included)
    split = workload.tp * workload.pp
    comps = Components(weights=-(-weights // split), activations=live.peak, kv_cache=-(-kv // workload.tp))
    phases = [Phase("forward", live.where, comps)]
    if workload.new_tokens and cfg is not None:  # the decode steps (cost/decode.py)
        from layerwise.cost.decode import decode_peak

        dec = decode_peak(model, workload, st)
        phases.append(Phase("forward", dec.where, replace(comps, activations=dec.activations)))
    report = _report(model, workload, phases)
    if timeline:
        from layerwise.cost.timeline import inference_moments

        moments = inference_moments(tr, replace(comps, activations=tr.input_bytes))
        # the decode steps' highest moment after the prefill's (cost/decode.py traces no other)
        report = replace(report, timeline=tuple(moments[:-1] + phases[1:] + moments[-1:]))
    if workload.device != "cuda" or report.per_device or workload.quant != "none":
        return report
    from layerwise.cost.cuda_events import inference_allocator_peaks

    return replace(report, cuda_allocator=inference_allocator_peaks(st, kv, n_cache))
