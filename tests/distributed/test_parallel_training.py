"""Tensor (+ sequence), 2-D (FSDP2 x TP) and pipeline (1F1B, GPipe) parallel training on PyTorch's own
engines, in 2 (TP, TP + SP, 1F1B, GPipe) and 4 (2-D) gloo processes on CPU: the loss of every step equals one process's within 1e-5
(float sums in another order), a run killed after step 3 and resumed from its step-2 checkpoint
ends where the uninterrupted one does, and each rank's model states (weights, gradients, AdamW
states) equal the planner's per-device prediction within 2%, and the whole peak of a tensor-parallel
rank and of each pipeline stage (the live-storage tracker on the rank's local tensors) equals
plan/rank_memory.py's within 2% (above it, at most the collective buffers gloo's worker threads still
hold; see IN_FLIGHT_BUFFERS) (2-D: model states only).

The 2-D case is the planner's top layout for llama-3-70b on 512 H100s (TP + SP, ZeRO-3/FSDP over
data parallelism, full checkpointing; README), at a tiny size. Expert parallelism is refused."""
import json
import os

import pytest
import torch
import torch.multiprocessing as mp
from spawn_exit import run_then_exit

from layerwise.cost.step_time import Layout
from layerwise.plan.memory import device_state_bytes, memory_parts
from layerwise.plan.rank_memory import pp_rank_peak_bytes, tp_rank_peak_bytes
from layerwise.presets import get_preset
from layerwise.train.parallel import ParallelConfig, Stage, train_parallel
from layerwise.workload import Workload

SPEC = get_preset("llama-2-7b", d_model=64, n_heads=4, n_layers=4, d_ff=128, vocab_size=128, max_seq=64)
STEPS = 4
CASES = {
    2: {"tp": dict(tp=2), "tp-sp": dict(tp=2, sequence_parallel=True), "pp-1f1b": dict(pp=2, micro_batches=2),
        "pp-gpipe": dict(pp=2, schedule="gpipe", micro_batches=4)},
    4: {"fsdp-tp-sp-full": dict(dp=2, tp=2, sequence_parallel=True, checkpointing="full")},
}


def _rank(rank: int, world: int, out: str) -> None:
    run_then_exit(_run_rank, rank, world, out)


def _run_rank(rank: int, world: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"file://{out}/store")
    try:
        result = {}
        for name, kw in CASES[world].items():
            cfg = ParallelConfig(steps=STEPS, **kw)
            states = {}
            whole = train_parallel(SPEC, cfg, f"{out}/{name}", states_out=states)
            train_parallel(SPEC, cfg, f"{out}/{name}-killed", stop_after=3)  # last checkpoint: step 2
            resumed = train_parallel(SPEC, cfg, f"{out}/{name}-killed", resume=True)
            result[name] = {"losses": whole, "resumed": resumed, "state_bytes": states["bytes"], "peak": states["peak"]}
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        dist.barrier()
        dist.destroy_process_group()


def _predicted_state_bytes(kw: dict, rank: int) -> int:
    cfg = ParallelConfig(**kw)
    parts = memory_parts(SPEC, Workload(seq=cfg.seq, precision="fp32", optimizer="adamw", device="cpu"))
    lay = Layout(dp=cfg.dp, tp=cfg.tp, pp=cfg.pp, zero=3 if cfg.dp > 1 else 0, sequence_parallel=cfg.sequence_parallel)
    stage = rank if cfg.pp > 1 else 0
    layers = len(Stage.bounds(SPEC.body.n_layers, cfg.pp, stage))
    return device_state_bytes(parts, lay, stage, layers, cfg.pp)


# Layouts whose whole per-rank peak plan/rank_memory.py predicts and the test holds within 2%.
PEAK_PREDICTED = {"tp", "tp-sp", "pp-1f1b", "pp-gpipe"}
# What a tensor-parallel rank's measured peak may carry above the prediction: gloo's worker threads
# keep a finished collective's work (and the tensors it holds) until they loop back for the next
# one, so on a loaded machine a few (B, S, d_model) all-reduce/all-gather buffers outlive the
# main thread's last use. The prediction is the in-order case (1,911,364 B measured for TP + SP on
# an idle machine, 1,960,516 on a loaded one; 2,068,164 and 2,117,316 for TP on CI, 2026-12-02):
# both times exactly three fp32 (B, S, d_model) buffers more.
IN_FLIGHT_BUFFERS = 3


def _in_flight_bytes(kw: dict) -> int:
    cfg = ParallelConfig(**kw)
    return IN_FLIGHT_BUFFERS * cfg.batch * cfg.seq * SPEC.body.d_model * 4 if cfg.tp > 1 else 0


def _predicted_peak(kw: dict, rank: int) -> int:
    cfg = ParallelConfig(**kw)
    workload = Workload(batch=cfg.batch, seq=cfg.seq, precision="fp32", optimizer="adamw", device="cpu")
    if cfg.pp > 1:
        return pp_rank_peak_bytes(SPEC, workload, cfg.pp, rank, cfg.micro_batches, cfg.schedule)
    return tp_rank_peak_bytes(SPEC, workload, cfg.tp, cfg.sequence_parallel)


@pytest.mark.parametrize("world", [2, 4])
def test_parallel_layouts_match_one_process_and_resume(tmp_path, world):
    single = train_parallel(SPEC, ParallelConfig(steps=STEPS), tmp_path / "single")
    mp.start_processes(_rank, args=(world, str(tmp_path)), nprocs=world, join=True, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    for name, kw in CASES[world].items():
        for r, result in enumerate(ranks):
            got = result[name]
            assert got["losses"] == pytest.approx(single, rel=1e-5), (name, r)
            assert got["resumed"] == pytest.approx(got["losses"], rel=1e-6), (name, r)
            assert got["state_bytes"] == pytest.approx(_predicted_state_bytes(kw, r), rel=0.02), (name, r)
            if name in PEAK_PREDICTED:
                predicted = _predicted_peak(kw, r)
                assert 0.98 * predicted <= got["peak"] <= 1.02 * predicted + _in_flight_bytes(kw), (name, r, predicted)


def test_expert_parallelism_is_refused():
    with pytest.raises(Exception, match="expert parallelism is not supported"):
        ParallelConfig(ep=2).check(2)
