"""MoE routing as GShard / Switch run it: expert capacity and overflow on a hand-made routing, the
load-balancing loss against transformers' Mixtral implementation, the z-loss, fp32 router logits
under autocast, routing collapse without the aux loss and balance with it, and the summary's
total vs active parameters and expert combinations."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from layerwise.blocks.moe import MoE
from layerwise.build.moe_dispatch import capacity_combine
from layerwise.build.runtime import record_routing, router_loss, routing_stats, set_moe_routing


class _Scale(nn.Module):
    """A stand-in expert: x * s, so each output row names the expert that made it."""

    def __init__(self, s: float):
        super().__init__()
        self.s = s
        self.rows = []

    def forward(self, x):
        self.rows.append(x.shape[0])
        return x * self.s


def test_capacity_and_overflow_on_a_hand_made_routing():
    # 4 tokens, top-2 of 3 experts, capacity ceil(1.0 * 2 * 4 / 3) = 3. Choice-major queue:
    # first choices t0..t3 all want expert 0 -> t0, t1, t2 take its 3 slots, t3's first choice overflows;
    # second choices: t0 -> 1 (slot 0), t1 -> 2 (slot 0), t2 -> 1 (slot 1), t3 -> 1 (slot 2): all kept.
    spec = MoE(d_model=2, d_ff=2, n_experts=3, top_k=2, capacity_factor=1.0)
    assert spec.capacity(4) == 3
    experts = [_Scale(10.0), _Scale(100.0), _Scale(1000.0)]
    flat = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    idx = torch.tensor([[0, 1], [0, 2], [0, 1], [0, 1]])
    w = torch.tensor([[0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0.5, 0.5]])
    out, dropped = capacity_combine(experts, flat, idx, w, 3, count_dropped=True)
    want = torch.stack([0.75 * 10 * flat[0] + 0.25 * 100 * flat[0],
                        0.5 * 10 * flat[1] + 0.5 * 1000 * flat[1],
                        0.25 * 10 * flat[2] + 0.75 * 100 * flat[2],
                        0.5 * 100 * flat[3]])  # t3's expert-0 share was dropped
    torch.testing.assert_close(out, want)
    assert int(dropped) == 1
    assert [e.rows for e in experts] == [[3], [3], [3]]  # every expert computes its whole buffer


def test_a_token_whose_choices_all_overflow_passes_through_the_residual():
    # top-1 of 2 experts, capacity ceil(0.5 * 1 * 4 / 2) = 1: the router sends every token to expert 0
    spec = MoE(d_model=2, d_ff=3, n_experts=2, top_k=1, capacity_factor=0.5)
    m = spec.build()
    record_routing(m)
    with torch.no_grad():
        m.router.weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))
    x = torch.rand(1, 4, 2) + 0.1  # positive: expert 0 wins for every token
    out = m(x)
    torch.testing.assert_close(out[0, 0], m.experts[0](x[0, :1])[0])  # the first token took the slot
    assert torch.equal(out[0, 1:], torch.zeros(3, 2))  # the rest add nothing: the residual carries them
    assert routing_stats(m) == {"expert_counts": [4, 0], "dropped": 3, "overflow_rate": 0.75}


def test_dropless_and_ample_capacity_compute_the_same_function():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8)
    dropless = MoE(d_model=8, d_ff=8, n_experts=4, top_k=2).build()
    ample = MoE(d_model=8, d_ff=8, n_experts=4, top_k=2, capacity_factor=2.0).build()  # C = T*k/2: room for all
    ample.load_state_dict(dropless.state_dict())
    torch.testing.assert_close(ample(x), dropless(x))


def test_aux_loss_matches_transformers_mixtral():
    mixtral = pytest.importorskip("transformers.models.mixtral.modeling_mixtral")
    torch.manual_seed(0)
    spec = MoE(d_model=8, d_ff=8, n_experts=4, top_k=2, aux_loss_coef=1.0)
    m = spec.build()
    x = torch.randn(3, 5, 8)
    m(x)
    logits = m.router(x.reshape(-1, 8))
    want = mixtral.load_balancing_loss_func((logits,), 4, 2)
    torch.testing.assert_close(m.router_loss, want)


def test_z_loss_and_fp32_router_logits_under_autocast():
    torch.manual_seed(0)
    spec = MoE(d_model=8, d_ff=8, n_experts=4, top_k=2, z_loss_coef=0.5)
    m = spec.build()
    x = torch.randn(2, 3, 8)
    seen = []
    m.router.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m(x)
    assert seen == [torch.float32]  # ST-MoE: the gating runs in fp32
    logits = x.reshape(-1, 8) @ m.router.weight.T
    # ST-MoE eq. 5: (1/B) sum_i (log sum_j exp x_ij)^2, times the coefficient
    want = 0.5 * sum(math.log(sum(math.exp(v) for v in row)) ** 2 for row in logits.tolist()) / 6
    assert m.router_loss.dtype == torch.float32
    assert m.router_loss.item() == pytest.approx(want, rel=1e-5)


def _shares_after_training(coef: float) -> list[float]:
    """150 Adam steps of a top-2-of-4 MoE on a regression, its router started off balance (experts
    0 and its runner-up favoured); the share of (token, choice) pairs each expert gets at the end."""
    torch.manual_seed(0)
    m = MoE(d_model=8, d_ff=16, n_experts=4, top_k=2, aux_loss_coef=coef).build()
    record_routing(m)
    x = torch.randn(512, 8) + 2.0
    y = torch.tanh(x @ torch.randn(8, 8))
    with torch.no_grad():
        m.router.weight.mul_(0.1)
        m.router.weight[0] += 0.5
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(150):
        loss = (m(x) - y).pow(2).mean()
        extra = router_loss(m)
        opt.zero_grad()
        (loss if extra is None else loss + extra).backward()
        opt.step()
    m(x)
    counts = routing_stats(m)["expert_counts"]
    return [c / sum(counts) for c in counts]


def test_routing_collapses_without_the_aux_loss_and_balances_with_it():
    collapsed = _shares_after_training(0.0)
    assert sorted(collapsed)[:2] == [0.0, 0.0]  # two experts get no token at all
    balanced = _shares_after_training(0.1)
    assert max(abs(s - 0.25) for s in balanced) < 0.05


def test_balanced_routing_under_capacity_reports_its_overflow():
    # balanced routing gives each expert T*k/E pairs: 10 tokens * 2 / 4 = 5 each; capacity 0.6 -> ceil(3) = 3
    m = MoE(d_model=4, d_ff=4, n_experts=4, top_k=2, capacity_factor=0.6).build()
    set_moe_routing(m, "balanced")
    record_routing(m)
    m(torch.randn(2, 5, 4))
    assert routing_stats(m) == {"expert_counts": [5, 5, 5, 5], "dropped": 8, "overflow_rate": 0.4}


@pytest.mark.parametrize("n_experts,top_k,combinations", [(16, 2, 120), (64, 8, 4_426_165_368)])
def test_summary_shows_active_params_and_expert_combinations(n_experts, top_k, combinations):
    # DeepSeekMoE (arXiv 2401.06066, sec. 3.1): 16 experts top-2 give 120 combinations, 64 top-8 4,426,165,368
    from layerwise.cost.summary import summarize
    from layerwise.presets import get_preset
    from layerwise.report.summary import summary_json

    model = get_preset("mixtral-8x7b", n_layers=1, d_model=32, n_heads=4, n_kv_heads=2, d_ff=8, vocab_size=50,
                       n_experts=n_experts, top_k=top_k)
    got = summary_json(summarize(model.name, model.body, (1, 4)))
    module = model.build()
    moe = module.blocks[0].ffn if hasattr(module, "blocks") else None
    total = sum(p.numel() for p in module.parameters())
    expert = sum(p.numel() for p in moe.experts[0].parameters())
    assert got["params"]["total"] == total
    assert got["params"]["active_per_token"] == total - (n_experts - top_k) * expert
    assert got["moe"][0]["combinations"] == combinations


@pytest.mark.parametrize("preset,cf,counts,dropped", [
    # Mixtral: 64 tokens x top-2 / 8 experts = 16 pairs each; C = ceil(0.8 * 2 * 64 / 8) = 13 -> 3 dropped each
    ("mixtral-8x7b", 0.8, [16] * 8, 24),
    # Qwen1.5-MoE: 64 x top-4 = 256 pairs over 60 experts: 16 get 5, 44 get 4; C = ceil(0.9 * 4 * 64 / 60) = 4
    ("qwen1.5-moe-a2.7b", 0.9, [5] * 16 + [4] * 44, 16),
])
def test_presets_report_overflow_in_the_measured_step(preset, cf, counts, dropped):
    from layerwise.measure.step import measure_step
    from layerwise.presets import get_preset
    from layerwise.workload import Workload

    model = get_preset(preset, n_layers=1, capacity_factor=cf)  # the real widths, one layer, fake tensors
    got = measure_step(model, Workload(batch=1, seq=64, optimizer="sgd"), count_flops=False).routing
    assert got == {"expert_counts": counts, "dropped": dropped, "overflow_rate": dropped / sum(counts),
                   "routing": "balanced"}


def test_a_real_measured_step_reports_the_learned_routing():
    from layerwise.measure.step import measure_step
    from layerwise.presets import get_preset
    from layerwise.workload import Workload

    model = get_preset("mixtral-8x7b", n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_ff=16, vocab_size=64,
                       capacity_factor=0.5)
    got = measure_step(model, Workload(batch=2, seq=8, optimizer="sgd"), fake=False, count_flops=False).routing
    assert got["routing"] == "learned" and sum(got["expert_counts"]) == 2 * 8 * 2 * 2  # tokens x top-2 x layers
    # C = ceil(0.5 * 2 * 16 / 8) = 2 per expert and layer: at most 2 * 8 * 2 = 32 of the 64 pairs kept
    assert got["dropped"] >= 32 and got["overflow_rate"] == got["dropped"] / 64


def test_the_web_api_takes_the_capacity_factor_as_the_cli_does():
    import json

    from layerwise.serve.api import Api

    body = json.dumps({"model": "mixtral-8x7b", "workload": {"capacity_factor": 1.25}}).encode()
    data = Api().handle("summary", body)
    assert data["moe"] == [{"path": "blocks.0.ffn", "n_experts": 8, "top_k": 2, "combinations": 28,
                            "capacity_factor": 1.25, "aux_loss_coef": 0.0, "z_loss_coef": 0.0}]
