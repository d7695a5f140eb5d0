"""The memory timeline of one step: live bytes by component after every op of the forward, the
loss, the backward and the optimizer step, each with its op and block path. Pure Python.

Both readings produce one: the cost reading from its symbolic trace (one moment per leaf step: the
most bytes live while the step ran, from act_trace.Liveness in the forward and the backward walk of
cost/memory.py), the measure reading from its storage tracker (one moment per aten op). They are
compared at the phase boundaries, which both readings mark the same way:

    forward_start   the registered state alone (weights, optimizer state, the input batch);
    forward_end     after the loss, before backward: the saved activations and the inputs;
    backward_end    after backward: the gradients have joined the state, activations are gone;
    optimizer_end   after optimizer.step().
"""
from __future__ import annotations

from dataclasses import dataclass, replace

COMPONENTS = ("weights", "master_weights", "gradients", "optimizer_states", "activations", "temporaries",
              "kv_cache")
BOUNDARIES = ("forward_start", "forward_end", "backward_end", "optimizer_end")


@dataclass(frozen=True)
class Timeline:
    """Columns of moments, in order. `series[c][i]`: bytes of component c at moment i."""

    model: str
    reading: str  # analytic | measured
    phase: tuple[str, ...]
    op: tuple[str, ...]
    path: tuple[str, ...]
    series: dict[str, tuple[int, ...]]
    boundaries: dict[str, int]  # boundary name -> index of its moment
    saved_by_path: dict[str, int] | None = None  # cost reading: bytes each leaf saved for backward

    def __len__(self) -> int:
        return len(self.phase)

    def total(self, i: int) -> int:
        return sum(col[i] for col in self.series.values())

    @property
    def totals(self) -> list[int]:
        return [sum(v) for v in zip(*self.series.values())] if len(self) else []

    @property
    def peak_index(self) -> int:
        totals = self.totals
        return max(range(len(totals)), key=totals.__getitem__)

    def boundary_totals(self) -> dict[str, int]:
        return {name: self.total(i) for name, i in self.boundaries.items()}

    def to_json(self) -> dict:
        i = self.peak_index
        return {"model": self.model, "reading": self.reading, "components": list(COMPONENTS),
                "phase": list(self.phase), "op": list(self.op), "path": list(self.path),
                "series": {c: list(v) for c, v in self.series.items()}, "total": self.totals,
                "peak": {"index": i, "bytes": self.total(i), "phase": self.phase[i], "op": self.op[i],
                         "path": self.path[i]},
                "boundaries": {name: {"index": j, "bytes": self.total(j)} for name, j in self.boundaries.items()},
                **({"saved_by_path": self.saved_by_path} if self.saved_by_path is not None else {})}


def from_moments(model: str, reading: str, moments) -> Timeline:
    """`moments`: (phase, op, path, {component: bytes}) in order; a moment whose op is one of
    BOUNDARIES marks that boundary."""
    phase, op, path, series, bounds = [], [], [], {c: [] for c in COMPONENTS}, {}
    for i, (ph, o, p, comps) in enumerate(moments):
        if o in BOUNDARIES:
            bounds[o] = i
        phase.append(ph)
        op.append(o)
        path.append(p)
        for c in COMPONENTS:
            series[c].append(int(comps.get(c, 0)))
    return Timeline(model, reading, tuple(phase), tuple(op), tuple(path), {c: tuple(v) for c, v in series.items()},
                    bounds)


def from_report(report) -> Timeline:
    """The cost reading's timeline: a MemoryReport computed with timeline=True."""
    if report.timeline is None:
        raise ValueError("the report was computed without timeline=True")
    line = from_moments(report.model, "analytic",
                        ((m.name, m.op, m.where, m.components.as_dict()) for m in report.timeline))
    return replace(line, saved_by_path=dict(report.saved_by_path)) if report.saved_by_path else line


def saved_by_path(tr) -> tuple[tuple[str, int], ...]:
    """Bytes autograd keeps for backward, by the path of the step that first saved them (the
    per-layer table's activation column; a layer's share is the sum over its paths)."""
    out: dict[str, int] = {}
    for storage, step in tr.saved.values():
        if storage.kind in ("act", "cast") and step < len(tr.steps):
            path = tr.steps[step].path or "loss"
            out[path] = out.get(path, 0) + storage.nbytes
    return tuple(out.items())


# ---- the cost reading's moments (cost/memory.py calls these) -----------------------------------
def training_moments(tr, base, fwd, phases, gradients: int, *, forward_extra: int) -> list:
    """Phases in step order: the boundaries, one moment per forward step (its most live bytes),
    the loss, and the backward and optimizer phases cost/memory.py computed.

    `base`: the model states and the inputs; `fwd`: the components at the loss; `phases`: the
    report's phases (forward inner peak, loss, the backward walk, the optimizer step); `gradients`:
    every gradient (per device); `forward_extra`: what the trace's liveness does not hold but the
    step does (the targets; ZeRO-3's uncached casts)."""
    from layerwise.cost.memory import Phase

    start = replace(base, gradients=fwd.gradients)
    out = [Phase("forward", "start", start, "forward_start")]
    for step, (most, _end) in zip(tr.steps, tr.liveness.marks):
        out.append(Phase("forward", step.path, replace(start, activations=most + forward_extra), step.op))
    out.append(Phase("forward", "loss", fwd, "cross_entropy"))
    saved = tr.saved_bytes(("act", "cast"))
    out.append(Phase("forward", "end", replace(start, activations=base.activations + saved), "forward_end"))
    backward = [p for p in phases if p.name == "backward"]
    optimizer = [p for p in phases if p.name == "optimizer"]
    out += backward
    done = replace(base, gradients=gradients)
    out.append(Phase("backward", "end", done, "backward_end"))
    out += optimizer
    out.append(Phase("optimizer", "end", done, "optimizer_end"))
    return out


def inference_moments(tr, start) -> list:
    """A prefill: the weights (and KV cache) with the input, then every forward step."""
    from layerwise.cost.memory import Phase

    out = [Phase("forward", "start", start, "forward_start")]
    for step, (most, _end) in zip(tr.steps, tr.liveness.marks):
        out.append(Phase("forward", step.path, replace(start, activations=most), step.op))
    out.append(Phase("forward", "end", start, "forward_end"))
    return out
