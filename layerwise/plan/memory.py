"""Per-device memory of a layout, fast enough to search thousands of layouts.

The memory model (cost/memory.py) is run once per distinct (checkpointing, micro-batch) on
the model cut to 2 and to 3 layers, unsharded; a layer's share is the difference, the rest
(embeddings, head, loss, inputs, the recompute window) is what the 2-layer model holds beyond two
layers. A layout then
only rescales, per pipeline stage (the one that holds most decides):
  model states   the stage's layers + embedding (first stage) / final norm and head (last stage),
                 split by tp (experts also by ep), then ZeRO: stage >= 1 shards master weights and
                 optimizer states over dp, >= 2 gradients, 3 weights (cost/parallel.py);
  activations    one layer's saved bytes x the stage's layers x the micro-batches in flight: 1F1B
                 stage i holds min(p - i, m) (PipeDream-Flush, Narayanan et al. 2021); interleaving
                 with v chunks adds (p - 1)/(p v) on the first stage; GPipe holds all m
                 (Korthikanti et al. 2022 §4.3). Under tensor parallelism without sequence
                 parallelism the 10 of 34 sbh bytes at the norms and dropouts stay replicated
                 (Korthikanti et al. 2022, Table 2); a fully checkpointed layer keeps only its
                 (replicated) input;
  peak           max(start of backward: states + activations (+ gradients when accumulating),
                 optimizer step: states + gradients + the step's temporaries) + ZeRO-3's gathered
                 layer, as the phases of cost/memory.py.
Checked against cost/memory.py on tp = pp = 1 layouts in tests/plan. Pure Python.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from functools import lru_cache

from layerwise.cost.memory import training_memory
from layerwise.spec.model import Model
from layerwise.workload import Workload

REPLICATED = Fraction(10, 34)  # Korthikanti et al. 2022 Table 2: sbh(10 + 24/t) of sbh·34


@dataclass(frozen=True)
class Share:
    """Bytes of one model (or one layer) unsharded: states, and the two activation-phase peaks."""

    weights: int
    master: int
    grads: int
    optimizer: int
    act: int  # at the activation peak (start of backward or inside forward), beyond the states
    opt_tmp: int  # the optimizer step's temporaries

    def __sub__(self, o: "Share") -> "Share":
        return Share(*(a - b for a, b in zip(self._t(), o._t())))

    def _t(self):
        return (self.weights, self.master, self.grads, self.optimizer, self.act, self.opt_tmp)


def _share(model: Model, workload: Workload) -> Share:
    rep = training_memory(model, workload, cuda_allocator=False)  # the shares only
    opt = [p for p in rep.phases if p.name == "optimizer"][0].components
    act = max(p.total - opt.weights - opt.master_weights - opt.optimizer_states
              for p in rep.phases if p.name != "optimizer")
    return Share(opt.weights, opt.master_weights, opt.gradients, opt.optimizer_states, act, opt.temporaries)


def _with_layers(model: Model, n: int) -> Model:
    return replace(model, body=replace(model.body, n_layers=n))


@dataclass(frozen=True)
class MemoryParts:
    layer: Share
    rest: Share
    n_layers: int
    pre_fraction: Fraction  # of the rest's parameters on the first stage (embeddings)
    expert_fraction: Fraction  # of a layer's parameters in its experts (split by ep)
    layer_weight_bytes: int  # one layer's weights, gathered whole by ZeRO-3


def memory_parts(model: Model, workload: Workload) -> MemoryParts:
    """The layer and rest shares of `model` under `workload` (tp = pp = dp = 1, zero 0, grad_accum 1)."""
    return _measured_parts(model, workload)


@lru_cache(maxsize=256)
def _measured_parts(model: Model, workload: Workload) -> MemoryParts:
    base = workload.with_(tp=1, pp=1, dp=1, zero=0, grad_accum=1)
    body = model.body
    if not (hasattr(body, "n_layers") and hasattr(body, "block")):  # no repeated blocks: one piece
        zero = Share(0, 0, 0, 0, 0, 0)
        return MemoryParts(zero, _share(model, base), 0, Fraction(1), Fraction(0), 0)
    # 2 and 3 layers: with one layer, checkpointing's recompute window and the stored inputs meet
    # at a different moment than in a deeper model
    two, three = _share(_with_layers(model, 2), base), _share(_with_layers(model, 3), base)
    layer = three - two
    rest = two - layer - layer
    pre, total_rest, experts = _param_split(model)
    return MemoryParts(layer, rest, body.n_layers, Fraction(pre, max(total_rest, 1)),
                       Fraction(experts, body.block.params().total), layer.weights)


@lru_cache(maxsize=64)
def _param_split(model: Model) -> tuple[int, int, int]:
    """(embedding params, params outside the repeated blocks, expert params of one block)."""
    body = _with_layers(model, 1)
    pre = sum(c.params().total for n, c in body.body.children() if n in ("embed", "pos"))
    total_rest = body.body.params().total - body.body.block.params().total
    ffn = getattr(body.body.block, "ffn", None)
    experts = sum(e.params().total for e in ffn.experts) if getattr(ffn, "type_name", "") == "moe" else 0
    return pre, total_rest, experts


def inflight(pp: int, stage: int, m: int, schedule: str, interleave: int) -> Fraction:
    if schedule == "gpipe":
        return Fraction(m)
    held = Fraction(min(pp - stage, m))
    if schedule == "interleaved" and interleave > 1 and stage == 0:
        held *= 1 + Fraction(pp - 1, pp * interleave)
    return held


def per_device_bytes(parts: MemoryParts, layout, stage_layers: tuple[int, ...]) -> int:
    """The largest per-GPU peak over the pipeline stages of `layout` (a cost.step_time.Layout)."""
    best = 0
    for i in {0, len(stage_layers) - 1}:
        best = max(best, _stage_bytes(parts, layout, i, stage_layers[i], len(stage_layers)))
    return best


def _stage_bytes(parts: MemoryParts, lay, stage: int, n: int, pp: int) -> int:
    tp, dp, z = lay.tp, lay.dp, lay.zero
    first, last = stage == 0, stage == pp - 1
    pre, experts = float(parts.pre_fraction), float(parts.expert_fraction)  # floats: a search's hot loop
    rest_frac = (pre if first else 0.0) + ((1 - pre) if last else 0.0)
    layer_frac = 1 - experts + experts / lay.ep

    def states(field: str, shard: bool) -> float:
        total = n * getattr(parts.layer, field) * layer_frac + getattr(parts.rest, field) * rest_frac
        return total / tp / (dp if shard else 1)

    w, mst, g, o = states("weights", z >= 3), states("master", z >= 1), states("grads", z >= 2), \
        states("optimizer", z >= 1)
    tmp = (n * parts.layer.opt_tmp * layer_frac + parts.rest.opt_tmp * rest_frac) / tp / (dp if z >= 1 else 1)
    if lay.checkpointing == "full":
        act_scale = 1 / tp if lay.sequence_parallel else 1.0
    else:
        act_scale = 1 / tp if lay.sequence_parallel else float(REPLICATED + (1 - REPLICATED) / tp)
    held = float(inflight(pp, stage, lay.grad_accum, lay.schedule, lay.interleave))
    act = n * parts.layer.act * act_scale * held + (parts.rest.act / tp if (first or last) else 0)
    if lay.grad_accum > 1:
        act += g
    if z == 3 and dp > 1:
        act += parts.layer_weight_bytes / tp
    return int(w + mst + o + max(act, g + tmp))
