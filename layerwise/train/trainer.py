"""train(model, config, run_dir): the loop, top to bottom.

One optimizer step = `grad_accum` micro-batches of `batch_size` (per process). The learning rate is
a pure function of the step (optim.lr_factor), the data order of epoch e is seeded by seed + e, and
every checkpoint holds the optimizer state and the RNG states, so a resumed run reaches bitwise the
weights of an uninterrupted one (deterministic CPU kernels, same thread count).
Feedback goes out through `on_event(kind, payload)`; nothing here prints. The pieces of a step are
in layerwise/train/loop.py.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from layerwise.build.runtime import record_routing
from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import Model
from layerwise.train import checkpoint as ck
from layerwise.train import integrity, rundir
from layerwise.train import distributed as dd
from layerwise.train import augment, loop
from layerwise.train.config import TrainConfig
from layerwise.train.balance import rebalance
from layerwise.train.data import Data, make_data
from layerwise.train.evaluate import evaluate
from layerwise.train.finetune import load_initial, merge_lora_state, merged_spec, transform
from layerwise.train.loop import DivergedError, Event, Run, State
from layerwise.train.losses import LossFn
from layerwise.train.memory import StepMemory, predicted_peak
from layerwise.train.mlm import Masker
from layerwise.train.metrics import MetricsLog
from layerwise.train.optim import make_optimizer, spec_nodes

__all__ = ["DivergedError", "RunResult", "train"]


@dataclass
class RunResult:
    run_dir: str
    status: str  # finished, early_stopped, interrupted
    steps: int
    total_steps: int
    epoch: int
    monitor: str
    best_metric: float | None
    best_step: int | None
    val: dict | None = None  # EvalResult.to_dict() of the last validation
    test: dict | None = None  # of the best checkpoint on the test split (finished / early_stopped)
    train_seconds: float = 0.0
    samples_per_s: float = 0.0
    predicted_peak_bytes: int | None = None
    measured_peak_bytes: int | None = None
    trainable_params: int = 0
    decay_params: list[str] = field(default_factory=list)
    no_decay_params: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def train(model: Model, config: TrainConfig, run_dir: str | Path, *, resume: bool = False,
          overwrite: bool = False, on_event: Event | None = None, hooks: dict | None = None) -> RunResult:
    """Train `model` as `config` says, writing RUN_DIR as docs/RUNS.md describes.

    resume=True continues from the newest good checkpoint in RUN_DIR (from step 0 if none was
    completed) with the run's own spec.yaml and config.yaml; only `config.epochs` /
    `config.max_steps` are taken from the caller (to extend it). A directory holding a run is
    refused unless resume or overwrite=True (which removes it); one process at a time owns it.
    hooks (tests, tools): {"after_step": fn(step, module)} runs after every optimizer step; it must
    leave the module in training mode (the loop sets it once, and again only if the root is not).
    Raises DivergedError on a non-finite loss, after keeping a loadable checkpoint.
    """
    run_dir = Path(run_dir)
    with rundir.Owner(run_dir, enabled=_main_process()) as owner:
        notes = owner.prepare(resume, overwrite)
        owner.set_status("running")
        try:
            result = _train(model, config, run_dir, resume, notes, on_event, hooks or {})
        except KeyboardInterrupt:  # the second Ctrl-C: stopped at once
            owner.set_status("interrupted")
            raise
        except BaseException as err:
            owner.set_status("failed", error=str(err).splitlines()[0] if str(err) else type(err).__name__)
            raise
        owner.set_status(result.status, steps=result.steps)
    return result


def _train(model: Model, config: TrainConfig, run_dir: Path, resume: bool, notes: list[str],
           on_event: Event | None, hooks: dict) -> RunResult:
    resume_from, warned = _resume_point(run_dir, resume)
    trained, cfg = _what_to_train(model, config, run_dir, resume)
    run, st = _set_up(trained, cfg, run_dir, resume, resume_from, on_event, hooks)
    run.warnings[:0] = notes + warned
    run.emit("start", {"model": trained.name, "task": trained.task, "total_steps": run.total, "start_step": st.step,
                       "steps_per_epoch": run.steps_per_epoch, "trainable_params": run.trainable,
                       "data": run.data.info.to_dict(), "predicted_peak_bytes": run.predicted,
                       "warnings": run.warnings, "rank": run.dist.rank, "world": run.dist.world})

    status, stop = "finished", _StopFlag()
    st.t0 = time.perf_counter()
    with stop.installed():
        while st.step < run.total:
            loss, grad_norm, lr = loop.optimizer_step(run, st)
            epoch_end = loop.advance(run, st)
            loop.log_step(run, st, loss, grad_norm, lr)
            evaluated = loop.due_eval(run, st, epoch_end)
            improved, early = loop.validate(run, st) if evaluated else (False, False)
            if loop.due_checkpoint(run, st, evaluated) or improved or early or stop.set or st.step == run.total:
                loop.checkpoint(run, st, best=improved)
            if early or stop.set:
                status = "early_stopped" if early else "interrupted"
                break
    return _finish(run, st, status)


def _main_process() -> bool:
    """Rank 0 owns the run directory (torchrun sets RANK before anything runs)."""
    return int(os.environ.get("RANK", "0")) == 0


# ---- set-up --------------------------------------------------------------------------------------
def _resume_point(run_dir: Path, resume: bool) -> tuple[Path | None, list[str]]:
    """(the newest good checkpoint or None, warnings about damaged newer ones)."""
    if not resume:
        return None, []
    if not (run_dir / "config.yaml").exists() or not (run_dir / "spec.yaml").exists():
        raise LayerwiseError(f"{run_dir}: nothing to resume (no spec.yaml and config.yaml of a run)")
    folder, warned = latest_good(run_dir / "checkpoints")
    if folder is None:
        warned.append(f"{run_dir}: no checkpoint was completed; resuming from step 0")
    return folder, warned


def _what_to_train(model: Model, config: TrainConfig, run_dir: Path, resume: bool) -> tuple[Model, TrainConfig]:
    """(spec, config): the caller's (after freeze / LoRA transforms), or on resume the run's own,
    with the caller's length."""
    if not resume:
        trained, cfg = transform(model, config), config
    else:
        from layerwise.spec import io as spec_io

        integrity.verify(run_dir / "spec.yaml")
        integrity.verify(run_dir / "config.yaml")
        trained = spec_io.load(run_dir / "spec.yaml")
        cfg = replace(TrainConfig.from_yaml(run_dir / "config.yaml"), epochs=config.epochs, max_steps=config.max_steps)
    from layerwise.blocks.norm import check_train_batch

    check_train_batch(trained, trained.input_shape(cfg.batch_size))
    augment.check(cfg.augment, cfg.input_noise, trained.input.kind)
    if trained.task == "regress" and cfg.monitor == "val_accuracy":
        raise LayerwiseError("monitor val_accuracy applies to classification; a regression run monitors val_loss")
    if cfg.precision == "fp16-mixed" and not cfg.device.startswith("cuda"):
        raise LayerwiseError("precision fp16-mixed needs a CUDA device; on CPU use bf16-mixed")
    return trained, cfg


def _set_up(trained: Model, cfg: TrainConfig, run_dir: Path, resume: bool, resume_from: Path | None,
            on_event: Event | None, hooks: dict) -> tuple[Run, State]:
    """Process group, module, data, optimizer, run directory; the state restored on resume."""
    dist = dd.setup(cfg.strategy, cfg.device)
    _determinism(cfg)
    step_memory = StepMemory(dist.device)
    module, wrapped, opt, groups, data = _build(trained, cfg, dist, resume_from)
    n_micro = len(data.train.sampler)
    steps_per_epoch = n_micro // cfg.grad_accum
    if steps_per_epoch == 0:
        raise LayerwiseError(f"one epoch has {n_micro} micro-batches, fewer than --grad-accum {cfg.grad_accum}")
    loss_fn = LossFn(cfg, trained.task, data.info.class_counts.get("train"))
    _prepare_dir(run_dir, trained, cfg, data, dist, resume)
    decay = set(groups.decay)
    record_routing(module)  # MoE layers keep their per-expert counts for the log
    run = Run(cfg=cfg, trained=trained, dist=dist, module=module, wrapped=wrapped, opt=opt, groups=groups,
              scaler=torch.amp.GradScaler("cuda") if cfg.precision == "fp16-mixed" else None,
              amp_dtype={"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}.get(cfg.precision),
              loss_fn=loss_fn, decay_params=[p for n, p in module.named_parameters() if n in decay], data=data,
              run_dir=run_dir, log=MetricsLog(run_dir, enabled=dist.main, tensorboard=cfg.tensorboard),
              total=cfg.max_steps or cfg.epochs * steps_per_epoch, n_micro=n_micro, steps_per_epoch=steps_per_epoch,
              trainable=sum(p.numel() for p in module.parameters() if p.requires_grad),
              warnings=list(data.info.warnings) + ([f"no spec leaf owns {groups.unmatched[:3]}: decay decided by ndim"]
                                                   if groups.unmatched else []),
              step_memory=step_memory, predicted=predicted_peak(trained, cfg),
              emit=on_event or _no_listener, listening=on_event is not None, after_step=hooks.get("after_step"),
              transform=_transform(cfg, data), max_norm_weights=_max_norm_weights(module, cfg),
              masker=Masker(data.info.mask_id) if trained.task == "mlm" else None)
    st = State()
    if resume_from is not None:
        st = loop.restore(resume_from, run)
    if resume:
        run.warnings.extend(run.log.truncate_after(st.step))
    run.wrapped.train()
    return run, st


def _no_listener(kind: str, payload: dict) -> None:
    pass


def _transform(cfg: TrainConfig, data: Data):
    if not (cfg.augment or cfg.input_noise):
        return None
    i = data.info
    return augment.Transform(cfg.augment, cfg.input_noise, i.normalise, tuple(i.mean), tuple(i.std))


def _max_norm_weights(module: torch.nn.Module, cfg: TrainConfig) -> list[torch.Tensor]:
    """The trained weights of every Linear and Conv layer (dim 0: the units)."""
    if not cfg.max_norm:
        return []
    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    weights = [m.weight for m in module.modules() if isinstance(m, kinds) and m.weight.requires_grad]
    if not weights:
        raise LayerwiseError("--max-norm constrains Linear/Conv weights; this model trains none")
    return weights


def _build(trained: Model, cfg: TrainConfig, dist: dd.Dist, resume_from: Path | None):
    """-> (module, wrapped, optimizer, parameter groups, data), the module on its device."""
    if not dist.device.startswith("cuda"):  # refused before anything is allocated (measure/budget.py)
        from layerwise.measure.budget import check_fits
        from layerwise.workload import Workload

        check_fits("train", trained, Workload(batch=cfg.batch_size), tensor_bytes=predicted_peak(trained, cfg) or 0)
    torch.manual_seed(cfg.seed)  # build() initialises from torch's RNG: same seed, same weights
    module = trained.build().to(dist.device)
    if cfg.init_from and resume_from is None:
        load_initial(module, trained.body, cfg.init_from)
    data = rebalance(make_data(cfg, trained, rank=dist.rank, world=dist.world), cfg, dist.rank, dist.world)
    blocks = _block_modules(trained, module)
    if cfg.checkpointing:
        for m in blocks:
            _checkpoint_forward(m)
    opt, groups = make_optimizer(module, trained.body, cfg)
    wrapped = dd.wrap(module, dist, blocks)
    if dist.strategy == "fsdp":  # fully_shard swapped the parameters for sharded ones
        opt, groups = make_optimizer(module, trained.body, cfg)
    return module, wrapped, opt, groups, data


# ---- the end -------------------------------------------------------------------------------------
def _finish(run: Run, st: State, status: str) -> RunResult:
    """Test the best checkpoint, merge LoRA, write result.json, emit "end"."""
    elapsed = time.perf_counter() - st.t0
    result = RunResult(run_dir=str(run.run_dir), status=status, steps=st.step, total_steps=run.total,
                       epoch=st.epoch, monitor=run.cfg.monitor, best_metric=st.best_metric, best_step=st.best_step,
                       val=st.last_val.to_dict() if st.last_val else None, train_seconds=elapsed,
                       samples_per_s=loop.samples_per_s(run, st, elapsed), predicted_peak_bytes=run.predicted,
                       measured_peak_bytes=st.measured, trainable_params=run.trainable,
                       decay_params=run.groups.decay, no_decay_params=run.groups.no_decay, warnings=run.warnings)
    if status != "interrupted":
        result.test = _final_test(run)
        if run.dist.main and run.cfg.lora_rank and run.cfg.merge_lora:
            _write_merged(run.run_dir, run.trained, run.ckpt_root)
    if run.dist.main:
        ck.atomic_write_text(run.run_dir / "result.json", json.dumps(result.to_dict(), indent=2) + "\n")
        integrity.record(run.run_dir, "result.json")
    run.emit("end", {"result": result.to_dict()})
    return result


def _final_test(run: Run) -> dict | None:
    """Test-split evaluation of the best checkpoint (the last one if no validation ran)."""
    root, data = run.ckpt_root, run.data
    if not len(data.test.sampler):
        return None
    folder = root / "best" if (root / "best").exists() else root / "last"
    dd.barrier(run.dist)
    if folder.exists():
        tensors, _ = ck.read_checkpoint(folder)
        dd.load_model_state(run.eval_module, run.dist, tensors, str(folder))
    ev = evaluate(run.eval_module, data.test, run.trained.task, n_classes=data.info.n_classes, device=run.device,
                  target_scale=data.info.target_scale, mask_id=data.info.mask_id)
    return ev.to_dict()


def _write_merged(run_dir: Path, trained: Model, ckpt_root: Path) -> None:
    from safetensors.torch import save_file

    from layerwise.spec import io as spec_io

    folder = ckpt_root / "best" if (ckpt_root / "best").exists() else ckpt_root / "last"
    tensors, _ = ck.read_checkpoint(folder)
    merged = merge_lora_state(trained.body, tensors)
    out = run_dir / "merged"
    out.mkdir(exist_ok=True)
    ck.atomic_write_text(out / "spec.yaml", spec_io.dump(merged_spec(trained)))
    tmp = out / ".model.safetensors.tmp"
    save_file(merged, str(tmp))
    ck.os.replace(tmp, out / "model.safetensors")
    integrity.record(out, "spec.yaml", "model.safetensors")


# ---- set-up helpers -------------------------------------------------------------------------------
def _determinism(cfg: TrainConfig) -> None:
    """CPU kernels are deterministic for a fixed thread count already; on CUDA ask torch for
    deterministic kernels (use_deterministic_algorithms imports the compiler stack: seconds)."""
    if cfg.deterministic and cfg.device.startswith("cuda"):
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def latest_good(ckpt_root: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint whose files match their checksums (last/ or the highest step-N), and a
    warning for each newer one that does not."""
    cands = [(s, 1, p) for s, p in ck.step_dirs(ckpt_root)]
    if (ckpt_root / "last").exists():
        cands.append((None, 0, ckpt_root / "last"))
    states, warned = [], []
    for step, order, folder in cands:
        try:
            states.append((ck.check_checkpoint(folder)["step"], order, folder))
        except LayerwiseError as err:
            warned.append((step, f"{err}; falling back to an earlier checkpoint"))
    best = max(states, key=lambda c: c[:2]) if states else None
    newer = [w for s, w in warned if best is None or s is None or s > best[0]]
    return (best[2] if best else None), newer


def _prepare_dir(run_dir: Path, trained: Model, cfg: TrainConfig, data: Data, dist, resume: bool) -> None:
    from layerwise.spec import io as spec_io

    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        written = ["config.yaml", "data.json"]
        if not resume:
            ck.atomic_write_text(run_dir / "spec.yaml", spec_io.dump(trained))
            written.append("spec.yaml")
        ck.atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())  # on resume: with the new length
        ck.atomic_write_text(run_dir / "data.json", json.dumps(data.info.to_dict(), indent=2) + "\n")
        if data.info.tokenizer_json:
            ck.atomic_write_text(run_dir / "tokenizer.json", data.info.tokenizer_json)
            written.append("tokenizer.json")
        integrity.record(run_dir, *written)
    dd.barrier(dist)


def _block_modules(trained: Model, module: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of every block of a layer stack (children of `repeat` nodes); if there is none,
    the root's children. The units of activation checkpointing and FSDP sharding."""
    nodes = spec_nodes(trained.body)
    paths = [f"{p}.{name}" if p else name for p, n in nodes.items() if n.type_name == "repeat" for name, _ in n.children()]
    if not paths:
        paths = [name for name, _ in trained.body.children()]
    out = []
    for p in paths:
        try:
            m = module.get_submodule(p)
        except AttributeError:
            continue
        if any(True for _ in m.parameters()):
            out.append(m)
    return out


def _checkpoint_forward(m: torch.nn.Module) -> None:
    """Recompute this module's activations in backward instead of saving them (names unchanged)."""
    from torch.utils.checkpoint import checkpoint

    inner = m.forward

    def forward(*args, **kwargs):
        if not torch.is_grad_enabled():
            return inner(*args, **kwargs)
        return checkpoint(inner, *args, use_reentrant=False, **kwargs)

    m.forward = forward


class _StopFlag:
    """Ctrl-C sets a flag; the loop saves at the end of the step and exits. A second Ctrl-C raises."""

    def __init__(self):
        self.set = False

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.set:
                raise KeyboardInterrupt
            self.set = True

        old = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old)
