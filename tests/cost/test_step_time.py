"""The step-time model: collectives and the pipeline bubble by their formulas, published Megatron-LM
runs (refdata/step_time_runs.csv: Korthikanti et al. 2022 Tables 4-5, Narayanan et al. 2021 Table 1)
within 10%, and the `time` command's JSON."""
import json

import pytest

from layerwise.cli import main
from layerwise.cost import comm
from layerwise.cost.hardware import get_gpu
from layerwise.cost.reference_runs import predict, read_runs
from layerwise.cost.step_time import Layout, step_time
from layerwise.presets import get_preset
from tests.refdata import REFDATA

RUNS = {r.name: r for r in read_runs(REFDATA / "step_time_runs.csv")}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_published_runs_within_10_percent(name):
    run = RUNS[name]
    assert predict(run) == pytest.approx(run.value, rel=0.10)


def test_ring_collectives_move_the_textbook_volumes():
    link = comm.Link(bandwidth=100e9, latency=0.0)
    assert comm.all_reduce(8e9, 8, link) == pytest.approx(2 * 7 / 8 * 8e9 / 100e9)
    assert comm.reduce_scatter(8e9, 8, link) + comm.all_gather(8e9, 8, link) == pytest.approx(
        comm.all_reduce(8e9, 8, link))
    assert comm.all_reduce(8e9, 1, link) == 0.0


def test_group_link_is_nvlink_inside_a_node_and_infiniband_across():
    gpu = get_gpu("a100-80gb")
    eff = comm.Efficiency()
    assert comm.group_link(gpu, 8, eff).bandwidth == pytest.approx(300e9 * eff.link)
    assert comm.group_link(gpu, 16, eff).bandwidth == pytest.approx(25e9 * eff.link)


def test_bubble_is_p_minus_1_micro_batches_divided_by_the_interleave():
    model, gpu = get_preset("llama-2-7b", n_layers=8), get_gpu("h100-sxm")
    base = dict(tp=2, pp=4, micro_batch=1, grad_accum=8)
    plain = step_time(model, gpu, Layout(**base), seq=2048)
    inter = step_time(model, gpu, Layout(**base, schedule="interleaved", interleave=2), seq=2048)
    per_mb = plain.parts["compute"] / 8 + plain.parts["tp"] / 8 + plain.parts["p2p"] / 8
    assert plain.parts["bubble"] == pytest.approx(3 * per_mb)
    assert inter.parts["bubble"] < plain.parts["bubble"] and inter.parts["p2p"] == pytest.approx(2 * plain.parts["p2p"])


def test_time_json_reports_the_model_and_the_cost(capsys):
    assert main(["time", "llama-2-7b", "--gpu", "a100-80gb", "--gpus", "16", "--tp", "2", "--batch", "2",
                 "--global-batch", "64", "--seq", "2048", "--checkpointing", "selective", "--tokens", "1e9",
                 "--price-per-gpu-hour", "2.5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["layout"]["dp"] == 8 and data["layout"]["grad_accum"] == 4
    assert data["tokens_per_second"] == pytest.approx(64 * 2048 / data["step_seconds"])
    assert data["days"] == pytest.approx(1e9 / data["tokens_per_second"] / 86400)
    assert data["cost"] == pytest.approx(data["gpu_hours"] * 2.5)
    assert 0 < data["mfu"] <= data["hfu"] < 1
    assert data["tflops_per_gpu"] == pytest.approx(data["mfu"] * 312)


@pytest.mark.parametrize("args, message", [
    (["--gpus", "16", "--dp", "4"], "--gpus 16 differs"),
    (["--gpus", "12", "--tp", "8"], "not a multiple"),
    (["--global-batch", "7", "--gpus", "2"], "--global-batch 7"),
    (["--sp"], "sequence parallelism"),
    (["--ep", "2", "--gpus", "2"], "no mixture-of-experts"),
])
def test_bad_layouts_are_one_line_errors(capsys, args, message):
    assert main(["time", "llama-2-7b", "--gpu", "a100", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_megatron_async_tp_communication_hides_behind_the_column_parallel_gemms():
    """Layout.tp_overlap (Megatron-LM's async TP communication): without sequence parallelism each
    column-parallel site's backward all-reduce is exposed only beyond its weight-gradient GEMM; with
    it the row-parallel all-gathers stay exposed. Built from the step-time model's own terms."""
    from layerwise.cost.step_time import _layer_terms, model_parts, time_ctx

    gpu = get_gpu("a100-80gb")
    model = get_preset("gpt2", d_model=6144, n_heads=64, n_layers=2, vocab_size=51200, max_seq=2048)
    act = 4 * 2048 * 6144 * 2
    for sp in (False, True):
        plain, over = (Layout(tp=8, micro_batch=4, sequence_parallel=sp, tp_overlap=o) for o in (False, True))
        ctx = time_ctx(gpu, "fp16-mixed", plain, attention="eager")
        parts = model_parts(model, 4, 2048, ctx)
        assert len(parts.col_gemm_fwd) == 2 and all(t > 0 for t in parts.col_gemm_fwd)
        link = comm.group_link(gpu, 8, ctx.eff)
        _, bwd_plain, *_ = _layer_terms(parts, plain, gpu, ctx, act)
        _, bwd_over, *_ = _layer_terms(parts, over, gpu, ctx, act)
        if sp:
            gather, scatter = comm.all_gather(act, 8, link), comm.reduce_scatter(act, 8, link)
            want = sum(gather + max(0.0, gather - g) + max(0.0, scatter - g) for g in parts.col_gemm_fwd)
        else:
            ar = comm.all_reduce(act, 8, link)
            want = sum(max(0.0, ar - g) for g in parts.col_gemm_fwd)
        assert bwd_over == pytest.approx(want) and bwd_over < bwd_plain
