"""Tensor, sequence, 2-D (FSDP2 x TP) and pipeline parallel training of a built decoder LM, on
PyTorch's own engines, launched by torchrun (gloo on CPU, nccl on GPU):

  TP / SP   torch.distributed.tensor.parallel on each built transformer block: q/k/v and the FFN's
            up/gate projections column-parallel, o_proj and down_proj row-parallel (Megatron-LM's
            split), the attention module told it holds n_heads / tp heads; with sequence
            parallelism the norms run as SequenceParallel on (B, S/tp, D) shards, the embedding is
            row-parallel with a sequence-sharded output and the projections' inputs are gathered
            (PrepareModuleInput) - torchtitan's plan for Llama, on our module names;
  2-D       the same TP inside each row of a (dp, tp) DeviceMesh, and FSDP2 `fully_shard` of every
            block and the root over the dp dimension;
  PP        torch.distributed.pipelining: the blocks split into contiguous stages (embedding on the
            first, final norm and head on the last; parameter names kept), run by Schedule1F1B or
            ScheduleGPipe over micro-batches (gradients scaled to the batch mean).
Expert parallelism is refused: PyTorch has no expert-parallel engine to use (no all-to-all token
dispatch in torch.distributed), and the project does not write its own.

Checkpoints are torch.distributed.checkpoint (DCP) directories of the sharded model and optimizer
states, so a killed run resumes on the same layout. Data are synthetic token batches from a fixed
seed, identical on every rank (each data-parallel rank takes its slice), so a run's loss can be
compared with one process's.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from layerwise.measure.setup import with_router_loss
from layerwise.spec.errors import LayerwiseError

SCHEDULES = ("1f1b", "gpipe")


@dataclass(frozen=True)
class ParallelConfig:
    tp: int = 1
    pp: int = 1
    dp: int = 1  # FSDP2 over dp when > 1 (2-D with tp)
    ep: int = 1
    sequence_parallel: bool = False
    schedule: str = "1f1b"
    micro_batches: int = 2  # per step, with pp > 1
    checkpointing: str = "none"  # none | full
    batch: int = 4  # sequences per step (global)
    seq: int = 16
    steps: int = 4
    lr: float = 1e-3
    seed: int = 0
    save_every: int = 2

    def check(self, world: int) -> None:
        if self.ep > 1:
            raise LayerwiseError("--ep: expert parallelism is not supported (PyTorch has no expert-parallel engine)")
        if self.tp * self.pp * self.dp != world:
            raise LayerwiseError(f"--tp x --pp x --dp = {self.tp * self.pp * self.dp} differs from the {world} "
                                 f"processes torchrun started")
        if self.pp > 1 and (self.tp > 1 or self.dp > 1):
            raise LayerwiseError("pipeline parallelism is trained alone here (--pp with --tp 1 --dp 1)")
        if self.sequence_parallel and self.tp == 1:
            raise LayerwiseError("--sp needs --tp > 1")
        if self.schedule not in SCHEDULES:
            raise LayerwiseError(f"--schedule must be one of {', '.join(SCHEDULES)} for training")
        if self.checkpointing not in ("none", "full"):
            raise LayerwiseError("--checkpointing must be none or full for parallel training")
        if self.batch % (self.dp * (self.micro_batches if self.pp > 1 else 1)):
            raise LayerwiseError(f"--batch {self.batch} does not split over dp {self.dp}"
                                 + (f" x {self.micro_batches} micro-batches" if self.pp > 1 else ""))


# ---- layouts ------------------------------------------------------------------------------------
def _check_tp(spec_block, tp: int) -> None:
    attn, ffn = spec_block.attn, spec_block.ffn
    if attn.type_name != "attention":
        raise LayerwiseError(f"--tp {tp}: only multi-head attention is split (this one is {attn.type_name})")
    if ffn.type_name != "ffn":
        raise LayerwiseError(f"--tp {tp}: only dense FFN blocks are split (this one is {ffn.type_name})")
    for name, value in (("n_heads", attn.n_heads), ("n_kv_heads", attn.kv_heads), ("d_ff", ffn.d_ff)):
        if value % tp:
            raise LayerwiseError(f"--tp {tp} does not divide {name} = {value}")


def apply_tp(module: nn.Module, mesh, sequence_parallel: bool) -> None:
    """Megatron-style tensor parallelism (and sequence parallelism) on a built DecoderLMModule."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput, RowwiseParallel,
                                                   SequenceParallel, parallelize_module)

    tp = mesh.size()
    if module.tied or hasattr(module, "pos"):
        raise LayerwiseError("tensor parallelism here needs an untied head and no learned positions (Llama-style)")
    seq_out = Shard(1) if sequence_parallel else Replicate()
    top = {"embed": RowwiseParallel(input_layouts=Replicate(), output_layouts=seq_out),
           "lm_head": ColwiseParallel(input_layouts=seq_out, output_layouts=Replicate())}
    if sequence_parallel:
        top["final_norm"] = SequenceParallel()
    parallelize_module(module, mesh, top)
    for block in module.blocks:
        plan = {"attn.q_proj": ColwiseParallel(), "attn.k_proj": ColwiseParallel(), "attn.v_proj": ColwiseParallel(),
                "attn.o_proj": RowwiseParallel(output_layouts=seq_out),
                "ffn.up_proj": ColwiseParallel(), "ffn.down_proj": RowwiseParallel(output_layouts=seq_out)}
        if hasattr(block.ffn, "gate_proj"):
            plan["ffn.gate_proj"] = ColwiseParallel()
        if sequence_parallel:
            plan.update({"attn_norm": SequenceParallel(), "ffn_norm": SequenceParallel(),
                         "attn": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
                         "ffn": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),))})
        parallelize_module(block, mesh, plan)
        block.attn.n_heads //= tp  # this rank's heads: the projections' outputs are its shard
        block.attn.kv_heads //= tp


def apply_fsdp(module: nn.Module, mesh) -> None:
    from torch.distributed.fsdp import fully_shard

    for block in module.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(module, mesh=mesh)


class Stage(nn.Module):
    """A pipeline stage of a DecoderLMModule: its blocks under their original names (blocks.i), the
    embedding on the first stage, the final norm and head on the last."""

    def __init__(self, full: nn.Module, stage: int, n_stages: int):
        super().__init__()
        self.first, self.last = stage == 0, stage == n_stages - 1
        if self.first:
            self.embed = full.embed
        self.blocks = nn.ModuleDict({str(i): full.blocks[i] for i in self.bounds(len(full.blocks), n_stages, stage)})
        if self.last:
            if hasattr(full, "final_norm"):
                self.final_norm = full.final_norm
            if full.tied:
                raise LayerwiseError("pipeline stages need an untied head (the embedding lives on the first stage)")
            self.lm_head = full.lm_head

    @staticmethod
    def bounds(n_layers: int, n_stages: int, stage: int) -> range:
        """The layers of `stage`: contiguous, as even as they divide (cost/parallel.layers_per_stage)."""
        from layerwise.cost.parallel import layers_per_stage

        if n_stages > n_layers:
            raise LayerwiseError(f"--pp {n_stages} is more than the model's {n_layers} layers")
        sizes = layers_per_stage(n_layers, n_stages)
        start = sum(sizes[:stage])
        return range(start, start + sizes[stage])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            x = self.embed(x)
        for block in self.blocks.values():
            x = block(x)
        if self.last:
            if hasattr(self, "final_norm"):
                x = self.final_norm(x)
            x = self.lm_head(x)
        return x


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def batches(cfg: ParallelConfig, vocab: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step `step`'s global batch: (inputs, next-token targets), the same on every rank."""
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + step)
    ids = torch.randint(0, vocab, (cfg.batch, cfg.seq + 1), generator=g)
    return ids[:, :-1], ids[:, 1:]


# ---- the run ------------------------------------------------------------------------------------
@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    mesh: object = None  # DeviceMesh (dp, tp) or (tp,), or None for pp / one process


def _setup(cfg: ParallelConfig) -> Ranks:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cfg.check(world)
    if world == 1:
        return Ranks()
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    mesh = None
    if cfg.pp == 1:
        mesh = init_device_mesh("cpu", (cfg.dp, cfg.tp), mesh_dim_names=("dp", "tp"))
    return Ranks(dist.get_rank(), world, mesh)


def build(spec, cfg: ParallelConfig, r: Ranks) -> tuple[nn.Module, nn.Module]:
    """(the module this rank trains, the full module it was cut from) with the layout applied."""
    from layerwise.measure.setup import apply_checkpointing
    from layerwise.workload import Workload

    torch.manual_seed(cfg.seed)  # every rank builds the same initial weights
    full = spec.build()
    if cfg.tp > 1:
        _check_tp(spec.body.block, cfg.tp)
    apply_checkpointing(full, Workload(checkpointing=cfg.checkpointing), spec)
    if cfg.pp > 1:
        if any(m.router_losses for m in _moe_specs(spec)):
            raise LayerwiseError("--pp: MoE router losses (aux_loss_coef, z_loss_coef) are not carried across "
                                 "pipeline stages; set them to 0 or train without --pp")
        return Stage(full, r.rank, cfg.pp), full
    if cfg.tp > 1:
        apply_tp(full, r.mesh["tp"], cfg.sequence_parallel)
    if cfg.dp > 1:
        apply_fsdp(full, r.mesh["dp"])
    return full, full


def train_parallel(spec, cfg: ParallelConfig, run_dir: str | Path, *, resume: bool = False,
                   stop_after: int | None = None, states_out: dict | None = None) -> list[float]:
    """Train `cfg.steps` steps; returns the loss of each step (the global-batch mean).
    `stop_after` ends the run early without a checkpoint (as a kill would, for tests);
    `states_out["bytes"]` receives this rank's model-state bytes after the last step (its shards of
    the weights, gradients and optimizer states), `states_out["peak"]` the peak live bytes of the
    last step (the live-storage tracker on this rank's local tensors, as `measure` counts)."""
    r = _setup(cfg)
    module, _ = build(spec, cfg, r)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, foreach=False)
    run_dir = Path(run_dir)
    start, losses = 0, []
    if resume:
        start, losses = _load(module, opt, run_dir, cfg, r)
    step_fn = _pipeline_step(module, cfg, r) if cfg.pp > 1 else _plain_step(module, cfg, r)
    for step in range(start, cfg.steps):
        if stop_after is not None and step == stop_after:
            return losses
        opt.zero_grad(set_to_none=True)
        if states_out is not None and step + 1 == cfg.steps and step > start:  # a steady step: states exist
            losses.append(_tracked_step(step_fn, module, opt, batches(cfg, spec.body.vocab_size, step), states_out))
            continue
        losses.append(step_fn(*batches(cfg, spec.body.vocab_size, step)))
        opt.step()
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            _save(module, opt, run_dir, step + 1, losses, cfg, r)
    if states_out is not None:
        states_out["bytes"] = state_bytes(module, opt)
    return losses


def _tracked_step(step_fn, module: nn.Module, opt: torch.optim.Optimizer, batch, out: dict) -> float:
    """One step (forward, backward, optimizer) under the live-storage tracker; its peak in `out`."""
    from layerwise.measure.tracker import StorageTracker

    tracker = StorageTracker()
    tracker.register_module(module)
    tracker.register_optimizer(opt)
    try:
        with tracker:
            with tracker.phase("forward"):  # the schedules interleave forward and backward
                loss = step_fn(*batch)
            with tracker.phase("optimizer"):
                opt.step()
    finally:
        tracker.remove_hooks()
    out["peak"] = tracker.peak.total
    return loss


def state_bytes(module: nn.Module, opt: torch.optim.Optimizer) -> int:
    """Bytes of the storages behind this rank's parameters, gradients and optimizer states (local
    shards of DTensors), each storage once."""
    tensors = [p for p in module.parameters()] + [p.grad for p in module.parameters() if p.grad is not None]
    tensors += [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    seen, total = set(), 0
    for t in tensors:
        t = t.to_local() if hasattr(t, "to_local") else t
        if t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()
    return total


def _plain_step(module, cfg: ParallelConfig, r: Ranks):
    def step(x, y):
        if cfg.dp > 1:  # this data-parallel rank's slice of the global batch
            i, n = r.mesh["dp"].get_local_rank(), cfg.batch // cfg.dp
            x, y = x[i * n:(i + 1) * n], y[i * n:(i + 1) * n]
        loss = with_router_loss(_loss(module(x), y), module)  # MoE: + the router losses
        loss.backward()
        return _mean_over_dp(loss.detach(), cfg, r)
    return step


def _moe_specs(spec):
    from layerwise.spec.base import walk

    return [info.block for info in walk(spec.body, spec.input_shape(1)) if info.block.type_name == "moe"]


def _mean_over_dp(loss: torch.Tensor, cfg: ParallelConfig, r: Ranks) -> float:
    if cfg.dp > 1:
        import torch.distributed as dist

        dist.all_reduce(loss, group=r.mesh["dp"].get_group())
        loss = loss / cfg.dp
    return float(loss)


def _pipeline_step(stage_module: Stage, cfg: ParallelConfig, r: Ranks):
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    stage = PipelineStage(stage_module, r.rank, cfg.pp, torch.device("cpu"))
    kind = Schedule1F1B if cfg.schedule == "1f1b" else ScheduleGPipe
    schedule = kind(stage, n_microbatches=cfg.micro_batches, loss_fn=_loss)

    def step(x, y):
        losses: list[torch.Tensor] = []
        # return_outputs=False: the last stage would otherwise keep every micro-batch's logits
        # (and their concatenation) to the end of the step for nobody
        if stage_module.first:
            schedule.step(x, return_outputs=False)
        elif stage_module.last:
            schedule.step(target=y, losses=losses, return_outputs=False)
        else:
            schedule.step(return_outputs=False)
        total = torch.stack(losses).mean().detach() if losses else torch.zeros(())
        dist.broadcast(total, src=cfg.pp - 1)  # every rank reports the step's loss
        return float(total)
    return step


# ---- checkpoints (torch.distributed.checkpoint) -------------------------------------------------
def _save(module, opt, run_dir: Path, step: int, losses: list[float], cfg: ParallelConfig, r: Ranks) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, opt_sd = get_state_dict(module, opt)
    with _one_process_quiet(r):
        dcp.save(_keyed(model_sd, opt_sd, cfg, r), checkpoint_id=str(run_dir / f"step-{step}"), no_dist=r.world == 1)
    if r.rank == 0:
        (run_dir / "last.json").write_text(json.dumps({"step": step, "losses": losses, "config": asdict(cfg)}))
    if r.world > 1:
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def _one_process_quiet(r: Ranks):
    """DCP warns that it runs without a process group; with one process that is what we mean."""
    with warnings.catch_warnings():
        if r.world == 1:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _keyed(model_sd: dict, opt_sd: dict, cfg: ParallelConfig, r: Ranks) -> dict:
    """The state to save or load: under each pipeline stage's own key, since the stages' optimizer
    param_groups would otherwise collide in the one checkpoint (tensor/FSDP shards share keys)."""
    state = {"model": model_sd, "optim": opt_sd}
    return {f"stage{r.rank}": state} if cfg.pp > 1 else state


def _load(module, opt, run_dir: Path, cfg: ParallelConfig, r: Ranks) -> tuple[int, list[float]]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    meta = run_dir / "last.json"
    if not meta.exists():
        raise LayerwiseError(f"{run_dir}: no checkpoint to resume from")
    info = json.loads(meta.read_text())
    model_sd, opt_sd = get_state_dict(module, opt)
    state = _keyed(model_sd, opt_sd, cfg, r)
    with _one_process_quiet(r):
        dcp.load(state, checkpoint_id=str(run_dir / f"step-{info['step']}"), no_dist=r.world == 1)
    loaded = state[f"stage{r.rank}"] if cfg.pp > 1 else state
    set_state_dict(module, opt, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])
    return info["step"], list(info["losses"])
