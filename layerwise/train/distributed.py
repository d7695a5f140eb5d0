"""One process or many: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK, and `--strategy ddp|fsdp` wraps
the module in DistributedDataParallel or FSDP2 (`fully_shard` on every block of a layer stack, then
the root). gloo on CPU, nccl on GPU. Rank 0 alone logs and writes checkpoints; with FSDP every rank
takes part in gathering the full state dict that rank 0 writes."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from layerwise.spec.errors import LayerwiseError


@dataclass
class Dist:
    strategy: str  # "none", "ddp" or "fsdp"
    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(strategy: str, device: str) -> Dist:
    """Join the process group torchrun (or a test) describes in the environment."""
    import torch.distributed as dist

    if strategy == "none":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise LayerwiseError("running under torchrun with several processes: pass --strategy ddp or fsdp")
        return Dist("none", device=device)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise LayerwiseError(f"--strategy {strategy} runs under torchrun (RANK/WORLD_SIZE are not set); "
                             f"e.g. torchrun --nproc-per-node 2 -m layerwise.cli train ...")
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return Dist(strategy, rank, world, device)


def wrap(module: torch.nn.Module, d: Dist, block_modules: list[torch.nn.Module]) -> torch.nn.Module:
    if d.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[torch.device(d.device).index] if d.device.startswith("cuda") else None)
    if d.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for m in block_modules:
            fully_shard(m)
        fully_shard(module)
        return module
    return module


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module) if type(module).__name__ == "DistributedDataParallel" else module


def full_states(module: torch.nn.Module, opt: torch.optim.Optimizer, d: Dist) -> tuple[dict, dict]:
    """(model state, optimizer state) as full, unsharded CPU tensors (on every rank)."""
    if d.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        return get_state_dict(module, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return unwrap(module).state_dict(), opt.state_dict()


def load_full_states(module: torch.nn.Module, opt: torch.optim.Optimizer, d: Dist, model_sd: dict, opt_sd: dict | None) -> None:
    if d.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(module, opt, model_state_dict=model_sd, optim_state_dict=opt_sd or {},
                       options=StateDictOptions(full_state_dict=True, strict=False))
        return
    if opt_sd is not None:
        opt.load_state_dict(opt_sd)


def load_model_state(module: torch.nn.Module, d: Dist, tensors: dict, where: str) -> None:
    """Full (unsharded) tensors into the module; FSDP scatters them to the shards."""
    if d.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, tensors, options=StateDictOptions(full_state_dict=True, strict=False))
        return
    from layerwise.train.checkpoint import load_module_state

    load_module_state(unwrap(module), tensors, where)


def all_true(flag: bool, d: Dist) -> bool:
    """True only if `flag` holds on every rank (a NaN on one rank stops all of them together)."""
    if d.world == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([0.0 if flag else 1.0], device=d.device)
    dist.all_reduce(t)
    return t.item() == 0.0


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
