"""train(model, config, run_dir): the loop, top to bottom.

One optimizer step = `grad_accum` micro-batches of `batch_size` (per process). The learning rate is
a pure function of the step (optim.lr_factor), the data order of epoch e is seeded by seed + e, and
every checkpoint holds the optimizer state and the RNG states, so a resumed run reaches bitwise the
weights of an uninterrupted one (deterministic CPU kernels, same thread count).
Feedback goes out through `on_event(kind, payload)`; nothing here prints.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import Model
from layerwise.train import checkpoint as ck
from layerwise.train import distributed as dd
from layerwise.train.config import TrainConfig
from layerwise.train.data import Data, make_data
from layerwise.train.evaluate import EvalResult, evaluate
from layerwise.train.finetune import load_initial, merge_lora_state, merged_spec, transform
from layerwise.train.losses import LossFn, mixup, penalty
from layerwise.train.memory import StepMemory, predicted_peak
from layerwise.train.metrics import MetricsLog
from layerwise.train.optim import lr_factor, make_optimizer, set_lr, spec_nodes

Event = Callable[[str, dict], None]


class DivergedError(LayerwiseError):
    """The loss (or gradient norm) became NaN or infinite; the last good checkpoint is kept."""


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


@dataclass
class _State:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0


def train(model: Model, config: TrainConfig, run_dir: str | Path, *, resume: bool = False,
          on_event: Event | None = None, hooks: dict | None = None) -> RunResult:
    """Train `model` as `config` says, writing RUN_DIR as docs/RUNS.md describes.

    resume=True continues from the newest checkpoint in RUN_DIR with the run's own spec.yaml and
    config.yaml; only `config.epochs` / `config.max_steps` are taken from the caller (to extend it).
    hooks (tests, tools): {"after_step": fn(step, module)} runs after every optimizer step.
    Raises DivergedError on a non-finite loss, after keeping a loadable checkpoint.
    """
    emit = on_event or (lambda kind, payload: None)
    hooks = hooks or {}
    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    resume_from = _latest(ckpt_root) if resume else None
    if resume and resume_from is None:
        raise LayerwiseError(f"{run_dir}: nothing to resume (no checkpoints/last or step-N)")
    if resume_from is not None:  # the run's own spec and config are authoritative
        from layerwise.spec import io as spec_io

        trained = spec_io.load(run_dir / "spec.yaml")
        config = replace(TrainConfig.from_yaml(run_dir / "config.yaml"), epochs=config.epochs, max_steps=config.max_steps)
    else:
        trained = transform(model, config)
    cfg = config
    if cfg.precision == "fp16-mixed" and not cfg.device.startswith("cuda"):
        raise LayerwiseError("precision fp16-mixed needs a CUDA device; on CPU use bf16-mixed")
    dist = dd.setup(cfg.strategy, cfg.device)
    device = dist.device
    _determinism(cfg)
    step_memory = StepMemory(device)

    # ---- model, data, optimizer ----------------------------------------------------------------
    torch.manual_seed(cfg.seed)  # build() initialises from torch's RNG: same seed, same weights
    module = trained.build().to(device)
    if cfg.init_from and resume_from is None:
        load_initial(module, trained.body, cfg.init_from)
    data = make_data(cfg, trained, rank=dist.rank, world=dist.world)
    blocks = _block_modules(trained, module)
    if cfg.checkpointing:
        for m in blocks:
            _checkpoint_forward(m)
    opt, groups = make_optimizer(module, trained.body, cfg)
    wrapped = dd.wrap(module, dist, blocks)
    if dist.strategy == "fsdp":  # fully_shard swapped the parameters for sharded ones
        opt, groups = make_optimizer(module, trained.body, cfg)
    loss_fn = LossFn(cfg, trained.task, data.info.class_counts.get("train"))
    decay_params = [p for n, p in module.named_parameters() if n in set(groups.decay)]
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16-mixed" else None
    amp_dtype = {"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}.get(cfg.precision)

    n_micro = len(data.train.sampler)
    steps_per_epoch = n_micro // cfg.grad_accum
    if steps_per_epoch == 0:
        raise LayerwiseError(f"one epoch has {n_micro} micro-batches, fewer than --grad-accum {cfg.grad_accum}")
    total = cfg.max_steps or cfg.epochs * steps_per_epoch

    st = _State()
    _prepare_dir(run_dir, trained, cfg, data, dist, resume_from)
    log = MetricsLog(run_dir, enabled=dist.main, tensorboard=cfg.tensorboard)
    if resume_from is not None:
        st = _restore(resume_from, module, wrapped, opt, scaler, dist)
        log.truncate_after(st.step)
    warnings = list(data.info.warnings) + ([f"no spec leaf owns {groups.unmatched[:3]}: decay decided by ndim"]
                                           if groups.unmatched else [])
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    predicted = predicted_peak(trained, cfg)
    emit("start", {"model": trained.name, "task": trained.task, "total_steps": total, "start_step": st.step,
                   "steps_per_epoch": steps_per_epoch, "trainable_params": trainable, "data": data.info.to_dict(),
                   "predicted_peak_bytes": predicted, "warnings": warnings, "rank": dist.rank, "world": dist.world})

    # ---- the loop ------------------------------------------------------------------------------
    stop = _StopFlag()
    status, last_val, measured = "finished", None, None
    it, t0, seen, window = None, time.perf_counter(), 0, []
    with stop.installed():
        while st.step < total:
            if it is None:
                data.train.sampler.set_epoch(st.epoch, st.batch_in_epoch)
                it = iter(data.train)
            set_lr(opt, lr_factor(st.step, total, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio))
            wrapped.train()
            measuring = measured is None and (st.step == 1 or st.step == total - 1)  # the 2nd step, or the only one
            if measuring:
                step_memory.begin(module, opt)
            loss_sum = 0.0
            for i in range(cfg.grad_accum):
                x, y = next(it)
                x, y = x.to(device), y.to(device)
                sync = dist.strategy != "ddp" or i == cfg.grad_accum - 1
                with (contextlib.nullcontext() if sync else wrapped.no_sync()):
                    loss = _forward_loss(wrapped, x, y, cfg, loss_fn, amp_dtype, device)
                    if cfg.l1 or cfg.l2:
                        loss = loss + penalty(decay_params, cfg.l1, cfg.l2)
                    value = loss.item()
                    if not dd.all_true(math.isfinite(value), dist):
                        _diverged(st, value, module, wrapped, opt, scaler, dist, ckpt_root, cfg)
                    loss_sum += value
                    (scaler.scale(loss / cfg.grad_accum) if scaler else loss / cfg.grad_accum).backward()
                seen += x.shape[0]
            grad_norm = _clip(wrapped, opt, cfg, scaler)
            if grad_norm is not None and not dd.all_true(math.isfinite(grad_norm), dist) and scaler is None:
                _diverged(st, grad_norm, module, wrapped, opt, scaler, dist, ckpt_root, cfg, what="gradient norm")
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            if measuring:
                measured = step_memory.end()  # after the step, before zero_grad frees the gradients
                emit("memory", {"predicted_peak_bytes": predicted, "measured_peak_bytes": measured, "device": device})
            opt.zero_grad(set_to_none=True)
            st.step += 1
            st.batch_in_epoch += cfg.grad_accum
            if "after_step" in hooks:
                hooks["after_step"](st.step, module)
            window.append(loss_sum / cfg.grad_accum)
            epoch_end = st.batch_in_epoch + cfg.grad_accum > n_micro
            if epoch_end:
                st.epoch, st.batch_in_epoch, it = st.epoch + 1, 0, None
            elapsed = time.perf_counter() - t0
            lr = opt.param_groups[0]["lr"]
            if st.step % cfg.log_every == 0 or st.step == total:
                row = {"step": st.step, "epoch": st.epoch, "kind": "train", "loss": sum(window) / len(window),
                       "lr": lr, "grad_norm": grad_norm, "samples_per_s": seen * dist.world / max(elapsed, 1e-9),
                       "time_s": elapsed}
                window = []
                log.write(row)
            emit("step", {"step": st.step, "total": total, "loss": loss_sum / cfg.grad_accum, "lr": lr,
                          "samples_per_s": seen * dist.world / max(elapsed, 1e-9), "epoch": st.epoch})
            # -- validation, early stopping, checkpoints
            do_eval = (st.step % cfg.eval_every == 0) if cfg.eval_every else epoch_end
            do_eval = do_eval or st.step == total
            improved, early = False, False
            if do_eval and len(data.val.sampler):
                eval_module = wrapped if dist.strategy == "fsdp" else module
                val = itertools.islice(data.val, cfg.eval_batches) if cfg.eval_batches else data.val
                ev = evaluate(eval_module, val, trained.task, n_classes=data.info.n_classes, device=device,
                              autocast_dtype=amp_dtype if amp_dtype == torch.bfloat16 else None)
                last_val = ev
                log.write({"step": st.step, "epoch": st.epoch, "kind": "val", "loss": ev.loss,
                           "accuracy": ev.accuracy, "perplexity": ev.perplexity})
                emit("eval", {"step": st.step, "split": "val", "result": ev.to_dict()})
                improved, early = _track(st, ev, cfg)
            do_ckpt = (st.step % cfg.checkpoint_every == 0) if cfg.checkpoint_every else do_eval
            do_ckpt = do_ckpt or improved or st.step == total or early or stop.set
            if do_ckpt:
                if not dd.all_true(_finite(module), dist):  # never overwrite a good checkpoint with NaN weights
                    _diverged(st, float("nan"), module, wrapped, opt, scaler, dist, ckpt_root, cfg,
                              what="weights", at=st.step)
                _save(st, module, wrapped, opt, scaler, dist, ckpt_root, cfg, best=improved)
            if early:
                status = "early_stopped"
                break
            if stop.set:
                status = "interrupted"
                break

    # ---- the end -------------------------------------------------------------------------------
    elapsed = time.perf_counter() - t0
    result = RunResult(run_dir=str(run_dir), status=status, steps=st.step, total_steps=total, epoch=st.epoch,
                       monitor=cfg.monitor, best_metric=st.best_metric, best_step=st.best_step,
                       val=last_val.to_dict() if last_val else None, train_seconds=elapsed,
                       samples_per_s=seen * dist.world / max(elapsed, 1e-9), predicted_peak_bytes=predicted,
                       measured_peak_bytes=measured, trainable_params=trainable, decay_params=groups.decay,
                       no_decay_params=groups.no_decay, warnings=warnings)
    if status != "interrupted":
        result.test = _final_test(module, wrapped, dist, ckpt_root, data, trained, device)
        if dist.main and cfg.lora_rank and cfg.merge_lora:
            _write_merged(run_dir, trained, ckpt_root)
    if dist.main:
        ck.atomic_write_text(run_dir / "result.json", json.dumps(result.to_dict(), indent=2) + "\n")
    emit("end", {"result": result.to_dict()})
    return result


# ---- pieces of the loop ---------------------------------------------------------------------------
def _forward_loss(wrapped, x, y, cfg: TrainConfig, loss_fn: LossFn, amp_dtype, device: str):
    autocast = (torch.autocast(device_type=device.split(":")[0], dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
    with autocast:
        if cfg.mixup_alpha > 0:
            x, ya, yb, lam = mixup(x, y, cfg.mixup_alpha)
            logits = wrapped(x)
            return lam * loss_fn(logits, ya) + (1.0 - lam) * loss_fn(logits, yb)
        return loss_fn(wrapped(x), y)


def _clip(wrapped, opt, cfg: TrainConfig, scaler) -> float | None:
    if not cfg.grad_clip:
        return None
    if scaler:
        scaler.unscale_(opt)
    params = [p for g in opt.param_groups for p in g["params"]]
    return float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))


def _track(st: _State, ev: EvalResult, cfg: TrainConfig) -> tuple[bool, bool]:
    """(improved, stop early) for the monitored validation metric."""
    value = ev.loss if cfg.monitor == "val_loss" else ev.accuracy
    better = st.best_metric is None or (value < st.best_metric if cfg.monitor == "val_loss" else value > st.best_metric)
    if better and math.isfinite(value):
        st.best_metric, st.best_step, st.bad_evals = float(value), st.step, 0
        return True, False
    st.bad_evals += 1
    return False, bool(cfg.patience and st.bad_evals >= cfg.patience)


def _save(st: _State, module, wrapped, opt, scaler, dist, ckpt_root: Path, cfg: TrainConfig, best: bool) -> None:
    model_sd, opt_sd = dd.full_states(wrapped if dist.strategy == "fsdp" else module, opt, dist)
    if dist.main:
        state = {"step": st.step, "epoch": st.epoch, "batch_in_epoch": st.batch_in_epoch, "optimizer": opt_sd,
                 "scheduler": {"step": st.step}, "scaler": scaler.state_dict() if scaler else None,
                 "rng": ck.rng_state(), "best_metric": st.best_metric, "best_step": st.best_step,
                 "bad_evals": st.bad_evals}
        name = f"step-{st.step}"
        ck.save_checkpoint(ckpt_root, name, model_sd, state)
        ck.copy_checkpoint(ckpt_root, name, "last")
        if best:
            ck.copy_checkpoint(ckpt_root, name, "best")
        ck.prune(ckpt_root, cfg.keep_last)
    dd.barrier(dist)


def _restore(folder: Path, module, wrapped, opt, scaler, dist) -> _State:
    tensors, state = ck.read_checkpoint(folder)
    if dist.strategy == "fsdp":
        dd.load_full_states(wrapped, opt, dist, tensors, state.get("optimizer"))
    else:
        ck.load_module_state(module, tensors, str(folder))
    if dist.strategy != "fsdp" and state.get("optimizer"):
        opt.load_state_dict(state["optimizer"])
    if scaler and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    ck.set_rng_state(state["rng"])
    return _State(step=state["step"], epoch=state["epoch"], batch_in_epoch=state["batch_in_epoch"],
                  best_metric=state.get("best_metric"), best_step=state.get("best_step"),
                  bad_evals=state.get("bad_evals", 0))


def _finite(module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def _diverged(st, value, module, wrapped, opt, scaler, dist, ckpt_root: Path, cfg, what: str = "loss",
              at: int | None = None):
    """Keep a loadable checkpoint of the last good weights, then stop with a clear message."""
    finite = _finite(module)
    if finite:  # this step's update has not happened: the weights are those after step `st.step`
        opt.zero_grad(set_to_none=True)
        _save(st, module, wrapped, opt, scaler, dist, ckpt_root, cfg, best=False)
        where = ckpt_root / "last"
    else:
        where = ckpt_root / "last" if (ckpt_root / "last").exists() else None
    kept = f"last good checkpoint: {where}" if where else "no checkpoint had been written yet"
    raise DivergedError(f"the {what} became {value} at step {st.step + 1 if at is None else at} (epoch {st.epoch}); "
                        f"stopped. {kept}. "
                        f"Try a lower --lr, --grad-clip 1.0, or fp32")


def _final_test(module, wrapped, dist, ckpt_root: Path, data: Data, trained: Model, device: str) -> dict | None:
    """Test-split evaluation of the best checkpoint (the last one if no validation ran)."""
    if not len(data.test.sampler):
        return None
    folder = ckpt_root / "best" if (ckpt_root / "best").exists() else ckpt_root / "last"
    dd.barrier(dist)
    if folder.exists():
        tensors, _ = ck.read_checkpoint(folder)
        dd.load_model_state(wrapped if dist.strategy == "fsdp" else module, dist, tensors, str(folder))
    ev = evaluate(wrapped if dist.strategy == "fsdp" else module, data.test, trained.task,
                  n_classes=data.info.n_classes, device=device)
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


# ---- set-up helpers -------------------------------------------------------------------------------
def _determinism(cfg: TrainConfig) -> None:
    """CPU kernels are deterministic for a fixed thread count already; on CUDA ask torch for
    deterministic kernels (use_deterministic_algorithms imports the compiler stack: seconds)."""
    if cfg.deterministic and cfg.device.startswith("cuda"):
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _latest(ckpt_root: Path) -> Path | None:
    """The newest checkpoint: the highest step-N, or last/ if it is newer (after pruning)."""
    cands = [(s, p) for s, p in ck.step_dirs(ckpt_root)]
    last = ckpt_root / "last" / "state.pt"
    if last.exists():
        cands.append((int(torch.load(last, weights_only=True)["step"]), ckpt_root / "last"))
    return max(cands, key=lambda c: c[0])[1] if cands else None


def _prepare_dir(run_dir: Path, trained: Model, cfg: TrainConfig, data: Data, dist, resume_from) -> None:
    from layerwise.spec import io as spec_io

    if dist.main:
        if resume_from is None and (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").iterdir()):
            if not (run_dir / "result.json").exists():  # unfinished: it can be resumed, never clobber it
                raise LayerwiseError(f"{run_dir} holds an unfinished run; pass --resume to continue it or choose "
                                     f"another --out")
            # a finished run is kept one generation back, so re-running a command (make demo) works
            prev = run_dir.with_name(run_dir.name + ".prev")
            shutil.rmtree(prev, ignore_errors=True)
            os.replace(run_dir, prev)
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is None:
            ck.atomic_write_text(run_dir / "spec.yaml", spec_io.dump(trained))
        ck.atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())  # on resume: with the new length
        ck.atomic_write_text(run_dir / "data.json", json.dumps(data.info.to_dict(), indent=2) + "\n")
        if data.info.tokenizer_json:
            ck.atomic_write_text(run_dir / "tokenizer.json", data.info.tokenizer_json)
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
