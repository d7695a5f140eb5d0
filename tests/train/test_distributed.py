"""Two processes on gloo (localhost) reach the weights of one process with the doubled batch (DDP and
FSDP2), and an FSDP run killed and resumed reaches the same weights bitwise."""
from __future__ import annotations

import socket

import torch
import torch.multiprocessing as mp

from layerwise.train.run import load_run
from layerwise.train.trainer import train

from _train_models import config, mlp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Killed(Exception):
    pass


def _kill_at_5(step, module):
    if step == 5:
        raise _Killed


def _worker(rank: int, world: int, port: int, run_dir: str) -> None:
    from spawn_exit import run_then_exit

    run_then_exit(_train_rank, rank, world, port, run_dir)


def _train_rank(rank: int, world: int, port: int, run_dir: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    try:  # one process group for everything: spawning costs more than training here
        for strategy in ("ddp", "fsdp"):
            train(mlp(), config(strategy=strategy, batch_size=8, max_steps=6, eval_every=3), f"{run_dir}/{strategy}")
        # FSDP killed after step 5 (last checkpoint: step 3), then resumed from the sharded-then-gathered state
        cfg = config(strategy="fsdp", batch_size=8, max_steps=6, eval_every=3)
        try:
            train(mlp(), cfg, f"{run_dir}/fsdp-killed", hooks={"after_step": _kill_at_5})
        except _Killed:
            pass
        train(mlp(), cfg, f"{run_dir}/fsdp-killed", resume=True)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_processes_ddp_and_fsdp_match_one(tmp_path):
    train(mlp(), config(batch_size=16, max_steps=6, eval_every=3), tmp_path / "single")
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "multi")), nprocs=2, join=True,
                       start_method="spawn")
    a = load_run(tmp_path / "single", "last").module.state_dict()
    for strategy in ("ddp", "fsdp"):
        run = load_run(tmp_path / "multi" / strategy, "last")
        assert run.step == 6
        b = run.module.state_dict()
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5), (strategy, k)
    full = load_run(tmp_path / "multi" / "fsdp", "last").module.state_dict()
    resumed = load_run(tmp_path / "multi" / "fsdp-killed", "last").module.state_dict()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
