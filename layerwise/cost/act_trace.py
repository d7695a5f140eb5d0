"""A symbolic forward pass: tensors as (shape, dtype, requires_grad, storage) with no data, so the
cost reading can count what autograd saves without importing torch.

Why symbolic tensors rather than per-block byte totals: one storage is often saved by several
consumers (the norm output read by q_proj, k_proj and v_proj; a residual stream read by a norm and
by the add), and a view (flatten, transpose, select) shares its input's storage. Counting unique
`Storage` objects, exactly as the ground truth counts unique untyped storages in
`torch.autograd.graph.saved_tensors_hooks`, gets this right by construction.

Every block's function (cost/activations.py registry) receives the `Trace` and its input `T` and
returns its output `T`, calling the op helpers below, which mirror what the ATen op saves:
  linear/matmul/conv: the (autocast-cast) input if the weight/other needs grad, the weight if the
  input needs grad (a parameter is not an activation; its autocast copy is, and is cached once).
Each leaf call is one *step*; a saved storage remembers the first step that saved it, because in
backward it is freed when that step's backward has run (backward visits steps in reverse).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from layerwise.cost.precision import nbytes as _packed
from layerwise.spec.errors import WorkloadError
from layerwise.spec.shapes import prod

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ActPolicy:
    """What the saved bytes depend on besides shapes.

    dtype: the parameters' (and float inputs') dtype; autocast: the low dtype of torch.autocast
    (None: off); dropout_mask_bytes: 1 for CUDA's bool mask, None for CPU's full-precision mask;
    attention: eager | sdpa; grad: False under torch.no_grad (nothing is saved).
    """

    dtype: str = "fp32"
    autocast: str | None = None
    autocast_device: str = "cpu"
    dropout_mask_bytes: int | None = None
    attention: str = "sdpa"
    grad: bool = True
    checkpointing: str = "none"  # none | full (each outermost repeat item) | selective (attention core,
    # Korthikanti et al. 2022 "Reducing activation recomputation": scores/probs recomputed)
    hf: object = None  # --impl hf: an act_hf.HFOps (transformers' ops where they differ from ours)

    def __post_init__(self):
        if self.attention not in ("eager", "sdpa"):
            raise WorkloadError(f"attention must be eager or sdpa, got {self.attention!r}")


class Storage:
    """One allocation. `kind`: act (made by the forward), input (the model's input), param, cast
    (an autocast low-precision copy of a parameter)."""

    __slots__ = ("nbytes", "kind", "owner", "key")

    def __init__(self, n: int, kind: str = "act"):
        self.nbytes, self.kind, self.owner, self.key = n, kind, None, None

    def __del__(self):
        if self.owner is not None:  # counted by a Liveness: freed now (refcount reached zero)
            self.owner.live -= self.nbytes
            self.owner.events.append((self.key, 0))


class _Noted:
    """What a checkpointed region notes of a saved storage (no reference to it)."""

    __slots__ = ("nbytes", "kind", "key")

    def __init__(self, nbytes: int, kind: str, key):
        self.nbytes, self.kind, self.key = nbytes, kind, key


class Liveness:
    """Live bytes of the symbolic tensors, freed when Python drops the last reference to their
    Storage (CPython refcounting: `Storage.__del__`), as the measure reading frees a storage by a
    weakref callback.
    The activation functions mirror the modules' forwards, so their locals die where the module's
    do; `peak` is the forward's transient peak (what an inference prefill holds at most)."""

    def __init__(self):
        self.live = 0
        self.peak = 0
        self.where = ""
        self.step_max = 0  # the most live bytes since the last mark
        self.marks: list[tuple[int, int]] = []  # per step: (most live during it, live at its end)
        self.events: list[tuple[int, int]] = []  # (key, nbytes) allocations, (key, 0) frees, in order

    def alloc(self, storage: Storage, where: str) -> None:
        storage.key = ("fwd", len(self.events))
        self.events.append((storage.key, storage.nbytes))
        self.live += storage.nbytes
        if self.live > self.peak:
            self.peak, self.where = self.live, where
        if self.live > self.step_max:
            self.step_max = self.live
        storage.owner = self

    def mark(self) -> None:
        """A step has ended: keep its most live bytes and what is live now (the memory timeline)."""
        self.marks.append((self.step_max, self.live))
        self.step_max = self.live


@dataclass(eq=False)
class T:
    shape: Shape
    dtype: str
    grad: bool
    storage: Storage

    @property
    def numel(self) -> int:
        return prod(self.shape)


@dataclass
class Step:
    """One leaf call: its path, the trainable parameters whose gradient it produces, and what its
    backward holds besides saved tensors: the gradients of its input and output (`io`, set for
    leaves), else (a composite's own step: an add, the attention core) its two largest tensors."""

    path: str
    grad_params: tuple[str, ...] = ()
    big: list[int] = field(default_factory=lambda: [0, 0])  # its two largest new tensors
    io: tuple[int, int] | None = None  # leaves: bytes of (input, output), i.e. of their gradients
    extra: int = 0  # autocast: the low-precision weight gradients before their cast to fp32
    # an RNN's time loops, in forward order, one per layer and direction: (bytes of its parameters'
    # gradients, of what its loop holds at its fullest, of the saved tensors freed by then). The
    # hidden weights run once per step: autograd sums their gradients in the AccumulateGrad nodes'
    # input buffers, temporaries until the loop's backward ends, out of place (the old sum, the
    # step's gradient and the new sum alive at once, from the second step back: two steps' saved
    # states freed; torch/csrc/autograd/input_buffer.cpp, measured)
    summed: tuple[tuple[int, int, int], ...] = ()
    # a composite step whose backward runs several ops (eager attention's core): the most gradient
    # bytes its backward holds at once, when more than its two largest tensors (`big`)
    inner: int = 0
    early: int = 0  # bytes of its own saved tensors its backward has freed by that moment (`inner`'s)
    op: str = ""  # the block type whose function ran this step (linear, attention, add...)
    # a lump (Trace.lump) standing for many equal copies: (parameter keys, copies) whose gradients
    # its copies produce, one group per step of one copy; the backward shows no moment inside it
    lumped: tuple[tuple[tuple[str, ...], int], ...] = ()


@dataclass(frozen=True)
class Mark:
    """What a Trace held at one moment (Trace.mark), to tell what one copy of a block added."""

    steps: int
    saved: frozenset
    casts: frozenset
    params: frozenset
    live: int
    buffers: int
    input_bytes: int


@dataclass
class Trace:
    policy: ActPolicy
    saved: dict[int, tuple[Storage, int]] = field(default_factory=dict)  # id -> (storage, first step)
    steps: list[Step] = field(default_factory=list)
    casts: dict[str, Storage] = field(default_factory=dict)  # autocast weight cache, by param key
    params: dict[str, tuple[int, str, bool]] = field(default_factory=dict)  # key -> (numel, dtype, trainable)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # key -> shape (matrices 2-D)
    liveness: Liveness = field(default_factory=Liveness)
    input_bytes: int = 0
    buffers: int = 0  # bytes of module buffers (BatchNorm running stats and its int64 counter)
    path: list[str] = field(default_factory=list)
    sink: dict | None = None  # set inside a checkpointed region
    holds: list[tuple[int, int, int]] = field(default_factory=list)  # residual: (first, last step, bytes)
    regions: list[tuple[int, int, dict]] = field(default_factory=list)  # checkpointed: first, last step, freed bytes by step
    # checkpointed, for the allocation sequence (cost/cuda_events.py): last step, the region's span
    # of liveness events, and the keys of the storages recomputed for backward -> their step
    recompute_logs: list[tuple[int, int, int, dict]] = field(default_factory=list)
    # checkpointed, by last step: (the most bytes its recomputation holds at once, its output's bytes)
    recompute_peaks: dict[int, tuple[int, int]] = field(default_factory=dict)
    # by step: the gradient a recomputation of a region ending there starts with, when not its
    # output's (sdpa's math path ends in a cast back: its backward makes an fp32 gradient first)
    recompute_grad: dict[int, int] = field(default_factory=dict)
    shared: dict = field(default_factory=dict)  # --impl hf: tensors made once per forward (mask, rotary tables)
    # equal copies lumped (Trace.lump); off when every op's moment is wanted (the memory timeline,
    # the CUDA allocator's replay of the allocation sequence)
    lumping: bool = True
    counts: dict[str, int] = field(default_factory=dict)  # parameter key -> copies it stands for (lumps)
    idle: set[str] = field(default_factory=set)  # trainable keys that get no gradient in this step
    origin: dict[str, str] = field(default_factory=dict)  # lumped key -> the traced copy's key it stands for
    real_shapes: dict | None = None  # key -> the built module's parameter shape (memory.param_shapes_of)
    # checkpointed: positions in liveness.events a recomputation reaches (Trace.reach) beyond its
    # last saved tensor's allocation
    reached: list[int] = field(default_factory=list)
    decode: tuple[int, int] | None = None  # a decode step: (its position, the cache's positions)
    casts_cached: bool = False  # autocast's weight casts made before this trace (a decode step)

    # ---- structure -------------------------------------------------------------------------
    def begin(self, extra: str = "") -> Step:
        if self.steps:
            self.liveness.mark()
        step = Step(".".join(self.path) + extra)
        self.steps.append(step)
        return step

    @property
    def here(self) -> int:
        return len(self.steps) - 1

    def key(self, name: str) -> str:
        return ".".join([*self.path, name])

    # ---- tensors ---------------------------------------------------------------------------
    def new(self, shape: Shape, dtype: str, grad: bool) -> T:
        shape = tuple(int(d) for d in shape)
        n = nbytes(prod(shape), dtype)
        if self.steps and n > self.steps[-1].big[1]:
            big = self.steps[-1].big
            big[:] = sorted((n, *big), reverse=True)[:2]
        st = Storage(n)
        self.liveness.alloc(st, self.steps[-1].path if self.steps else "")
        return T(shape, dtype, grad and self.policy.grad, st)

    def input(self, shape: Shape, dtype: str, grad: bool) -> T:
        t = self.new(shape, dtype, grad)
        t.storage.kind = "input"
        self.input_bytes += t.storage.nbytes
        return t

    @staticmethod
    def view(t: T, shape: Shape) -> T:
        return T(tuple(shape), t.dtype, t.grad, t.storage)

    def save(self, *ts: T) -> None:
        """Autograd keeps these for backward (only while grad mode is on). Inside a checkpointed
        region (`sink` set) they are only recorded: backward recomputes them one region at a time."""
        if not self.policy.grad:
            return
        for t in ts:
            if t.storage.kind != "param":
                self._keep(t.storage, self.here, self.sink)

    def _keep(self, storage: Storage, step: int, sink: dict | None) -> None:
        """Saved for backward: kept alive (`saved`), or inside a checkpointed region only noted
        (`sink`, by key, without a reference: checkpoint's pack hook drops the tensor, which dies
        as soon as the forward no longer uses it)."""
        if sink is None:
            self.saved.setdefault(id(storage), (storage, step))
        elif storage.key not in sink:
            sink[storage.key] = (_Noted(storage.nbytes, storage.kind, storage.key), step)

    def reach(self) -> None:
        """Inside a checkpointed region: an op saves tensors made earlier only now (its operands are
        packed when it runs), so a recomputation gets here before its early stop."""
        if self.sink is not None:
            self.reached.append(len(self.liveness.events))

    def checkpointed(self, fn, *xs: T) -> T:
        """torch.utils.checkpoint(fn, *xs, use_reentrant=False): the inputs stay alive (saved),
        the region's own saved tensors are dropped and recomputed in backward, one region at a
        time; `regions` keeps, per step, the recomputed bytes its backward frees."""
        if not self.policy.grad:
            return fn(*xs)
        outer, self.sink = self.sink, {}
        start = len(self.steps)
        kept = {x.storage.key for x in xs}
        log_start = len(self.liveness.events)
        try:
            out = fn(*xs)
            log_end = len(self.liveness.events)
            # a region that begins no step of its own (selective: the attention core runs inside
            # the `.core` step) starts in the step it was entered in, where its inputs are freed
            first = min([start, *(step for _, step in self.sink.values())])
            for x in xs:  # kept until the region's backward is done (its first step)
                if x.storage.kind != "param" and self.sink:
                    self._keep(x.storage, first, outer)
            freed: dict[int, int] = {}  # step -> recomputed bytes freed once its backward has run
            keys = {}
            for st, step in self.sink.values():
                if st.key not in kept and st.kind in ("act", "cast"):  # casts are redone too
                    freed[step] = freed.get(step, 0) + st.nbytes
                    keys[st.key] = step
            self.regions.append((first, len(self.steps) - 1, freed))
            self.recompute_logs.append((len(self.steps) - 1, log_start, log_end, keys))
            reach = max((p - log_start for p in self.reached if log_start <= p <= log_end), default=0)
            self.recompute_peaks[len(self.steps) - 1] = (
                recompute_peak(self.liveness.events[log_start:log_end], keys, reach),
                self.recompute_grad.get(len(self.steps) - 1, out.storage.nbytes))
        finally:
            self.sink = outer
        return out

    def param(self, name: str, numel: int, trainable: bool, shape: Shape | None = None) -> T:
        """A parameter (by key, so tied weights are one). Its gradient is produced in this step."""
        key = self.key(name) if not name.startswith("/") else name[1:]
        self.params.setdefault(key, (numel, self.policy.dtype, trainable))
        self.shapes.setdefault(key, tuple(shape or (numel,)))
        if trainable and self.policy.grad and self.steps:
            self.steps[-1].grad_params += (key,)
        st = Storage(nbytes(numel, self.policy.dtype), "param")
        return T(tuple(shape or (numel,)), self.policy.dtype, trainable and self.policy.grad, st)

    def low(self, t: T) -> T:
        """Autocast's cast of an activation to the low dtype: a new tensor (not cached)."""
        ac = self.policy.autocast
        if ac is None or t.dtype == ac or t.dtype not in ("fp32", "fp16", "bf16"):
            return t
        fused = self.shared.get(("fused",))  # --impl hf: one projection for several (act_hf.fused)
        if fused is not None:
            if id(t.storage) not in fused:
                fused[id(t.storage)] = self.new(t.shape, ac, t.grad)
            return fused[id(t.storage)]
        return self.new(t.shape, ac, t.grad)

    def low_param(self, key: str, w: T) -> T:
        """Autocast's cast of a parameter: cached per parameter for the whole forward."""
        ac = self.policy.autocast
        if ac is None or w.dtype == ac:
            return w
        if not self.params.get(key, (0, "", False))[2]:  # autocast caches only leaves that require
            # grad (even under no_grad): a frozen one is cast per call. A weight copy, never a
            # gradient's shape, so it stays out of the step's `big` (its backward's gradient sizes)
            big = list(self.steps[-1].big) if self.steps else None
            t = self.new(w.shape, ac, False)
            if big is not None:
                self.steps[-1].big[:] = big
            return t
        if self.casts_cached:  # a decode step: the prefill made them (cost/decode.py counts them)
            return T(w.shape, ac, w.grad, Storage(0, "cast"))
        if key not in self.casts:
            self.casts[key] = Storage(nbytes(w.numel, ac), "cast")
            self.liveness.alloc(self.casts[key], self.steps[-1].path if self.steps else "")
        return T(w.shape, ac, w.grad, self.casts[key])

    # ---- ops that save (mirroring ATen's derivatives.yaml) ----------------------------------
    def mm(self, a: T, b: T, out_shape: Shape, b_key: str | None = None, conv: bool = False) -> T:
        """A matmul-like op under autocast (linear, bmm, conv): saves a if b needs grad and b if a
        needs grad. `b_key`: b is a parameter with that key (cast once, cached). `conv`: a
        convolution, whose one derivative (derivatives.yaml `convolution`: convolution_backward of
        input and weight together) saves both as soon as either needs grad: a first conv on an
        image keeps its weight (autocast's low copy of it, under autocast) though the image needs
        no gradient."""
        a = self.low(a)
        b = self.low_param(b_key, b) if b_key is not None else self.low(b)
        out = self.new(out_shape, a.dtype if self.policy.autocast is None else self.policy.autocast,
                       a.grad or b.grad)
        if b_key is not None and b.storage.kind == "cast" and self.steps:
            self.steps[-1].extra += b.storage.nbytes  # its gradient is computed low, then cast
        if b.grad or (conv and a.grad):
            self.save(a)
        if a.grad or (conv and b.grad):
            self.save(b)
        return out

    def pointwise(self, *ts: T, dtype: str | None = None) -> T:
        """A new tensor shaped like the first input (type promotion: fp32 wins over low dtypes)."""
        dt = dtype or promote(*(t.dtype for t in ts))
        return self.new(ts[0].shape, dt, any(t.grad for t in ts))

    # ---- equal copies --------------------------------------------------------------------------
    def mark(self) -> Mark:
        return Mark(len(self.steps), frozenset(self.saved), frozenset(self.casts), frozenset(self.params),
                    self.liveness.live, self.buffers, self.input_bytes)

    def lump(self, mark: Mark, copies: int, old: str, new: str, kept: int = 0):
        """Stand `copies` more copies of what ran since `mark` (one copy of a block, named `old`,
        whose input and output look alike) in by one step named `new`: their saved tensors, cached
        weight casts, parameters (keys renamed old -> new, with `counts`), buffers and the gradients
        they produce. False (nothing changed) when the copy is not self-contained.

        Exact for the readings of memory.py: a copy j of a chain of equal copies adds the same bytes,
        so every moment inside copy j is (that moment in copy 1) + (j - 1) x (one copy's bytes),
        whose maximum over j is at the first or the last copy, which are traced for real.
        `kept`: bytes of the copy's output its caller holds on to (a MoE's expert outputs, held
        until they are concatenated); then the Storage standing for the lumped copies' outputs
        is returned, for the caller to hold and drop as it does the copies' own (else True).
        """
        if self.sink is not None:  # inside a checkpointed region saved tensors are only noted: traced
            return False
        old_p, new_p = f"{old}.", f"{new}."
        new_params = [k for k in self.params if k not in mark.params]
        saved = [st for key, (st, _) in self.saved.items() if key not in mark.saved]
        casts = [(k, st) for k, st in self.casts.items() if k not in mark.casts]
        unsaved = sum(st.nbytes for _, st in casts if id(st) not in self.saved)
        grown = self.liveness.live - mark.live
        if (any(not k.startswith(old_p) for k in new_params) or self.input_bytes != mark.input_bytes
                or grown != sum(st.nbytes for st in saved) + unsaved + kept):
            return False
        step = self.begin()
        step.path = new
        groups = []
        for s in self.steps[mark.steps:-1]:
            for keys, k in (s.lumped or ((s.grad_params, 1),)):
                if keys:
                    groups.append((tuple(new_p + key[len(old_p):] for key in keys), k * copies))
        step.lumped = tuple(groups)
        for key in new_params:
            to = new_p + key[len(old_p):]
            self.params[to], self.shapes[to] = self.params[key], self.shapes[key]
            self.counts[to] = self.counts.get(key, 1) * copies
            self.origin[to] = self.origin.get(key, key)
        by_kind: dict[str, int] = {}
        for st in saved:
            by_kind[st.kind] = by_kind.get(st.kind, 0) + st.nbytes
        for kind, n in by_kind.items():
            st = self._lumped(Storage(n * copies, kind))
            self.saved[id(st)] = (st, self.here)
            if kind == "cast":
                self.casts[f"{new}.saved casts"] = st
        if unsaved:
            self.casts[f"{new}.casts"] = self._lumped(Storage(unsaved * copies, "cast"))
        self.buffers += (self.buffers - mark.buffers) * copies
        return self._lumped(Storage(kept * copies)) if kept else True

    def _lumped(self, st: Storage) -> Storage:
        """Live from now on, without a moment of its own (a lump's bytes arrive between copies)."""
        self.liveness.live += st.nbytes
        st.owner = self.liveness
        return st

    # ---- results ---------------------------------------------------------------------------
    def saved_bytes(self, kinds=("act", "cast", "input")) -> int:
        return sum(st.nbytes for st, _ in self.saved.values() if st.kind in kinds)

    def cast_cache_bytes(self) -> int:
        return sum(st.nbytes for st in self.casts.values())


def recompute_peak(events, saved, reach: int = 0) -> int:
    """The most bytes a checkpointed region's recomputation holds at once: its forward's
    allocations again, in order (`events`: (key, bytes), 0 for a free), where the tensors its
    backward needs (`saved` keys) now stay instead of dying, and the rest die as they did. The
    recomputation stops once the last of them is packed (torch.utils.checkpoint's early stop,
    _recomputation_hook: _StopRecomputationError), so what the forward allocated after that is
    not made again; the frames it unwinds free their locals. `reach`: the events before this
    position happen first anyway (an op packing operands made earlier, Trace.reach)."""
    stop = max((j for j, (key, n) in enumerate(events) if n and key in saved), default=-1)
    stop = max(stop, reach - 1)
    live, now, most = {}, 0, 0
    for key, n in events[:stop + 1]:
        if n:
            live[key] = n
            now += n
            most = max(most, now)
        elif key in live and key not in saved:
            now -= live.pop(key)
    return most


def nbytes(n: int, dtype: str) -> int:
    """Bytes of n elements; int64 (token ids, max-pool indices) on top of precision's dtypes."""
    return 8 * n if dtype == "int64" else _packed(n, dtype)


def promote(*dtypes: str) -> str:
    """Result dtype of a binary float op: fp32 beats bf16/fp16 (int inputs do not count)."""
    floats = [d for d in dtypes if d in ("fp32", "fp16", "bf16", "fp64")]
    if not floats:
        return dtypes[0]
    for d in ("fp64", "fp32"):
        if d in floats:
            return d
    return floats[0]
