"""Run one steady-state training step (or one inference) and measure it: the measure reading.

Training (DESIGN.md "Ground truth, defined"): step 1 warms up (creates optimizer state), step 2 is
measured: zero_grad(set_to_none=True), forward + loss, backward, optimizer.step(). With
grad_accum > 1 the measured micro-batch is a later one: gradients from the earlier micro-batches
are alive throughout and the backward accumulates into them. Parameters, buffers, gradients,
optimizer state and the input batch are registered with the tracker before the step starts.

By default everything runs under FakeTensorMode (no allocation: a 7B step takes seconds); the
same ops run with `fake=False` on real CPU tensors (plus peak RSS), or on a GPU when
`workload.device == "cuda"` and one is present (plus torch.cuda's peaks). Python's cyclic GC is
paused during the step so frees happen at the same points in every run (storages that were
garbage before the step are not tracked, so they cannot move the count).
"""
from __future__ import annotations

import contextlib
import copy
import gc
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from layerwise.build import runtime
from layerwise.measure import setup
from layerwise.measure.budget import check_run
from layerwise.measure.flops import counting_context
from layerwise.measure.procmem import cuda_peaks, cuda_reset, hwm_bytes, malloc_settings, reset_hwm, rss_bytes
from layerwise.measure.result import CudaStats, RssStats, StepMeasurement
from layerwise.measure.tracker import StorageTracker
from layerwise.spec.applies import check_applies
from layerwise.spec.errors import WorkloadError
from layerwise.spec.shapes import prod
from layerwise.workload import Workload


@dataclass(frozen=True)
class Target:
    """What to build and what to feed it. `shape` includes the batch dimension."""

    build: Callable[[], nn.Module]
    spec: object  # the spec tree (for finding repeated blocks), or None
    kind: str  # tokens | image | features | sequence
    shape: tuple[int, ...]
    vocab_size: int
    task: str  # lm | classify | none
    # a model that takes its own loss (transformers' `model(x, labels=...).loss`, measure/hf.py):
    # (module, x, targets) -> loss, and the output shape the targets are drawn from
    loss: Callable | None = None
    out_shape: tuple[int, ...] | None = None


def target_of(model, workload: Workload, *, input_shape=None, task=None, input_kind=None, vocab_size=0) -> Target:
    """A layerwise Model (input and task from the spec), a Block, an nn.Module or a factory."""
    from layerwise.measure.hf import HFModel
    from layerwise.spec.base import Block
    from layerwise.spec.model import Model

    if isinstance(model, HFModel):
        return Target(model.build, None, model.kind, model.shape, model.vocab_size, model.task,
                      model.loss, model.out_shape)
    if isinstance(model, Model):
        check_applies(model, workload)
        shape = model.input_shape(workload.batch, workload.seq, workload.image)
        return Target(model.build, model.body, model.input.kind, shape, model.input.vocab_size,
                      task or model.task)
    if input_shape is None:
        raise WorkloadError("measure_step: a bare block or module needs input_shape (with the batch dimension)")
    shape = (workload.batch, *tuple(input_shape)[1:])
    kind = input_kind or ("tokens" if vocab_size else "features")
    if isinstance(model, Block):
        return Target(model.build, model, kind, shape, vocab_size, task or "none")
    if isinstance(model, nn.Module):
        return Target(lambda: model, None, kind, shape, vocab_size, task or "none")
    if callable(model):
        return Target(model, None, kind, shape, vocab_size, task or "none")
    raise WorkloadError(f"measure_step: expected a Model, Block, nn.Module or factory, got {type(model).__name__}")


def _check_supported(workload: Workload) -> None:
    """Settings the single-process measure reading cannot run (the cost reading covers them)."""
    for name, value, ok in (("zero", workload.zero, 0), ("dp", workload.dp, 1), ("tp", workload.tp, 1),
                            ("pp", workload.pp, 1)):
        if value != ok:
            raise WorkloadError(f"--{name} {value}: the measure reading runs one process on one device; "
                                f"use `layerwise memory` for sharded or parallel set-ups")
    if workload.quant != "none":
        raise WorkloadError(f"--quant {workload.quant}: quantized weights are not measured yet; use `layerwise memory`")


def measure_step(model, workload: Workload = Workload(), *, fake: bool = True, input_shape=None,
                 task: str | None = None, input_kind: str | None = None, vocab_size: int = 0,
                 count_flops: bool = True, checkpoint_modules: tuple[str, ...] = (),
                 by_module: bool = False, timeline: bool = False) -> StepMeasurement:
    """Peak live tensor bytes (with its phase and breakdown) and FLOPs of one step of `model`.

    checkpoint_modules: with `--checkpointing full`, the module classes to checkpoint (by class
    name) instead of the spec's repeated blocks. by_module: also report the bytes each top-level
    submodule saves for backward (one extra forward, after the measured step). timeline: the live
    bytes after every op too (`StepMeasurement.timeline`)."""
    _check_supported(workload)
    model = _with_lora(model, workload)
    target = target_of(model, workload, input_shape=input_shape, task=task, input_kind=input_kind,
                       vocab_size=vocab_size)
    device, notes = _device(workload, fake)
    if workload.mode == "infer" and workload.grad_accum != 1:
        raise WorkloadError("--grad-accum applies to training (--mode train)")
    check_run("measure", model, workload, real=not fake)
    fake_mode = _fake_mode() if fake else contextlib.nullcontext()
    from layerwise.measure.cuda_conventions import cuda_conventions

    with fake_mode, counting_context(), cuda_conventions(workload.device == "cuda" and device == "cpu"):
        module = _build(target, fake_mode if fake else None, device)
        setup.apply_precision(module, workload)
        setup.apply_runtime(module, workload, fake=fake)
        x = setup.make_input(target.kind, target.shape, target.vocab_size, workload).to(device)
        if workload.mode == "infer":
            run = _Inference(module, x, workload, target, device, fake, count_flops)
        else:
            if target.loss is None:  # an HF model checkpoints through its own switch (measure/hf.py)
                setup.apply_checkpointing(module, workload, target.spec, checkpoint_modules)
            run = _Training(module, x, workload, target, device, fake, count_flops)
            run.by_module = by_module
        run.name = getattr(model, "name", type(module).__name__)
        if not fake:
            runtime.record_routing(module)
        if not timeline:
            return _with_routing(run.measure(notes), module, target, fake)
        from layerwise.measure.timeline import ModulePaths

        with ModulePaths(module) as paths:
            run.paths = paths
            return _with_routing(run.measure(notes), module, target, fake)


def _with_routing(result: StepMeasurement, module: nn.Module, target: Target, fake: bool) -> StepMeasurement:
    """MoE models: the routing of the measured forward. Real tensors: the module's own counts
    (learned routing). Fake: balanced routing's, from the spec (fake values cannot be read)."""
    if not fake:
        stats = runtime.routing_stats(module)
        return replace(result, routing={**stats, "routing": "learned"}) if stats else result
    from layerwise.spec.base import walk

    if target.spec is None:
        return result
    counts, dropped = [], 0
    for info in walk(target.spec, target.shape):
        if info.block.type_name == "moe":
            c, d = info.block.balanced_load(prod(info.out_shape[:-1]))
            counts, dropped = [a + b for a, b in zip(counts, c)] if counts else c, dropped + d
    if not counts:
        return result
    return replace(result, routing={"expert_counts": counts, "dropped": dropped,
                                    "overflow_rate": dropped / sum(counts), "routing": "balanced"})


def _with_lora(model, workload: Workload):
    """--lora-rank R: the same transform as the cost reading (adapters on q_proj and v_proj, the
    rest frozen), applied to the spec before it is built."""
    if not workload.lora_rank:
        return model
    from layerwise.spec.base import Block
    from layerwise.spec.lora import apply_lora
    from layerwise.spec.model import Model

    if not isinstance(model, (Model, Block)):
        raise WorkloadError("--lora-rank needs a layerwise spec (a module cannot be rewritten)")
    return apply_lora(model, workload.lora_rank)


def _fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode()


def _device(workload: Workload, fake: bool) -> tuple[str, tuple[str, ...]]:
    if workload.device != "cuda":
        return "cpu", ()
    if not fake and torch.cuda.is_available():
        return "cuda", ()
    if not fake:
        raise WorkloadError("--device cuda with --real needs a GPU; without --real the fake step runs on "
                            "the CPU with CUDA's implementation defaults")
    return "cpu", ("--device cuda emulated on the CPU: CUDA's optimizer default (foreach), 1-byte dropout "
                   "masks, in-kernel attention dropout and fp32 layer_norm under autocast "
                   "(layerwise/measure/cuda_conventions.py); the rest of autocast follows the CPU policy",)


def _build(target: Target, fake_mode, device: str) -> nn.Module:
    """The module, its parameters fake (built inside FakeTensorMode) or real on `device`."""
    torch.manual_seed(0)
    module = target.build()
    if fake_mode is not None and _has_real_tensors(module):
        module = _fakeify(module, fake_mode)  # a module built before (real or meta)
    return module.to(device) if device != "cpu" else module


def _has_real_tensors(module: nn.Module) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return any(not isinstance(t, FakeTensor) for t in (*module.parameters(), *module.buffers()))


def _fakeify(module: nn.Module, fake_mode) -> nn.Module:
    """A copy of `module` whose parameters and buffers are fake CPU tensors of the same shapes
    (tied ones stay tied): deepcopy with a memo that maps each real tensor to its stand-in."""
    memo: dict[int, object] = {}
    for t in (*module.parameters(), *module.buffers()):
        if id(t) not in memo:
            with fake_mode:
                f = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu")
            memo[id(t)] = nn.Parameter(f, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else f
    return copy.deepcopy(module, memo)


class _Step:
    """Shared by training and inference: the tracker, the RSS/CUDA readers, the result."""

    def __init__(self, module, x, workload: Workload, target: Target, device: str, fake: bool, count_flops: bool):
        self.module, self.x, self.workload, self.target, self.device = module, x, workload, target, device
        self.fake, self.count_flops = fake, count_flops
        self.paths = None  # a ModulePaths: record the timeline
        self.name = "model"

    def _tracker(self) -> StorageTracker:
        return StorageTracker(fake_scalars=self.fake, count_flops=self.count_flops, paths=self.paths)

    def _measured(self, tracker: StorageTracker, body) -> tuple[RssStats | None, CudaStats | None]:
        """Run `body()` under the tracker with GC paused, reading RSS or CUDA peaks around it."""
        real_cpu = not self.fake and self.device == "cpu"
        if not self.fake:
            gc.collect()  # garbage from earlier work would sit in the RSS baseline (fake: not tracked)
        gc.disable()
        try:
            if self.device == "cuda":
                cuda_reset(self.device)
            start = rss_bytes() if real_cpu else None
            reset_ok = reset_hwm() if real_cpu else False
            with tracker:
                body()
            rss = None
            if real_cpu and start is not None and reset_ok:
                rss = RssStats(start, hwm_bytes(), tracker.phase_peaks["setup"].total, malloc_settings())
            cuda = CudaStats(*cuda_peaks(self.device)) if self.device == "cuda" else None
        finally:
            gc.enable()
            tracker.remove_hooks()
        return rss, cuda

    by_module = False

    def _result(self, tracker: StorageTracker, rss, cuda, notes) -> StepMeasurement:
        peak = tracker.peak
        return StepMeasurement(
            params=module_params(self.module), saved_by_module=self._saved_by_module(),
            peak_bytes=peak.total, peak_phase=peak.phase, components=peak.components(),
            detail={k: v for k, v in peak.by_category.items() if v}, fake=self.fake,
            phase_peaks={k: v.total for k, v in tracker.phase_peaks.items()},
            phase_components={k: v.components() for k, v in tracker.phase_peaks.items()},
            flops_forward=tracker.flops["forward"], flops_backward=tracker.flops["backward"],
            rss=rss, cuda=cuda, notes=tuple(notes), timeline=self._timeline(tracker),
            cuda_allocator=tracker.cuda_allocator_peaks() if self.workload.device == "cuda" else None)

    def _timeline(self, tracker: StorageTracker):
        if tracker.moments is None:
            return None
        from layerwise.cost.timeline import from_moments
        from layerwise.measure.tracker import CATEGORY_COMPONENT

        def components(by_category: dict[str, int]) -> dict[str, int]:
            out: dict[str, int] = {}
            for cat, n in by_category.items():
                out[CATEGORY_COMPONENT[cat]] = out.get(CATEGORY_COMPONENT[cat], 0) + n
            return out

        return from_moments(self.name, "measured", ((ph, op, path, components(cats))
                                                    for ph, op, path, cats in tracker.moments))


def module_params(module: nn.Module) -> dict[str, int]:
    """Unique parameters (tied ones once) split trainable/frozen, and buffer elements."""
    params = list(module.parameters())  # nn.Module.parameters() already yields a tied tensor once
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    return {"total": total, "trainable": trainable, "frozen": total - trainable,
            "buffers": sum(b.numel() for b in module.buffers())}


class _Training(_Step):
    def __init__(self, *args):
        super().__init__(*args)
        module = self.module
        module.train()
        trainable = [p for p in module.parameters() if p.requires_grad]
        if not trainable:
            raise WorkloadError("--mode train: the model has no trainable parameters")
        self.optimizer = setup.make_optimizer(trainable, self.workload)
        self.targets = None

    def _forward_loss(self):
        with setup.autocast(self.workload, self.device):
            if self.target.loss is not None:
                if self.targets is None and self.target.task != "none":
                    self.targets = setup.make_targets(self.target.out_shape, self.target.task).to(self.device)
                return self.target.loss(self.module, self.x, self.targets)
            out = self.module(self.x)
            if self.targets is None and self.target.task != "none":
                self.targets = setup.make_targets(out.shape, self.target.task).to(self.device)
            loss = setup.loss_of(out, self.targets, self.target.task)  # `out` dies here unless saved
            return setup.with_router_loss(loss, self.module)

    def _warm_up(self) -> None:
        """Step 1: creates the optimizer state (and, with grad_accum > 1, the gradients of an
        earlier micro-batch). Under fake tensors `.item()` needs the tracker's scalar stand-in."""
        with StorageTracker(fake_scalars=self.fake):
            self.optimizer.zero_grad(set_to_none=True)
            if self.fake:
                self._state_from_zero_grads()
            else:  # real runs warm up for real: lazy library caches must not land in the RSS peak
                self._forward_loss().backward()
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.workload.grad_accum > 1:  # an earlier micro-batch of step 2: gradients exist
                if self.fake:
                    self._zero_grads()
                else:
                    self._forward_loss().backward()

    def _state_from_zero_grads(self) -> None:
        """The fake warm-up: optimizer.step() on zero gradients of each parameter's layout (what
        AccumulateGrad gives) creates the same state tensors as a full step, at a third of the cost."""
        shape = self._output_shape()
        if self.target.task != "none":
            self.targets = setup.make_targets(shape, self.target.task).to(self.device)
        self._zero_grads()
        self.optimizer.step()

    def _zero_grads(self) -> None:
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                p.grad = torch.zeros_like(p)

    def _output_shape(self) -> tuple[int, ...]:
        if self.target.out_shape is not None:
            return self.target.out_shape
        if self.target.spec is not None and hasattr(self.target.spec, "out_shape"):
            return tuple(self.target.spec.out_shape(tuple(self.x.shape)))
        with torch.no_grad(), setup.autocast(self.workload, self.device):
            out = self.module(self.x)
        return tuple((out[0] if isinstance(out, (tuple, list)) else out).shape)

    def _step(self, tracker: StorageTracker) -> None:
        if self.workload.grad_accum == 1:
            self.optimizer.zero_grad(set_to_none=True)
        with tracker.phase("forward"):
            loss = self._forward_loss()
        with tracker.phase("backward"):
            loss.backward()
            del loss
        with tracker.phase("optimizer"):
            self.optimizer.step()
        tracker.boundary("optimizer_end")

    def measure(self, notes) -> StepMeasurement:
        self._warm_up()
        tracker = self._tracker()
        tracker.register_module(self.module)
        tracker.register_optimizer(self.optimizer)
        tracker.register([self.x, self.targets], "inputs")
        rss, cuda = self._measured(tracker, lambda: self._step(tracker))
        tracker.register_optimizer(self.optimizer)  # state created inside step 2 (none, normally)
        return self._result(tracker, rss, cuda, notes)

    def _saved_by_module(self) -> dict[str, int]:
        if not self.by_module:
            return {}
        from layerwise.measure.saved import saved_by_module

        with StorageTracker(fake_scalars=self.fake):  # .item() under fake tensors, as in the step
            return saved_by_module(self.module, self._forward_loss)


class _Inference(_Step):
    """One prefill forward under no_grad; with --new-tokens, decode steps through a KV cache."""

    def _saved_by_module(self) -> dict[str, int]:
        return {}  # nothing is saved for backward in inference

    def measure(self, notes) -> StepMeasurement:
        self.module.eval()
        tracker = self._tracker()
        tracker.register_module(self.module)
        tracker.register(self.x, "inputs")
        rss, cuda = self._measured(tracker, lambda: self._run(tracker))
        return self._result(tracker, rss, cuda, notes)

    def _run(self, tracker: StorageTracker) -> None:
        with torch.no_grad(), setup.autocast(self.workload, self.device):
            if self.workload.new_tokens == 0:
                with tracker.phase("forward"):
                    out = self.module(self.x)
                    del out
                tracker.boundary("forward_end")
                return
            _decode(self.module, self.x, self.workload, tracker)


_KV_TORCH = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _check_kv_dtype(workload: Workload, compute: torch.dtype) -> None:
    """Our build keeps the cache in the compute dtype (its attention reads it as it is); another
    --kv-dtype needs kernels that convert while reading, which only the cost reading describes."""
    if workload.kv_dtype is not None and _KV_TORCH.get(workload.kv_dtype) != compute:
        have = next((k for k, v in _KV_TORCH.items() if v == compute), str(compute))
        raise WorkloadError(f"--kv-dtype {workload.kv_dtype}: the built model caches keys and values in its compute "
                            f"dtype ({have} under --precision {workload.precision}), so only the cost reading "
                            f"(`layerwise memory`) sizes a {workload.kv_dtype} cache")


def _decode(module: nn.Module, x: torch.Tensor, workload: Workload, tracker: StorageTracker) -> None:
    """The KV-cache hook. A module that supports decoding provides
    `init_kv_cache(batch, max_len, dtype) -> tensors` and `forward(tokens, kv_cache=, start_pos=)`.
    The cache is registered as `kv_cache`; the prefill and each decode step run in "forward"."""
    init = getattr(module, "init_kv_cache", None)
    if init is None or x.dtype != torch.int64:
        raise WorkloadError("--new-tokens: this built module has no KV cache (init_kv_cache(batch, max_len, "
                            "dtype) and forward(tokens, kv_cache=, start_pos=)); measure with --new-tokens 0")
    batch, seq = x.shape[:2]
    dtype = setup.MIXED_DTYPES.get(workload.precision, setup.input_dtype(workload))
    _check_kv_dtype(workload, dtype)
    # an encoder-decoder's input is (B, S, 2): its cross-attention cache holds the S-long memory
    cache = init(batch, seq + workload.new_tokens, dtype, *((seq,) if x.dim() == 3 else ()))
    tracker.register(cache, "kv_cache")
    with tracker.phase("forward"):
        out = module(x, kv_cache=cache, start_pos=0)
        for i in range(workload.new_tokens):
            nxt = out[:, -1:].argmax(-1)  # (B, 1) greedy next token
            out = module(nxt, kv_cache=cache, start_pos=seq + i)
        del out
