"""Model states: PyTorch's real bytes (measured), ZeRO's and DeepSpeed's published numbers."""
from __future__ import annotations

import pytest

from layerwise.cost.model_states import (convention_model_states, deepspeed_zero2_estimate,
                                         deepspeed_zero3_estimate, torch_model_states)
from layerwise.cost.parallel import zero_model_states
from layerwise.cost.precision import CONVENTIONS, autocast_cache_bytes, nbytes

GIB = 2**30


# ---- measured against torch -------------------------------------------------------------------

def _module_and_step(precision: str, optimizer: str):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(48, 80), torch.nn.LayerNorm(80), torch.nn.Linear(80, 16))
    if precision in ("fp16", "bf16"):
        m = m.to(getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[precision]))
    opt = {"adamw": lambda: torch.optim.AdamW(m.parameters()),
           "sgd-momentum": lambda: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
           "adafactor": lambda: torch.optim.Adafactor(m.parameters())}[optimizer]()
    x = torch.randn(4, 48, dtype=next(m.parameters()).dtype)
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        if precision.endswith("-mixed"):
            with torch.autocast("cpu", dtype=torch.bfloat16 if precision == "bf16-mixed" else torch.float16):
                loss = m(x).float().sum()
        else:
            loss = m(x).float().sum()
        loss.backward()
        opt.step()
    params = list(m.parameters())
    nb = lambda ts: sum(t.untyped_storage().nbytes() for t in ts)  # noqa: E731
    state = [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    return shapes, nb(params), nb([p.grad for p in params]), nb(state)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "bf16-mixed", "fp16-mixed"])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd-momentum", "adafactor"])
def test_torch_model_states_match_a_real_step(precision, optimizer):
    shapes, w, g, s = _module_and_step(precision, optimizer)
    got = torch_model_states(shapes, precision=precision, optimizer=optimizer)
    # autocast keeps fp32 parameters/grads/states and no master copy
    assert (got.weights, got.gradients, got.optimizer_states, got.master_weights) == (w, g, s, 0)


def test_autocast_caches_low_precision_weight_copies_on_cpu():
    torch = pytest.importorskip("torch")
    from _storage_counter import NewStoragePeak

    lin = torch.nn.Linear(128, 256)
    x = torch.randn(4, 128)
    counter = NewStoragePeak()
    counter.ignore([x, lin.weight, lin.bias])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with counter:
            y = lin(x)
            del y
            cached = counter.live  # only the cast weight and bias remain: the cache
    assert cached == autocast_cache_bytes(128 * 256 + 256, "bf16-mixed")
    assert counter.live == 0  # freed when the context exits
    assert autocast_cache_bytes(1000, "fp32") == 0


def test_nbytes_packs_4_bit_exactly():
    assert nbytes(7, "int4") == 4 and nbytes(8, "nf4") == 4 and nbytes(3, "bf16") == 6


# ---- conventions --------------------------------------------------------------------------------

def test_conventions_total_16_and_18_bytes():
    # ZeRO §3.1 (memory_flops_facts.md §1a): 2 + 2 + 12 = 16; HF training anatomy (§3): 18
    assert CONVENTIONS["zero-16"].total == 16 and CONVENTIONS["zero-16"].k == 12
    assert CONVENTIONS["hf-18"].total == 18
    assert CONVENTIONS["torch-autocast"].total == 16
    assert convention_model_states(10, "hf-18").gradients == 40


# ---- ZeRO paper (memory_flops_facts.md §1b, §1c) ----------------------------------------------

@pytest.mark.parametrize("stage,gb", [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_figure1_7_5b_at_64_gpus(stage, gb):
    got = zero_model_states(7_500_000_000, stage=stage, dp=64).total / 1e9
    assert got == pytest.approx(gb, abs=0.05)


@pytest.mark.parametrize("psi,nd,row", [
    (7.5e9, 4, (52.5, 41.3, 30)), (7.5e9, 16, (35.6, 21.6, 7.5)), (7.5e9, 1024, (30.1, 15.1, 0.12)),
    (128e9, 16, (608, 368, 128)), (128e9, 256, (518, 263, 8)), (1e12, 64, (4187.5, 2218.75, 250)),
    (1e12, 1024, (4011.7, 2013.7, 15.6)),
])
def test_zero_table1_rows(psi, nd, row):
    got = [zero_model_states(int(psi), stage=s, dp=nd).total / 1e9 for s in (1, 2, 3)]
    assert got == pytest.approx(list(row), rel=2e-3, abs=0.006)


def test_zero_18_byte_convention_selectable():
    assert zero_model_states(1000, stage=0, dp=4, bytes_per_param="hf-18").total == 18_000
    # stage 2 with 18: weights 2 replicated + (4 + 4 + 8)/4 sharded
    assert zero_model_states(1000, stage=2, dp=4, bytes_per_param="hf-18").total == 2000 + 16 * 250


# ---- DeepSpeed estimator (memory_flops_facts.md §2) --------------------------------------------

def _gb(x: int) -> float:
    return round(x / GIB, 2)  # the estimator prints bytes/2**30 with 2 decimals and calls it GB


def test_deepspeed_zero3_t0_3b_published_table():
    # HF Transformers docs "DeepSpeed": bigscience/T0_3B, "2783M total params, 65M largest layer".
    # The exact counts are not published. One pair inside the printed int(P/1e6), int(L/1e6) must
    # reproduce all 12 printed numbers at once; a scan of that box finds P in 2,783.90-2,783.96M,
    # L in 65.80-65.90M only. A wrong term in any branch breaks at least one row.
    p, largest = 2_783_920_000, 65_850_000
    rows = [((True, True, True), (70.00, 0.25)), ((True, True, False), (70.00, 0.25)),
            ((True, False, True), (62.23, 5.43)), ((True, False, False), (62.23, 5.43)),
            ((False, False, True), (0.37, 46.91)), ((False, False, False), (15.56, 46.91))]
    for (off, off_p, zi), (cpu, gpu) in rows:
        got = deepspeed_zero3_estimate(p, largest, cpu_offload=off, cpu_offload_params=off_p, zero_init=zi)
        assert (_gb(got.cpu), _gb(got.gpu)) == (cpu, gpu), (off, off_p, zi)


def test_deepspeed_zero3_t5_small_exact_counts():
    # t5-small, 1 GPU (CSDN re-typing; counts P=60,506,624, largest=16,449,536 from the model)
    p, largest = 60_506_624, 16_449_536
    assert _gb(deepspeed_zero3_estimate(p, largest, cpu_offload=True, cpu_offload_params=True).cpu) == 1.52
    assert _gb(deepspeed_zero3_estimate(p, largest, cpu_offload=True, cpu_offload_params=True).gpu) == 0.06
    assert _gb(deepspeed_zero3_estimate(p, largest, cpu_offload=True).cpu) == 1.35
    assert _gb(deepspeed_zero3_estimate(p, largest, cpu_offload=True).gpu) == 0.17
    assert _gb(deepspeed_zero3_estimate(p, largest).gpu) == 1.08
    assert _gb(deepspeed_zero3_estimate(p, largest).cpu) == 0.09
    assert _gb(deepspeed_zero3_estimate(p, largest, zero_init=False).cpu) == 0.34


def test_deepspeed_llama2_7b_derived():
    p, largest = 6_738_415_616, 131_072_000  # embedding 32000 x 4096
    assert _gb(deepspeed_zero3_estimate(p, largest).gpu) == 113.45
    assert _gb(deepspeed_zero3_estimate(p, largest, num_gpus_per_node=8).gpu) == 14.61
    assert _gb(deepspeed_zero2_estimate(p).gpu) == 125.51
    assert _gb(deepspeed_zero2_estimate(p, num_gpus_per_node=8).gpu) == 26.67
