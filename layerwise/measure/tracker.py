"""Live tensor-storage tracking: the ground truth of "memory" in the measure reading.

`StorageTracker` is a `TorchDispatchMode` that sees every aten op's outputs, counts each distinct
`untyped_storage()` once (views and in-place results share it), and drops it when the storage dies
(a weakref callback on the storage's Python object, which PyTorch keeps alive exactly as long as
the C++ storage). Parameters, buffers, optimizer state and inputs are registered first under named
categories; everything created later is classified by the phase it is born in:

    forward   -> activations   (saved for backward, or produced by the forward and still alive)
    backward  -> temporaries   (activation gradients, recomputed checkpoints, loss-grad seeds)
    optimizer -> temporaries   (per-tensor or foreach scratch)

and re-classified when it turns out to be something else: a storage that AccumulateGrad puts in
`param.grad` becomes `gradients`; one found in `optimizer.state` becomes `optimizer_states`.
A re-classification also corrects the breakdown recorded at an earlier peak if the storage was
already alive then (born before the peak, alive now => alive at the peak), so the breakdown at
the peak is exact, not just the total.

The idea follows `torch.distributed._tools.mem_tracker.MemTracker` (storage weakrefs, grad hooks,
optimizer-step hooks) without its per-module snapshots, which make it slow under fake tensors.
"""
from __future__ import annotations

import sys
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import torch
from torch.utils import flop_counter as fc
from torch.utils._python_dispatch import TorchDispatchMode

import layerwise.measure.flops  # noqa: F401  (registers the CPU attention FLOP formulas)
import layerwise.measure.fused_meta  # noqa: F401  (fused optimizer steps under fake tensors)

aten = torch.ops.aten

# The seven components of the JSON contract (DESIGN.md "Command line").
COMPONENTS = ("weights", "master_weights", "gradients", "optimizer_states", "activations",
              "temporaries", "kv_cache")

# Finer categories the tracker keeps, and the component each one is reported under.
# "preexisting": a storage first seen as an op input, created before tracking and not registered
# (a constant tensor held as a plain module attribute, say); it was alive all along.
CATEGORY_COMPONENT = {
    "parameters": "weights",
    "buffers": "weights",
    "preexisting": "weights",
    "master_weights": "master_weights",
    "gradients": "gradients",
    "optimizer_states": "optimizer_states",
    "inputs": "activations",
    "activations": "activations",
    "temporaries": "temporaries",
    "kv_cache": "kv_cache",
}
CATEGORIES = tuple(CATEGORY_COMPONENT)
PHASES = ("setup", "forward", "backward", "optimizer")
# the timeline's boundary moment recorded when a phase begins
_BOUNDARY_BEFORE = {"forward": "forward_start", "backward": "forward_end", "optimizer": "backward_end"}
_BORN_AS = {"setup": "temporaries", "forward": "activations", "backward": "temporaries",
            "optimizer": "temporaries"}


@dataclass
class _Record:
    nbytes: int
    category: str
    born: int  # op counter at birth: alive at a peak recorded at op n iff born <= n and alive now
    serial: int = 0  # its key in the allocation events


@dataclass
class Snapshot:
    """Bytes per category at one moment (`at_op`: the op counter when it was taken)."""

    total: int = 0
    at_op: int = -1
    phase: str = "setup"
    by_category: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))

    def components(self) -> dict[str, int]:
        out = dict.fromkeys(COMPONENTS, 0)
        for cat, n in self.by_category.items():
            out[CATEGORY_COMPONENT[cat]] += n
        return out


def _storages(obj):
    """The untyped storages of every tensor in a (nested) op argument or result.

    A hand-rolled walk over tuples/lists/dicts: aten ops take and return nothing else, and this
    runs twice per op (pytree's general flatten was a fifth of a 7B fake step's time)."""
    if isinstance(obj, torch.Tensor):
        obj = getattr(obj, "_local_tensor", obj)  # a DTensor: this rank's shard holds the bytes
        if obj.layout == torch.strided:
            yield obj.untyped_storage()
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _storages(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _storages(item)


class StorageTracker(TorchDispatchMode):
    """Tracks live storage bytes, the peak, the phase it happened in and its breakdown.

    Use: register_module / register_optimizer / register(tensors, category) first, then enter the
    mode and switch phases with `with tracker.phase("forward"): ...`. With `fake_scalars=True`
    (under FakeTensorMode) `.item()` returns 1 of the tensor's kind instead of failing, so
    optimizers that read their step count on the host (for-loop Adam, Adafactor) run; the value
    never changes which tensors are allocated.
    """

    def __init__(self, *, fake_scalars: bool = False, count_flops: bool = False, paths=None):
        """`paths`: a measure.timeline.ModulePaths; given, every op appends a moment to `moments`
        (phase, op, block path, bytes by category): the step's memory timeline."""
        super().__init__()
        self.paths = paths
        self.moments: list[tuple[str, str, str, dict[str, int]]] | None = [] if paths is not None else None
        self.fake_scalars = fake_scalars
        self.count_flops = count_flops
        self.flops: dict[str, int] = dict.fromkeys(PHASES, 0)
        self._records: dict[int, tuple[_Record, weakref.ref]] = {}
        self.current = Snapshot()
        self.peak = Snapshot()
        self.phase_peaks: dict[str, Snapshot] = {}
        self._phase = "setup"
        self._ops = 0
        self._hooks = []
        # every allocation and free, in order, as (key, nbytes) / (key, 0) events for the CUDA
        # caching-allocator replay (cost/cuda_alloc.py): `before` holds what existed before the
        # mode was entered (registered state, pre-existing storages), `events` what the step did
        self.before: list[tuple[int, int]] = []
        self.events: list[tuple[int, int]] = []
        self._entered = False
        self._serial = 0

    # ---- registration -----------------------------------------------------------------------
    def register(self, tensors, category: str) -> None:
        """Track the storages of `tensors` (any nesting) under `category` (re-classifying them
        if already tracked)."""
        if category not in CATEGORY_COMPONENT:
            raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
        for st in _storages(tensors):
            rec = self._record(st)
            if rec is None:
                self._add(st, category)
            elif rec.category != category:
                self._reclassify(rec, category)
        self._update_peak()

    def register_module(self, module: torch.nn.Module) -> None:
        """Parameters (and any existing .grad) and buffers; gradients are re-classified when
        AccumulateGrad stores them, through a post-accumulate hook on each parameter."""
        params = list(module.parameters())
        self.register(params, "parameters")
        self.register(list(module.buffers()), "buffers")
        self.register([p.grad for p in params if p.grad is not None], "gradients")
        for p in params:
            if p.requires_grad:
                self._hooks.append(p.register_post_accumulate_grad_hook(self._on_grad))

    def register_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.register([v for state in optimizer.state.values() for v in state.values()
                       if isinstance(v, torch.Tensor)], "optimizer_states")

    def _on_grad(self, param: torch.Tensor) -> None:
        if param.grad is not None:
            self.register(param.grad, "gradients")

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    # ---- phases -----------------------------------------------------------------------------
    @contextmanager
    def phase(self, name: str):
        """Storages born inside are classified by this phase; its own peak is recorded.

        Phases follow one another, so the phase stays in force after the block (until the next
        one): work done after optimizer.step() must not count as a second "setup"."""
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; expected one of {PHASES}")
        if name in _BOUNDARY_BEFORE:
            self.boundary(_BOUNDARY_BEFORE[name], name if name == "forward" else self._phase)
        self._phase = name
        self._update_peak()
        yield self

    def boundary(self, name: str, phase: str | None = None) -> None:
        """A timeline moment that marks a phase boundary (cost/timeline.BOUNDARIES)."""
        if self.moments is not None:
            self.moments.append((phase or self._phase, name, "", dict(self.current.by_category)))

    # ---- bookkeeping ------------------------------------------------------------------------
    def _record(self, st) -> _Record | None:
        entry = self._records.get(id(st))
        return entry[0] if entry is not None else None

    def _add(self, st, category: str, born: int | None = None) -> None:
        nbytes = st.nbytes()
        rec = _Record(nbytes, category, self._ops if born is None else born, self._serial)
        self._serial += 1
        (self.events if self._entered and born is None else self.before).append((rec.serial, nbytes))
        self._records[id(st)] = (rec, weakref.ref(st, partial(self._free, id(st), rec)))
        self.current.total += nbytes
        self.current.by_category[category] += nbytes

    def _free(self, key: int, rec: _Record, _ref) -> None:
        entry = self._records.get(key)
        if entry is not None and entry[0] is rec:
            del self._records[key]
        self.current.total -= rec.nbytes
        self.current.by_category[rec.category] -= rec.nbytes
        self.events.append((rec.serial, 0))

    def _reclassify(self, rec: _Record, category: str) -> None:
        # Alive now and born no later than a recorded peak => it was alive at that peak too.
        for snap in (self.current, self.peak, *self.phase_peaks.values()):
            if snap is self.current or rec.born <= snap.at_op:
                snap.by_category[rec.category] -= rec.nbytes
                snap.by_category[category] += rec.nbytes
        rec.category = category

    def _resize(self, st, rec: _Record) -> None:
        change = st.nbytes() - rec.nbytes
        self.events += [(rec.serial, 0), (rec.serial, rec.nbytes + change)]  # a resize reallocates
        rec.nbytes += change
        self.current.total += change
        self.current.by_category[rec.category] += change

    def _preexisting(self, st) -> None:
        """A storage alive since before tracking: count it now and at every recorded peak."""
        self._add(st, "preexisting", born=-1)
        nbytes = st.nbytes()
        for snap in (self.peak, *self.phase_peaks.values()):
            snap.total += nbytes
            snap.by_category["preexisting"] += nbytes
        for *_, by_category in self.moments or ():  # alive at every earlier moment too
            by_category["preexisting"] += nbytes

    def _update_peak(self) -> None:
        total = self.current.total
        ph = self.phase_peaks.get(self._phase)
        if ph is None or total > ph.total:
            self.phase_peaks[self._phase] = self._copy()
        if total > self.peak.total or self.peak.at_op < 0:
            self.peak = self._copy()

    def _copy(self) -> Snapshot:
        return Snapshot(self.current.total, self._ops, self._phase, dict(self.current.by_category))

    # ---- the mode ---------------------------------------------------------------------------
    def __enter__(self):
        self._entered = True
        self._patch_resize()
        return super().__enter__()

    def __exit__(self, *exc):
        torch.UntypedStorage.resize_ = self._orig_resize
        return super().__exit__(*exc)

    def _patch_resize(self) -> None:
        """`UntypedStorage.resize_` bypasses the dispatcher; FSDP2 frees and re-allocates its
        unsharded parameters with it (resize to 0 after a block, back before the next use), so it
        is followed here as MemTracker does (torch.distributed._tools.mem_tracker._track_resize)."""
        orig = self._orig_resize = torch.UntypedStorage.resize_

        def resize_(st, size):
            out = orig(st, size)
            rec = self._record(st)
            if rec is not None and rec.nbytes != st.nbytes():
                self._resize(st, rec)
            elif rec is None and st.nbytes() > 0:
                self._add(st, _BORN_AS[self._phase])
            self._update_peak()
            return out

        torch.UntypedStorage.resize_ = resize_

    def cuda_allocator_peaks(self):
        """What CUDA's caching allocator would report for this step (cost/cuda_alloc.py): the
        tracked storages replayed in order, after one identical warm-up step."""
        from layerwise.cost.cuda_alloc import steady_state_peaks

        return steady_state_peaks(self.before, self.events)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        dtensor = _dtensor_type()
        if dtensor is not None and any(issubclass(t, dtensor) for t in types):
            return NotImplemented  # let DTensor run first: its local ops come back here (as MemTracker does)
        kwargs = kwargs or {}
        for st in _storages((args, kwargs)):
            if id(st) not in self._records and st.nbytes() > 0:
                self._preexisting(st)
        if self.fake_scalars and func is aten._local_scalar_dense.default:
            return _placeholder_scalar(args[0].dtype)
        if self.fake_scalars and func is aten._grouped_mm.default and args[0].dtype != torch.bfloat16:
            out = _grouped_mm_output(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
        self._ops += 1
        if self.count_flops:
            self._count(func, args, kwargs, out)
        born_as = _BORN_AS[self._phase]
        for st in _storages(out):
            rec = self._record(st)
            if rec is None:
                if st.nbytes() > 0:
                    self._add(st, born_as)
            elif rec.nbytes != st.nbytes():  # resize_ / out= ops that grew a storage
                self._resize(st, rec)
        self._update_peak()
        if self.moments is not None and func.namespace != "prim" and self._phase != "setup":  # prim.device: no bytes
            self.moments.append((self._phase, func._overloadpacket.__name__, self.paths.current(),
                                 dict(self.current.by_category)))
        return out


    def _count(self, func, args, kwargs, out) -> None:
        """FLOPs by FlopCounterMode's own formulas (flop_counter.flop_registry, with the CPU
        attention formulas layerwise.measure.flops registers), without FlopCounterMode itself:
        its module tracker keeps checkpoint-recomputed tensors alive through the whole backward
        and it decomposes ops the tracker would otherwise see whole, so it would move the peak."""
        formula = fc.flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops[self._phase] += int(formula(*args, **kwargs, out_val=out))


def _dtensor_type():
    """DTensor if torch.distributed.tensor was imported (no DTensor can exist otherwise; importing
    it here would cost seconds on every measure)."""
    mod = sys.modules.get("torch.distributed.tensor")
    return getattr(mod, "DTensor", None)


def _grouped_mm_output(mat_a, mat_b, offs=None, bias=None, out_dtype=None):
    """torch._grouped_mm under fake tensors for fp32/fp16 inputs: its meta function accepts bf16
    only, the CPU kernel any float (transformers' MoE experts run it in fp32 on the CPU). The
    output as the meta function would allocate it, in the inputs' dtype."""
    from torch._meta_registrations import _create_grouped_mm_output_tensor

    return _create_grouped_mm_output_tensor(mat_a, mat_b, offs, out_dtype or mat_a.dtype)


def _placeholder_scalar(dtype: torch.dtype):
    if dtype == torch.bool:
        return True
    if dtype.is_floating_point or dtype.is_complex:
        return 1.0
    return 1
