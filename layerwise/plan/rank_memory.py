"""Per-rank memory of `train-parallel`'s layouts on PyTorch's own engines (train/parallel.py),
read off the memory model (cost/memory.py) run on what one rank holds.

Tensor parallelism (torch.distributed.tensor.parallel, Megatron's split): a rank's transformer
block is the block with n_heads / tp query heads, n_kv_heads / tp key-value heads (d_head kept)
and d_ff / tp hidden units; its norms and residual stream stay whole (replicated). The embedding is
row-parallel over the vocabulary and the head column-parallel with a replicated (all-gathered)
output, so a rank keeps vocab / tp rows of each as model states while the logits and the loss see
the whole vocabulary. The rank's step is therefore read as two runs of the memory model, phase by
phase: the model states (weights, gradients, optimizer states) of the narrowed model with vocab /
tp, and the activations and temporaries of the narrowed model with the whole vocabulary, plus
one term of the engine's own: the row-parallel embedding's output exists three times through the
step (the rank's masked lookup, the all-reduce's output and its autograd wrapper, each (B, S,
d_model) in the weights' dtype), two more than a single process keeps (measured with PyTorch 2.13's
functional collectives; the row-parallel projections inside the blocks keep no such copies).

Pure Python (no torch). tests/distributed/test_parallel_training.py measures each rank's peak
(the live-storage tracker on the rank's local tensors) against this.
"""
from __future__ import annotations

from dataclasses import replace

from layerwise.cost.memory import training_memory
from layerwise.cost.precision import nbytes, policy
from layerwise.spec.errors import WorkloadError
from layerwise.spec.model import Model
from layerwise.workload import Workload

STATES = ("weights", "master_weights", "gradients", "optimizer_states")
WORK = ("activations", "temporaries", "kv_cache")


def narrow_block(block, tp: int):
    """One tensor-parallel rank's transformer block: its heads and FFN hidden units split by tp
    (the projections keep their other fields: trainable, init)."""
    attn, ffn = block.attn, block.ffn
    for name, value in (("n_heads", attn.n_heads), ("n_kv_heads", attn.kv_heads), ("d_ff", getattr(ffn, "d_ff", 0))):
        if not value or value % tp:
            raise WorkloadError(f"--tp {tp} does not divide {name} = {value}")
    q, kv = attn.n_heads // tp * attn.head_dim, attn.kv_heads // tp * attn.head_dim
    attn = replace(attn, n_heads=attn.n_heads // tp, n_kv_heads=attn.kv_heads // tp, d_head=attn.head_dim,
                   q_proj=_linear(attn.q_proj, d_out=q), k_proj=_linear(attn.k_proj, d_out=kv),
                   v_proj=_linear(attn.v_proj, d_out=kv), o_proj=_linear(attn.o_proj, d_in=q))
    d_ff = ffn.d_ff // tp
    ffn = replace(ffn, d_ff=d_ff, up_proj=_linear(ffn.up_proj, d_out=d_ff), down_proj=_linear(ffn.down_proj, d_in=d_ff),
                  gate_proj=_linear(ffn.gate_proj, d_out=d_ff) if ffn.gate_proj is not None else None)
    return replace(block, attn=attn, ffn=ffn)


def _linear(proj, **dims):
    if proj.type_name != "linear":
        raise WorkloadError(f"tensor parallelism splits plain linear projections, not {proj.type_name}")
    return replace(proj, **dims)


def tp_rank_model(model: Model, tp: int, vocab_size: int) -> Model:
    body = model.body
    return replace(model, body=replace(body, block=narrow_block(body.block, tp), vocab_size=vocab_size))


SEQUENCE_PARALLEL_NORMS = ("attn_norm", "ffn_norm", "final_norm")  # train/parallel.py's SequenceParallel plan


def tp_rank_peak_bytes(model: Model, workload: Workload, tp: int, sequence_parallel: bool = False) -> int:
    """Peak bytes of one tensor-parallel rank's training step. With sequence parallelism the norms
    run on (B, S / tp, d_model) shards, so what each saves for backward is divided by tp (the
    projections after them save the all-gathered input, as without it), and so are the
    embedding's reduce-scattered output copies."""
    if tp == 1:
        return training_memory(model, workload, cuda_allocator=False).peak_bytes
    vocab = model.body.vocab_size
    if vocab % tp:
        raise WorkloadError(f"--tp {tp} does not divide vocab_size = {vocab}")
    states = training_memory(tp_rank_model(model, tp, vocab // tp), workload, timeline=True, cuda_allocator=False)
    work = training_memory(tp_rank_model(model, tp, vocab), workload, timeline=True, cuda_allocator=False)
    if [(p.name, p.where) for p in states.timeline] != [(p.name, p.where) for p in work.timeline]:
        raise AssertionError("the two readings of a tensor-parallel rank must walk the same steps")
    b, seq = model.input_shape(workload.batch, workload.seq, None)
    embed_copies = 2 * b * seq * model.body.d_model * nbytes(1, policy(workload.precision).weights)
    norms = _saved_alive(work, SEQUENCE_PARALLEL_NORMS) if sequence_parallel else [0] * len(work.timeline)
    shard = 1 / tp if sequence_parallel else 1
    return int(max(sum(getattr(s.components, f) for f in STATES) + sum(getattr(w.components, f) for f in WORK)
                   + (embed_copies * shard if s.name != "optimizer" else 0) - n * (1 - 1 / tp)
                   for s, w, n in zip(states.timeline, work.timeline, norms)))


def _saved_alive(report, leaves: tuple[str, ...]) -> list[int]:
    """At each timeline moment, the bytes saved for backward by the leaves named `leaves` that are
    alive then: from the leaf's forward moment to its backward moment."""
    saved = {p: b for p, b in report.saved_by_path if p.rsplit(".", 1)[-1] in leaves}
    alive, out = 0, []
    for m in report.timeline:
        if m.where in saved and m.name == "forward":
            alive += saved[m.where]
        out.append(alive)
        if m.where in saved and m.name == "backward":
            alive -= saved[m.where]
    return out


# ---- pipeline parallelism -------------------------------------------------------------------------
# torch.distributed.pipelining, as train/parallel.py runs it: stage s of p holds contiguous layers
# (the embedding on the first, final norm, head and loss on the last). Its step is read off the
# memory model's timeline of the whole model at one micro-batch, cut at the stage's layers:
#   A  the activations one micro-batch leaves on the stage after its forward (the timeline's
#      working bytes at the end of the stage's forward, less those of the stages before it);
#   F  the working bytes at the peak of one forward, on the same footing;
#   B  the peak of the stage's first backward (its working bytes plus the gradients it has made);
#   Bn the peak of a later backward: the gradients exist, so each parameter's new gradient is a
#      temporary of its size until AccumulateGrad adds it in place;
#   G  the stage's gradients (fp32: as many bytes as its weights).
# The schedule then runs on the stage in PyTorch's order: 1F1B warms up with min(m, p - s)
# forwards and alternates backward and forward (Schedule1F1B); GPipe runs all forwards, then all
# backwards. A stage after the first also keeps each in-flight micro-batch's received input (it
# needs its gradient), and every stage keeps the schedule's receive buffers for the whole batch
# ((B, S, d_model): activations on the last stage, gradients on the first) from step to step.
# Model states (weights, optimizer states) are the whole model's in proportion to the stage's
# gradient bytes.


def _stage_of(where: str, bounds: list[range], p: int) -> int:
    head = where.split(".")[0]
    if head in ("embed", "pos", "drop"):
        return 0
    if head == "blocks":
        i = int(where.split(".")[1])
        return next(s for s, r in enumerate(bounds) if i in r)
    return p - 1  # final norm, head, loss and the backward's start


def _work(moment) -> int:
    return moment.components.activations + moment.components.temporaries


def _stage_terms(model: Model, workload: Workload, pp: int) -> tuple[list[dict], object]:
    from layerwise.cost.parallel import layers_per_stage

    report = training_memory(model, workload, timeline=True, cuda_allocator=False)
    sizes, bounds, start = layers_per_stage(model.body.n_layers, pp), [], 0
    for k in sizes:
        bounds.append(range(start, start + k))
        start += k
    fwd = [m for m in report.timeline if m.name == "forward" and m.where not in ("start", "end")]
    bwd = [m for m in report.timeline if m.name == "backward" and m.where != "end"]
    ends = [_work([m for m in fwd if _stage_of(m.where, bounds, pp) == s][-1]) for s in range(pp)]
    terms = []
    for s in range(pp):
        before = ends[s - 1] if s else 0
        own_b = [i for i, m in enumerate(bwd) if _stage_of(m.where, bounds, pp) == s]
        later = bwd[own_b[0] - 1].components.gradients if own_b[0] else 0
        grads = lambda i: bwd[i].components.gradients  # noqa: E731
        terms.append(dict(
            A=ends[s] - before,
            F=max(_work(m) for m in fwd if _stage_of(m.where, bounds, pp) == s) - before,
            B=max(_work(bwd[i]) - before + grads(i) - later for i in own_b),
            Bn=max(_work(bwd[i]) - before + grads(i) - (grads(i - 1) if i else 0) for i in own_b),
            G=grads(own_b[-1]) - later))
    return terms, report


def _schedule(pp: int, stage: int, m: int, schedule: str) -> list[str]:
    if schedule == "gpipe":
        return ["F"] * m + ["B"] * m
    order, f, b = ["F"] * min(m, pp - stage), min(m, pp - stage), 0
    while b < m:
        order.append("B")
        b += 1
        if f < m:
            order.append("F")
            f += 1
    return order


def pp_rank_peak_bytes(model: Model, workload: Workload, pp: int, stage: int, micro_batches: int,
                       schedule: str = "1f1b") -> int:
    """Peak bytes of pipeline stage `stage` of `pp` running one step of `workload.batch`
    sequences in `micro_batches` micro-batches (see above)."""
    if workload.batch % micro_batches:
        raise WorkloadError(f"--micro-batches {micro_batches} does not divide the batch {workload.batch}")
    mb = workload.batch // micro_batches
    terms, report = _stage_terms(model, workload.with_(batch=mb), pp)
    t = terms[stage]
    b, seq = model.input_shape(workload.batch, workload.seq, None)
    row = seq * model.body.d_model * nbytes(1, policy(workload.precision).activations)
    held_input = mb * row if stage else 0
    work, held, full = 0, 0, False
    for step in _schedule(pp, stage, micro_batches, schedule):
        if step == "F":
            work = max(work, held * (t["A"] + held_input) + held_input + t["F"] + (t["G"] if full else 0))
            held += 1
        else:
            work = max(work, (held - 1) * (t["A"] + held_input) + held_input + (t["G"] + t["Bn"] if full else t["B"]))
            held, full = held - 1, True
    c = report.components
    all_grads = [p for p in report.phases if p.name == "optimizer"][0].components.gradients
    states = (c.weights + c.master_weights + c.optimizer_states) * t["G"] / all_grads
    return int(states + work + b * row)
