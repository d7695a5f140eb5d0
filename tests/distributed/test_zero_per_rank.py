"""Per-rank model states under ZeRO-1 (torch's ZeroRedundancyOptimizer) and ZeRO-3 (FSDP2
`fully_shard`) measured in a real 2-process gloo run on CPU, against the cost reading.

The model is four equal Linear(64, 64) layers: ZeroRedundancyOptimizer assigns whole tensors to ranks
(greedy by size), and FSDP2 shards dim 0, so both split exactly in half and the prediction has to
match to the byte."""
import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from spawn_exit import run_then_exit

from layerwise.blocks import Linear, Sequential
from layerwise.cost.model_states import torch_model_states
from layerwise.cost.optimizers import state_bytes
from layerwise.cost.param_shapes import param_shapes
from layerwise.cost.parallel import Parallel, shard_model_states

SPEC = Sequential(layers=tuple(Linear(d_in=64, d_out=64, bias=False) for _ in range(4)))


def _local(t):
    return t.to_local() if hasattr(t, "to_local") else t


def _bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        t = _local(t)
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def _rank(rank: int, world: int, mode: str, out: str) -> None:
    run_then_exit(_measure_rank, rank, world, mode, out)


def _measure_rank(rank: int, world: int, mode: str, out: str) -> None:
    # a file store in the test's own directory: no port to race for
    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"file://{out}/store")
    try:
        torch.manual_seed(0)
        module = SPEC.build()
        if mode == "zero1":
            from torch.distributed.optim import ZeroRedundancyOptimizer

            opt = ZeroRedundancyOptimizer(module.parameters(), optimizer_class=torch.optim.AdamW, lr=1e-3)
            states = opt.optim.state
        else:
            from torch.distributed.fsdp import fully_shard

            for layer in module:
                fully_shard(layer)
            fully_shard(module)
            opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
            states = opt.state
        for _ in range(2):  # the second step is the steady state
            opt.zero_grad(set_to_none=True)
            module(torch.randn(8, 64)).sum().backward()
            opt.step()
        params = list(module.parameters())
        result = {"weights": _bytes(params), "gradients": _bytes(p.grad for p in params if p.grad is not None),
                  "optimizer_states": _bytes(v for s in states.values() for v in s.values() if torch.is_tensor(v))}
        with open(os.path.join(out, f"{mode}-{rank}.json"), "w") as f:
            json.dump(result, f)
        dist.barrier()  # no rank tears gloo down while another still has collectives in flight
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("mode, zero", [("zero1", 1), ("fsdp", 3)])
def test_per_rank_model_states_match_the_cost_reading(tmp_path, mode, zero):
    mp.spawn(_rank, args=(2, mode, str(tmp_path)), nprocs=2, join=True)
    shapes = param_shapes(SPEC)
    states = torch_model_states(shapes, optimizer="adamw")
    # FSDP2: every rank steps its shard of every parameter, so each keeps all the scalar `step`s
    steps = state_bytes("adamw", shapes).step if mode == "fsdp" else 0
    expected = shard_model_states(states, Parallel(dp=2, zero=zero), replicated_optimizer_bytes=steps).gpu
    for rank in range(2):
        measured = json.loads((tmp_path / f"{mode}-{rank}.json").read_text())
        assert measured == {"weights": expected.weights, "gradients": expected.gradients,
                            "optimizer_states": expected.optimizer_states}, (rank, measured)
