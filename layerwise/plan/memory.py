"""Per-device memory of a layout, fast enough to search thousands of layouts.

The memory model (cost/memory.py) walks one step phase by phase; the peak is the largest phase. The
planner runs it once per checkpointing mode on the model cut to 2 and to 3 layers at micro-batch 1
and 2, unsharded, and keeps each phase's activations + temporaries (a) and the gradients alive (g):
  * a phase outside the repeated blocks (forward, loss, head, embedding) is affine in the number of
    layers L (saved activations accumulate per layer; gradients appear per layer): from L = 2, 3;
  * a phase inside layer j of the backward (j = 0 the first one back-propagated) is the same phase
    of layer 0 shifted by j times a per-layer step (one layer's activations freed, its gradients
    made), so over j its maximum is at j = 0 or j = L - 1: two affine candidates per phase;
  * activations and temporaries are per sample: micro-batches 1 and 2 give any other.
A layout then only rescales (per pipeline stage; the fullest decides):
  model states   the stage's layers + embedding (first stage) / head (last stage), split by tp
                 (experts also by ep), then ZeRO: stage >= 1 shards the optimizer states (and a master
                 copy) over dp, >= 2 gradients, 3 weights (cost/parallel.py);
  activations    the layers' part x the micro-batches in flight: 1F1B stage i holds min(p - i, m)
                 (PipeDream-Flush, Narayanan et al. 2021); interleaving with v chunks adds
                 (p - 1)/(p v) on the first stage; GPipe holds all m (Korthikanti et al. 2022 §4.3);
                 under tensor parallelism without sequence parallelism the 10 of 34 sbh bytes at the
                 norms and dropouts stay replicated (Korthikanti et al. 2022 Table 2), a fully
                 checkpointed layer keeps its whole input; the rest (embedding, logits, loss) divides
                 by tp (vocab-parallel) and is counted on the stage holding it;
  peak           max over the candidate phases of states + a + g, and of the optimizer step (states +
                 gradients + its temporaries, kept unsharded as cost/memory.py does), + one layer's
                 weights gathered by ZeRO-3; with gradient accumulation all gradients stay alive and
                 the phases are those of a step with accumulation (each new gradient a temporary).
With tp = pp = 1 this equals cost/memory.py's peak (tests/plan); with tp or pp it is the estimate
described. Pure Python.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

from layerwise.cost.memory import training_memory
from layerwise.spec.errors import WorkloadError
from layerwise.spec.model import Model
from layerwise.workload import Workload

REPLICATED = 10 / 34  # Korthikanti et al. 2022 Table 2: sbh(10 + 24/t) of sbh·34


@dataclass(frozen=True)
class Affine:
    """c + L·d: a quantity of a model with L repeated layers."""

    c: float
    d: float


@dataclass(frozen=True)
class Candidate:
    """A phase that can hold the peak: activations + temporaries (at micro-batch 1 and its per-sample
    slope) and live gradients, each affine in the layers."""

    act1: Affine  # at micro-batch 1
    act_slope: Affine  # added per extra sample
    grad: Affine


@dataclass(frozen=True)
class MemoryParts:
    weights: Affine
    master: Affine
    grads: Affine
    optimizer: Affine
    opt_tmp: Affine
    candidates: tuple[Candidate, ...]
    accum_candidates: tuple[Candidate, ...]  # the same phases under accumulation (grad: its temporaries)
    pre_fraction: float  # of the non-layer parameters on the first stage (embeddings)
    expert_fraction: float  # of a layer's parameters in its experts (split by ep)
    layer_weight_bytes: int  # one layer's weights as stored, gathered whole by ZeRO-3
    by_batch: dict = field(default_factory=dict, compare=False, hash=False, repr=False)  # _at_batch's memo


def _affine(v2: float, v3: float) -> Affine:
    d = v3 - v2
    return Affine(v2 - 2 * d, d)


def _with_layers(model: Model, n: int) -> Model:
    return replace(model, body=replace(model.body, n_layers=n))


def _phases(model: Model, workload: Workload):
    """States and the (where, a, g) of each non-optimizer phase of one unsharded step."""
    rep = training_memory(model, workload, cuda_allocator=False)  # the tensor bytes only
    opt = [p for p in rep.phases if p.name == "optimizer"][0].components
    rows = [(p.where if p.name == "backward" else f"forward:{i}", p.components.activations + p.components.temporaries,
             p.components.gradients) for i, p in enumerate(rep.phases) if p.name != "optimizer"]
    return opt, rows


def _layer_of(where: str) -> int | None:
    parts = where.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else None


def _split(rows, n_layers: int):
    """(phases outside the layers, phases of the first layer back-propagated, of the next one)."""
    other = [r for r in rows if _layer_of(r[0]) is None]
    first = [r for r in rows if _layer_of(r[0]) == n_layers - 1]
    second = [r for r in rows if _layer_of(r[0]) == n_layers - 2]
    return other, first, second


@lru_cache(maxsize=256)
def memory_parts(model: Model, workload: Workload) -> MemoryParts:
    """The affine parts of `model` under `workload`'s precision, optimizer and checkpointing
    (its batch, dp, zero, tp, pp and grad_accum are the layout's, applied by `per_device_bytes`)."""
    return _parts(model, workload.with_(batch=1, tp=1, pp=1, dp=1, zero=0, grad_accum=1))


@lru_cache(maxsize=64)
def _parts(model: Model, base: Workload) -> MemoryParts:
    if not (hasattr(model.body, "n_layers") and hasattr(model.body, "block")):
        return _flat_parts(model, base)
    check_identical_layers(model)
    states, cands = _candidates(model, base)
    # with gradient accumulation .grad exists, so each new gradient is a temporary until it is added
    # in (cost/memory.py's _backward_phases): the same phases, run with accumulation, unsharded and
    # with ZeRO-2 over 2 (what of them each device keeps a shard of)
    _, accum = _candidates(model, base.with_(grad_accum=2))
    _, halved = _candidates(model, base.with_(grad_accum=2, dp=2, zero=2))
    accum = _accum_temporaries(accum, halved)
    pre, rest, experts = _param_split(model)
    return MemoryParts(states["weights"], states["master_weights"], states["gradients"],
                       states["optimizer_states"], states["temporaries"], cands, accum, pre / max(rest, 1),
                       experts, round(states["weights"].d))


def _candidates(model: Model, base: Workload) -> tuple[dict, tuple[Candidate, ...]]:
    """The states and the candidate phases, from the model cut to 2 and 3 layers at micro-batch 1, 2."""
    runs = {(n, b): _phases(_with_layers(model, n), base.with_(batch=b)) for n in (2, 3) for b in (1, 2)}
    (s2, r21), (s3, r31) = runs[(2, 1)], runs[(3, 1)]
    r22, r32 = runs[(2, 2)][1], runs[(3, 2)][1]
    states = {f: _affine(getattr(s2, f), getattr(s3, f)) for f in
              ("weights", "master_weights", "gradients", "optimizer_states", "temporaries")}
    o21, f21, n21 = _split(r21, 2)
    o31, f31, n31 = _split(r31, 3)
    o22, f22, _ = _split(r22, 2)
    o32, f32, n32 = _split(r32, 3)
    cands = []
    for a, b, c, d in zip(o21, o31, o22, o32):  # outside the layers: affine in L
        cands.append(_candidate(a[1], b[1], c[1], d[1], a[2], b[2]))
    for i in range(len(f31)):  # inside: first layer back, and the last one (shifted L - 1 steps)
        first = _candidate(f21[i][1], f31[i][1], f22[i][1], f32[i][1], f21[i][2], f31[i][2])
        cands.append(first)
        step_a1, step_a2, step_g = n31[i][1] - f31[i][1], n32[i][1] - f32[i][1], n31[i][2] - f31[i][2]
        cands.append(Candidate(_shift(first.act1, step_a1), _shift(first.act_slope, step_a2 - step_a1),
                               _shift(first.grad, step_g)))
    return states, tuple(cands)


def check_identical_layers(model: Model) -> None:
    if getattr(model.body, "n_first", 0):
        raise WorkloadError(f"{model.name}: the planner's memory model takes identical layers; this stack has "
                            f"{model.body.n_first} layers of another kind first (DeepSeek's dense layers): size "
                            f"its set-ups with `memory` and `time`")


def _flat_parts(model: Model, base: Workload) -> MemoryParts:
    """A model without repeated blocks: one piece, micro-batch 1 and 2 only."""
    s1, _ = _phases(model, base)
    const = {f: Affine(getattr(s1, f), 0) for f in
             ("weights", "master_weights", "gradients", "optimizer_states", "temporaries")}
    cands = _flat_candidates(model, base)
    accum = _accum_temporaries(_flat_candidates(model, base.with_(grad_accum=2)),
                               _flat_candidates(model, base.with_(grad_accum=2, dp=2, zero=2)))
    return MemoryParts(const["weights"], const["master_weights"], const["gradients"], const["optimizer_states"],
                       const["temporaries"], cands, accum, 1.0, 0.0, 0)


def _flat_candidates(model: Model, base: Workload) -> tuple[Candidate, ...]:
    (_, r1), (_, r2) = _phases(model, base), _phases(model, base.with_(batch=2))
    return tuple(Candidate(Affine(a[1], 0), Affine(b[1] - a[1], 0), Affine(a[2], 0)) for a, b in zip(r1, r2))


def _accum_temporaries(accum: tuple[Candidate, ...], halved: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
    """The phases under gradient accumulation, split by what ZeRO >= 2 shards: `grad` the new
    gradients held as temporaries until AccumulateGrad adds them in (sharded with the gradients),
    the rest (activations, a tied gradient waiting whole) as `act`. `halved`: the same phases with
    ZeRO-2 over 2 devices, so the sharded part is twice the difference."""
    assert len(accum) == len(halved), "the step's phases do not depend on ZeRO"
    out = []
    for a, h in zip(accum, halved):
        shardable = Affine(2 * (a.act1.c - h.act1.c), 2 * (a.act1.d - h.act1.d))
        out.append(Candidate(Affine(a.act1.c - shardable.c, a.act1.d - shardable.d), a.act_slope, shardable))
    return tuple(out)


def _candidate(a21, a31, a22, a32, g2, g3) -> Candidate:
    one = _affine(a21, a31)
    two = _affine(a22, a32)
    return Candidate(one, Affine(two.c - one.c, two.d - one.d), _affine(g2, g3))


def _shift(x: Affine, step: float) -> Affine:
    """x at j = L - 1 layers further: c + L d + (L - 1) step."""
    return Affine(x.c - step, x.d + step)


@lru_cache(maxsize=64)
def _param_split(model: Model) -> tuple[int, int, float]:
    """(embedding params, params outside the repeated blocks, expert share of a block's params)."""
    short = _with_layers(model, 1).body
    pre = sum(c.params().total for n, c in short.children() if n in ("embed", "pos"))
    rest = short.params().total - short.block.params().total
    ffn = getattr(short.block, "ffn", None)
    experts = sum(e.params().total for e in ffn.experts) if getattr(ffn, "type_name", "") == "moe" else 0
    return pre, rest, experts / short.block.params().total


def inflight(pp: int, stage: int, m: int, schedule: str, interleave: int) -> float:
    if schedule == "gpipe":
        return float(m)
    held = float(min(pp - stage, m))
    if schedule == "interleaved" and interleave > 1 and stage == 0:
        held *= 1 + (pp - 1) / (pp * interleave)
    return held


def per_device_bytes(parts: MemoryParts, layout, stage_layers: tuple[int, ...]) -> int:
    """The largest per-GPU peak over the pipeline stages of `layout` (a cost.step_time.Layout)."""
    return max(_stage_bytes(parts, layout, i, stage_layers[i], len(stage_layers)) for i in {0, len(stage_layers) - 1})


def _fractions(parts: MemoryParts, lay, stage: int, pp: int) -> tuple[float, float]:
    """(share of the non-layer parameters on this stage, share of a layer's parameters per GPU)."""
    first, last = stage == 0, stage == pp - 1
    rest_frac = (parts.pre_fraction if first else 0.0) + ((1 - parts.pre_fraction) if last else 0.0)
    return rest_frac, 1 - parts.expert_fraction + parts.expert_fraction / lay.ep


def _states(parts: MemoryParts, lay, stage: int, n: int, pp: int) -> tuple[float, float, float, float]:
    """(weights, master weights, gradients, optimizer states) of one GPU of `stage` holding n layers."""
    rest_frac, layer_frac = _fractions(parts, lay, stage, pp)
    tp, dp, z = lay.tp, lay.dp, lay.zero

    def share(x: Affine, shard: bool) -> float:
        return (x.c * rest_frac + n * x.d * layer_frac) / tp / (dp if shard else 1)

    return (share(parts.weights, z >= 3), share(parts.master, z >= 1), share(parts.grads, z >= 2),
            share(parts.optimizer, z >= 1))


def device_state_bytes(parts: MemoryParts, lay, stage: int, n: int, pp: int) -> int:
    """Model states (weights, master, gradients, optimizer) one GPU of `stage` holds."""
    return int(sum(_states(parts, lay, stage, n, pp)))


def _stage_bytes(parts: MemoryParts, lay, stage: int, n: int, pp: int) -> int:
    tp, dp, z, b = lay.tp, lay.dp, lay.zero, lay.micro_batch
    first, last = stage == 0, stage == pp - 1
    rest_frac, layer_frac = _fractions(parts, lay, stage, pp)
    w, mst, g, o = _states(parts, lay, stage, n, pp)
    tmp = (parts.opt_tmp.c * rest_frac + n * parts.opt_tmp.d * layer_frac) / tp
    if lay.checkpointing == "full":
        scale = 1 / tp if lay.sequence_parallel else 1.0
    else:
        scale = 1 / tp if lay.sequence_parallel else REPLICATED + (1 - REPLICATED) / tp
    held = inflight(pp, stage, lay.grad_accum, lay.schedule, lay.interleave)
    g_scale = 1 / dp if z >= 2 else 1.0
    rest_act = (1.0 if (first or last) else 0.0) / tp
    layer_act = n * scale * held
    rest_g, layer_g = rest_frac / tp * g_scale, n * layer_frac / tp * g_scale
    if lay.grad_accum > 1:  # every gradient lives through the step, and new ones are temporaries
        peak_act = g + max(ac * rest_act + ad * layer_act + tc * rest_g + td * layer_g
                           for ac, ad, tc, td in _at_batch(parts, b, accum=True))
    else:
        peak_act = max(ac * rest_act + ad * layer_act + gc * rest_g + gd * layer_g
                       for ac, ad, gc, gd in _at_batch(parts, b))
    if z == 3 and dp > 1:
        peak_act += parts.layer_weight_bytes / tp
    return int(w + mst + o + max(peak_act, g + tmp))


def _at_batch(parts: MemoryParts, b: int, accum: bool = False) -> tuple[tuple[float, float, float, float], ...]:
    """The candidates' (activation rest, activation per layer, gradient rest, gradient per layer)
    at micro-batch b, without those another candidate beats in all four (the layout's multipliers
    are never negative, so they cannot hold the peak). Memoised on `parts`."""
    if (b, accum) not in parts.by_batch:
        parts.by_batch[(b, accum)] = _undominated(parts.accum_candidates if accum else parts.candidates, b)
    return parts.by_batch[(b, accum)]


def _undominated(candidates: tuple[Candidate, ...], b: int) -> tuple[tuple[float, float, float, float], ...]:
    rows = [(c.act1.c + (b - 1) * c.act_slope.c, c.act1.d + (b - 1) * c.act_slope.d, c.grad.c, c.grad.d)
            for c in candidates]
    keep = [r for r in rows if not any(o != r and all(x >= y for x, y in zip(o, r)) for o in rows)]
    return tuple(dict.fromkeys(keep))
