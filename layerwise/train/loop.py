"""The pieces of one training step, in the order `trainer.train` runs them: an optimizer step of
`grad_accum` micro-batches, its log row and event, then validation / early stopping, then a
checkpoint. `Run` holds what set-up built (read-only in the loop); `State` is everything the loop
changes (its first six fields are what a checkpoint stores).

These run every step, so they pay nothing a hand-written loop would not: no context manager, event
payload or device copy unless it does something (measured by bench/train_overhead.py).
"""
from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import Model
from layerwise.train import checkpoint as ck
from layerwise.train import distributed as dd
from layerwise.train.config import TrainConfig
from layerwise.train.data import Data
from layerwise.train.evaluate import EvalResult, evaluate
from layerwise.train.losses import LossFn, mixup, penalty
from layerwise.train.memory import StepMemory
from layerwise.build.runtime import routing_stats
from layerwise.measure.setup import with_router_loss
from layerwise.train.metrics import MetricsLog
from layerwise.train.optim import ParamGroups, lr_factor, set_lr

Event = Callable[[str, dict], None]


class DivergedError(LayerwiseError):
    """The loss (or gradient norm) became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Run:
    """What set-up built; the loop reads it and never rebinds a field."""
    cfg: TrainConfig
    trained: Model  # the spec actually trained (after freeze / LoRA transforms)
    dist: dd.Dist
    module: torch.nn.Module  # the plain module (names = spec paths)
    wrapped: torch.nn.Module  # what forward runs through: DDP wrapper, FSDP-sharded, or `module`
    opt: torch.optim.Optimizer
    groups: ParamGroups  # parameter names with / without weight decay
    scaler: torch.amp.GradScaler | None  # fp16-mixed only
    amp_dtype: torch.dtype | None  # autocast dtype, None in fp32
    loss_fn: LossFn
    decay_params: list[torch.Tensor]  # the parameters an L1/L2 penalty applies to
    data: Data
    run_dir: Path
    log: MetricsLog  # metrics.jsonl / .csv (writes nothing off rank 0)
    total: int  # optimizer steps of the whole run
    n_micro: int  # micro-batches per epoch (this process)
    steps_per_epoch: int  # n_micro // grad_accum
    trainable: int  # parameters with requires_grad
    warnings: list[str]  # the data's, and parameters no spec leaf owns
    step_memory: StepMemory
    predicted: int | None  # cost reading's peak bytes of one step
    emit: Event
    listening: bool  # someone passed on_event: only then is a per-step payload built
    after_step: Callable | None  # hooks["after_step"](step, module)
    transform: Callable | None = None  # augmentation / input noise of a training batch (train/augment.py)
    max_norm_weights: list[torch.Tensor] = field(default_factory=list)  # renormed after each step (cfg.max_norm)
    masker: Callable | None = None  # mlm: x, y -> masked x, targets (train/mlm.py)

    @property
    def ckpt_root(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def device(self) -> str:
        return self.dist.device

    @property
    def eval_module(self) -> torch.nn.Module:
        return self.wrapped if self.dist.strategy == "fsdp" else self.module


@dataclass
class State:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0  # evaluations since the last improvement (early stopping)
    # -- not checkpointed: this process's progress
    it: Iterator | None = None  # over this epoch's training batches; None = start the epoch
    t0: float = 0.0  # perf_counter at the first step of this process
    seen: int = 0  # samples this process trained on
    window: list[float] = field(default_factory=list)  # step losses since the last log row
    measured: int | None = None  # measured peak bytes of one step, once taken
    last_val: EvalResult | None = None


# ---- one optimizer step --------------------------------------------------------------------------
def optimizer_step(run: Run, st: State) -> tuple[float, float | None, float]:
    """`grad_accum` micro-batches, clip, update, zero the gradients -> (mean loss, grad norm, lr)."""
    cfg, opt = run.cfg, run.opt
    if st.it is None:
        run.data.train.sampler.set_epoch(st.epoch, st.batch_in_epoch)
        st.it = iter(run.data.train)
    lr = set_lr(opt, lr_factor(st.step, run.total, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio))
    if not run.wrapped.training:  # set once at set-up; evaluate() restores it (module.train() walks every child)
        run.wrapped.train()
    measuring = st.measured is None and (st.step == 1 or st.step == run.total - 1)  # the 2nd step, or the only one
    if measuring:
        run.step_memory.begin(run.module, opt)
    loss_sum = 0.0
    last = cfg.grad_accum - 1
    for i in range(cfg.grad_accum):
        x, y = next(st.it)
        if i == last or run.dist.strategy != "ddp":
            loss_sum += _micro_batch(run, st, x, y)
        else:  # DDP: all-reduce the gradients once, on the last micro-batch
            with run.wrapped.no_sync():
                loss_sum += _micro_batch(run, st, x, y)
    grad_norm = _clip(run)
    if grad_norm is not None and run.scaler is None and not dd.all_true(math.isfinite(grad_norm), run.dist):
        diverged(run, st, grad_norm, what="gradient norm")
    if run.scaler:
        run.scaler.step(opt)
        run.scaler.update()
    else:
        opt.step()
    if cfg.max_norm:
        max_norm_(run.max_norm_weights, cfg.max_norm)
    if measuring:
        st.measured = run.step_memory.end()  # after the step, before zero_grad frees the gradients
        run.emit("memory", {"predicted_peak_bytes": run.predicted, "measured_peak_bytes": st.measured,
                            "device": run.device})
    opt.zero_grad(set_to_none=True)
    return loss_sum / cfg.grad_accum, grad_norm, lr


def _micro_batch(run: Run, st: State, x: torch.Tensor, y: torch.Tensor) -> float:
    """Forward, the NaN/inf check, backward of 1/grad_accum of the loss -> the loss value."""
    cfg = run.cfg
    if run.device != "cpu":  # the loader yields CPU tensors; .to() on CPU is a no-op call per step
        x, y = x.to(run.device), y.to(run.device)
    loss = _forward_loss(run, x, y)
    if cfg.l1 or cfg.l2:
        loss = loss + penalty(run.decay_params, cfg.l1, cfg.l2)
    value = loss.item()
    if not dd.all_true(math.isfinite(value), run.dist):
        diverged(run, st, value)
    if cfg.grad_accum > 1:  # x / 1 is x bitwise, forward and backward: skip the extra autograd node
        loss = loss / cfg.grad_accum
    (run.scaler.scale(loss) if run.scaler else loss).backward()
    st.seen += x.shape[0]
    return value


def _forward_loss(run: Run, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if run.amp_dtype is None:
        return _loss(run, x, y)
    with torch.autocast(device_type=run.device.split(":")[0], dtype=run.amp_dtype):
        return _loss(run, x, y)


def _loss(run: Run, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if run.transform is not None:
        x = run.transform(x)
    if run.masker is not None:
        x, y = run.masker(x, y)
    if run.cfg.mixup_alpha > 0:
        x, ya, yb, lam = mixup(x, y, run.cfg.mixup_alpha)
        logits = run.wrapped(x)
        return with_router_loss(lam * run.loss_fn(logits, ya) + (1.0 - lam) * run.loss_fn(logits, yb), run.module)
    return with_router_loss(run.loss_fn(run.wrapped(x), y), run.module)


@torch.no_grad()
def max_norm_(weights: list[torch.Tensor], max_norm: float) -> None:
    """Srivastava et al. 2014 (JMLR 15, sec. 5.1): each unit's incoming weight vector (a row of a
    Linear weight, a Conv filter: dim 0) is scaled back onto the ball of radius max_norm."""
    for w in weights:
        w.copy_(torch.renorm(w, p=2, dim=0, maxnorm=max_norm))


def _clip(run: Run) -> float | None:
    if not run.cfg.grad_clip:
        return None
    if run.scaler:
        run.scaler.unscale_(run.opt)
    params = [p for g in run.opt.param_groups for p in g["params"]]
    return float(torch.nn.utils.clip_grad_norm_(params, run.cfg.grad_clip))


def advance(run: Run, st: State) -> bool:
    """Count the step done; True if it ended the epoch (the next one starts a new iterator)."""
    st.step += 1
    st.batch_in_epoch += run.cfg.grad_accum
    if run.after_step is not None:
        run.after_step(st.step, run.module)
    if st.batch_in_epoch + run.cfg.grad_accum > run.n_micro:
        st.epoch, st.batch_in_epoch, st.it = st.epoch + 1, 0, None
        return True
    return False


# ---- logging -------------------------------------------------------------------------------------
def log_step(run: Run, st: State, loss: float, grad_norm: float | None, lr: float) -> None:
    """A metrics row every `log_every` steps (mean loss since the last row); a "step" event."""
    st.window.append(loss)
    if st.step % run.cfg.log_every == 0 or st.step == run.total:
        elapsed = time.perf_counter() - st.t0
        run.log.write({"step": st.step, "epoch": st.epoch, "kind": "train", "loss": sum(st.window) / len(st.window),
                       "lr": lr, "grad_norm": grad_norm, "samples_per_s": samples_per_s(run, st, elapsed),
                       "time_s": elapsed, **_routing(run)})
        st.window = []
    if run.listening:
        elapsed = time.perf_counter() - st.t0
        run.emit("step", {"step": st.step, "total": run.total, "loss": loss, "lr": lr,
                          "samples_per_s": samples_per_s(run, st, elapsed), "epoch": st.epoch})


def _routing(run: Run) -> dict:
    """MoE models: the last forward's pairs per expert (summed over the layers) and overflow rate."""
    stats = routing_stats(run.module)
    if stats is None:
        return {}
    return {"expert_counts": stats["expert_counts"], "overflow_rate": stats["overflow_rate"]}


def samples_per_s(run: Run, st: State, elapsed: float) -> float:
    return st.seen * run.dist.world / max(elapsed, 1e-9)


# ---- validation and early stopping ---------------------------------------------------------------
def due_eval(run: Run, st: State, epoch_end: bool) -> bool:
    cfg = run.cfg
    return ((st.step % cfg.eval_every == 0) if cfg.eval_every else epoch_end) or st.step == run.total


def validate(run: Run, st: State) -> tuple[bool, bool]:
    """Evaluate on the validation split, log it -> (improved, stop early); (False, False) if none."""
    if not len(run.data.val.sampler):
        return False, False
    cfg = run.cfg
    val = itertools.islice(run.data.val, cfg.eval_batches) if cfg.eval_batches else run.data.val
    ev = evaluate(run.eval_module, val, run.trained.task, n_classes=run.data.info.n_classes, device=run.device,
                  target_scale=run.data.info.target_scale, mask_id=run.data.info.mask_id,
                  autocast_dtype=run.amp_dtype if run.amp_dtype == torch.bfloat16 else None)
    st.last_val = ev
    run.log.write({"step": st.step, "epoch": st.epoch, "kind": "val", "loss": ev.loss,
                   "accuracy": ev.accuracy, "perplexity": ev.perplexity})
    run.emit("eval", {"step": st.step, "split": "val", "result": ev.to_dict()})
    return _track(st, ev, cfg)


def _track(st: State, ev: EvalResult, cfg: TrainConfig) -> tuple[bool, bool]:
    """(improved, stop early) for the monitored validation metric."""
    value = ev.loss if cfg.monitor == "val_loss" else ev.accuracy
    better = st.best_metric is None or (value < st.best_metric if cfg.monitor == "val_loss" else value > st.best_metric)
    if better and math.isfinite(value):
        st.best_metric, st.best_step, st.bad_evals = float(value), st.step, 0
        return True, False
    st.bad_evals += 1
    return False, bool(cfg.patience and st.bad_evals >= cfg.patience)


# ---- checkpoints ---------------------------------------------------------------------------------
def due_checkpoint(run: Run, st: State, evaluated: bool) -> bool:
    """On the configured cadence (default: with every evaluation); the caller adds the forced ones."""
    every = run.cfg.checkpoint_every
    return (st.step % every == 0) if every else evaluated


def checkpoint(run: Run, st: State, best: bool) -> None:
    """Save step-N (and last/, best/), unless the weights went non-finite: then stop."""
    if not dd.all_true(_finite(run.module), run.dist):  # never overwrite a good checkpoint with NaN weights
        diverged(run, st, float("nan"), what="weights", at=st.step)
    save(run, st, best=best)


def save(run: Run, st: State, best: bool) -> None:
    model_sd, opt_sd = dd.full_states(run.eval_module, run.opt, run.dist)
    if run.dist.main:
        state = {"step": st.step, "epoch": st.epoch, "batch_in_epoch": st.batch_in_epoch, "optimizer": opt_sd,
                 "scheduler": {"step": st.step}, "scaler": run.scaler.state_dict() if run.scaler else None,
                 "rng": ck.rng_state(), "best_metric": st.best_metric, "best_step": st.best_step,
                 "bad_evals": st.bad_evals}
        name = f"step-{st.step}"
        ck.save_checkpoint(run.ckpt_root, name, model_sd, state)
        ck.copy_checkpoint(run.ckpt_root, name, "last")
        if best:
            ck.copy_checkpoint(run.ckpt_root, name, "best")
        ck.prune(run.ckpt_root, run.cfg.keep_last)
    dd.barrier(run.dist)


def restore(folder: Path, run: Run) -> State:
    """Weights, optimizer, scaler and RNG states from a checkpoint -> the loop state it was saved at."""
    tensors, state = ck.read_checkpoint(folder)
    if run.dist.strategy == "fsdp":
        dd.load_full_states(run.wrapped, run.opt, run.dist, tensors, state.get("optimizer"))
    else:
        ck.load_module_state(run.module, tensors, str(folder))
    if run.dist.strategy != "fsdp" and state.get("optimizer"):
        run.opt.load_state_dict(state["optimizer"])
    if run.scaler and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    ck.set_rng_state(state["rng"])
    return State(step=state["step"], epoch=state["epoch"], batch_in_epoch=state["batch_in_epoch"],
                 best_metric=state.get("best_metric"), best_step=state.get("best_step"),
                 bad_evals=state.get("bad_evals", 0))


def _finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def diverged(run: Run, st: State, value: float, what: str = "loss", at: int | None = None):
    """Keep a loadable checkpoint of the last good weights, then stop with a clear message."""
    root = run.ckpt_root
    if _finite(run.module):  # this step's update has not happened: the weights are those after step `st.step`
        run.opt.zero_grad(set_to_none=True)
        save(run, st, best=False)
        where = root / "last"
    else:
        where = root / "last" if (root / "last").exists() else None
    kept = f"last good checkpoint: {where}" if where else "no checkpoint had been written yet"
    raise DivergedError(f"the {what} became {value} at step {st.step + 1 if at is None else at} (epoch {st.epoch}); "
                        f"stopped. {kept}. "
                        f"Try a lower --lr, --grad-clip 1.0, or fp32")
