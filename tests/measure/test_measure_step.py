"""The measured step: fake equals real to the byte, and the peak moves as the workload says."""
from __future__ import annotations

import pytest
import torch

from _measure_models import ffn_tower, linear_stack, tiny_lm
from layerwise.measure.step import measure_step
from layerwise.measure.tracker import COMPONENTS
from layerwise.spec.errors import WorkloadError
from layerwise.workload import Workload

FAKE_EQUALS_REAL = [
    Workload(batch=2),
    Workload(batch=2, optimizer="adam", optimizer_impl="foreach", grad_accum=2),
    Workload(batch=2, optimizer="sgd-momentum", optimizer_impl="fused", checkpointing="full"),
    Workload(batch=2, optimizer="adafactor", precision="bf16-mixed", attention="eager"),
    Workload(batch=2, precision="bf16", optimizer="rmsprop", checkpointing="selective", attention="eager"),
    Workload(batch=2, mode="infer"),
]


@pytest.mark.parametrize("workload", FAKE_EQUALS_REAL, ids=lambda w: f"{w.optimizer}-{w.impl}-{w.precision}-{w.mode}")
def test_fake_step_equals_real_step_to_the_byte(workload):
    # DESIGN.md: the fake-tensor step "agrees to the byte with a real CPU run" - every component,
    # every phase's peak, the finer categories, and the FLOPs.
    model = tiny_lm(dropout=0.1)
    fake = measure_step(model, workload)
    real = measure_step(model, workload, fake=False)
    assert fake.fake and not real.fake
    assert fake.peak_bytes == real.peak_bytes
    assert fake.peak_phase == real.peak_phase
    assert fake.components == real.components
    assert fake.detail == real.detail
    assert fake.phase_peaks == real.phase_peaks
    assert fake.phase_components == real.phase_components
    for phase, comps in fake.phase_components.items():
        assert sum(comps.values()) == fake.phase_peaks[phase]
    assert (fake.flops_forward, fake.flops_backward) == (real.flops_forward, real.flops_backward)
    assert sum(fake.components.values()) == fake.peak_bytes
    assert set(fake.components) == set(COMPONENTS)


def _adamw_loop_temporaries(numels: list[int]) -> int:
    """Largest scratch alive inside torch.optim's `_single_tensor_adam` (torch/optim/adam.py):
    `denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)` makes two temporaries of the
    parameter's size (the sqrt and the quotient) while the previous parameter's `denom` is still
    bound, so at parameter i: 4 * (2 n_i + n_{i-1}) bytes (fp32)."""
    return max(4 * (2 * n + (numels[i - 1] if i else 0)) for i, n in enumerate(numels))


def test_adamw_loop_peaks_at_16_bytes_per_parameter_plus_its_temporaries():
    # An activation-light model (batch 1, features): the peak is inside optimizer.step with
    # 4 (weights) + 4 (gradients) + 8 (exp_avg, exp_avg_sq) bytes per parameter, plus one 4-byte
    # fp32 `step` tensor per parameter tensor, the loop's scratch, and the input batch.
    model = linear_stack((24, 40, 16, 56, 8))
    built = model.build()
    numels = [p.numel() for p in built.parameters()]
    n_params = sum(numels)
    assert n_params == model.params().total == 3064
    r = measure_step(model, Workload(batch=1, optimizer="adamw", optimizer_impl="loop"))
    assert r.peak_phase == "optimizer"
    c = r.components
    assert c["weights"] == 4 * n_params
    assert c["gradients"] == 4 * n_params
    assert c["optimizer_states"] == 8 * n_params + 4 * len(numels)
    assert c["temporaries"] == _adamw_loop_temporaries(numels)
    assert c["activations"] == 4 * 24  # the (1, 24) fp32 input; the forward's tensors are gone
    assert r.peak_bytes == 16 * n_params + 4 * len(numels) + _adamw_loop_temporaries(numels) + 4 * 24


def test_foreach_adamw_peaks_higher_than_the_loop_by_a_full_size_temporary():
    # DESIGN.md: foreach makes full-size temporaries (~20 bytes/param vs ~16 for the loop).
    model = linear_stack((64, 64, 64, 64))
    n_params = model.params().total
    loop = measure_step(model, Workload(optimizer_impl="loop"))
    foreach = measure_step(model, Workload(optimizer_impl="foreach"))
    assert foreach.peak_bytes > loop.peak_bytes
    assert foreach.peak_phase == loop.peak_phase == "optimizer"
    assert foreach.components["temporaries"] >= 4 * n_params > loop.components["temporaries"]


def test_cuda_device_defaults_to_foreach():
    model = linear_stack((32, 32, 32))
    cpu = measure_step(model, Workload())
    cuda = measure_step(model, Workload(device="cuda"))
    assert cuda.peak_bytes == measure_step(model, Workload(optimizer_impl="foreach")).peak_bytes
    assert cuda.peak_bytes > cpu.peak_bytes and cuda.notes


def test_peak_phase_follows_what_dominates():
    params_heavy = measure_step(linear_stack((128, 128, 128)), Workload(batch=1))
    acts_heavy = measure_step(ffn_tower(), Workload(batch=4))
    assert params_heavy.peak_phase == "optimizer"
    assert acts_heavy.peak_phase == "backward"
    # at the start of backward no parameter gradient exists yet; here the first ones have arrived
    assert acts_heavy.components["activations"] > acts_heavy.components["gradients"]


def test_peak_grows_with_batch():
    small, big = (measure_step(ffn_tower(), Workload(batch=b)) for b in (2, 4))
    assert big.peak_bytes > small.peak_bytes
    assert big.components["activations"] > small.components["activations"]
    # the model's state does not depend on the batch
    for key in ("weights", "optimizer_states"):
        assert big.components[key] == small.components[key]


def test_full_checkpointing_shrinks_activations_and_the_peak():
    none = measure_step(ffn_tower(), Workload(batch=4))
    full = measure_step(ffn_tower(), Workload(batch=4, checkpointing="full"))
    assert full.phase_peaks["forward"] < none.phase_peaks["forward"]
    assert full.components["activations"] < none.components["activations"]
    assert full.peak_bytes < none.peak_bytes
    # recomputation runs the forward again: more forward FLOPs are spent inside backward
    assert full.flops_backward > none.flops_backward
    assert full.flops_forward == none.flops_forward


def test_bf16_autocast_lowers_an_activation_heavy_peak():
    fp32 = measure_step(ffn_tower(), Workload(batch=4))
    mixed = measure_step(ffn_tower(), Workload(batch=4, precision="bf16-mixed"))
    pure = measure_step(ffn_tower(), Workload(batch=4, precision="bf16"))
    assert mixed.peak_bytes < fp32.peak_bytes
    assert mixed.components["weights"] == fp32.components["weights"]  # autocast keeps fp32 params
    assert pure.components["weights"] * 2 == fp32.components["weights"]  # pure bf16 halves them
    assert pure.peak_bytes < mixed.peak_bytes


def test_inference_is_weights_input_and_transients():
    r = measure_step(ffn_tower(), Workload(batch=4, mode="infer"))
    assert r.components["gradients"] == r.components["optimizer_states"] == 0
    assert r.flops_backward == 0
    assert r.peak_phase == "forward"


def test_forward_flops_of_a_linear_stack_are_2_b_din_dout():
    # one multiply-add = 2 FLOPs; backward: grad_input (not for the first layer, whose input needs
    # no grad) and grad_weight
    widths, batch = (24, 40, 16), 3
    r = measure_step(linear_stack(widths), Workload(batch=batch))
    assert r.flops_forward == 2 * batch * (24 * 40 + 40 * 16)
    assert r.flops_backward == 2 * batch * (24 * 40 + 2 * 40 * 16)


def test_plain_module_and_factory_are_measured_too():
    def factory():
        return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))

    a = measure_step(factory, Workload(batch=2), input_shape=(2, 8))
    b = measure_step(factory(), Workload(batch=2), input_shape=(2, 8))  # a real module, made fake
    assert a.peak_bytes == b.peak_bytes > 0


@pytest.mark.parametrize("changes, flag", [
    ({"zero": 1}, "--zero"), ({"tp": 2}, "--tp"), ({"dp": 2}, "--dp"), ({"pp": 2}, "--pp"),
    ({"optimizer": "rmsprop", "optimizer_impl": "fused"}, "fused"),
    ({"optimizer": "adafactor", "optimizer_impl": "fused"}, "fused"),
    ({"optimizer": "adam-8bit", "optimizer_impl": "foreach"}, "adam-8bit has only loop"),
    ({"quant": "int8"}, "--quant"),
    ({"mode": "infer", "grad_accum": 2}, "--grad-accum"),
])
def test_bad_workloads_raise_workload_error_naming_the_flag(changes, flag):
    with pytest.raises(WorkloadError, match=flag):
        measure_step(tiny_lm(), Workload(batch=1).with_(**changes))


def test_checkpointing_needs_repeated_blocks_or_attention():
    with pytest.raises(WorkloadError, match="no repeated blocks"):
        measure_step(linear_stack((8, 8, 8)), Workload(checkpointing="full"))
    with pytest.raises(WorkloadError, match="no attention"):
        measure_step(ffn_tower(), Workload(checkpointing="selective"))


def test_selective_checkpointing_drops_the_eager_attention_probabilities():
    # Eager attention saves the (B, H, S, S) probabilities (and the dropout mask); selective
    # recomputation keeps q, k, v instead, so the forward's peak shrinks. Backward recomputes
    # q @ k^T (2*B*H*S*S*d_head FLOPs per layer) but not probs @ v: non-reentrant checkpointing
    # stops recomputing once every saved tensor it needs (here the probabilities) exists again.
    model, batch = tiny_lm(dropout=0.1), 4
    eager = Workload(batch=batch, attention="eager")
    none = measure_step(model, eager)
    sel = measure_step(model, eager.with_(checkpointing="selective"))
    assert sel.phase_peaks["forward"] < none.phase_peaks["forward"]
    n_layers, heads, seq, d_head = 2, 2, 8, 8
    assert sel.flops_backward - none.flops_backward == n_layers * (2 * batch * heads * seq * seq * d_head)


def test_lion_without_an_implementation_is_a_workload_error():
    pytest.importorskip("torch")
    try:
        import lion_pytorch  # noqa: F401
    except ImportError:
        with pytest.raises(WorkloadError, match="lion"):
            measure_step(tiny_lm(), Workload(optimizer="lion"))
    else:
        assert measure_step(tiny_lm(), Workload(optimizer="lion")).peak_bytes > 0


def test_sequence_longer_than_the_model_allows_is_a_workload_error():
    with pytest.raises(WorkloadError, match="--seq"):
        measure_step(tiny_lm(), Workload(seq=64))


def test_flops_match_flop_counter_mode_and_do_not_move_the_peak():
    # The tracker counts with FlopCounterMode's formulas but not through FlopCounterMode, whose
    # module hooks would keep checkpoint-recomputed tensors alive to the end of backward.
    import torch.nn.functional as F

    from layerwise.measure.flops import count_flops

    model, batch = tiny_lm(), 2
    module = model.build()
    x = torch.randint(0, 32, (batch, 8))
    counted = count_flops(module, x, loss_fn=lambda out: F.cross_entropy(out.reshape(-1, 32), x.reshape(-1)))
    r = measure_step(model, Workload(batch=batch))
    assert (r.flops_forward, r.flops_backward) == (counted.forward, counted.backward)
    ckpt = Workload(batch=batch, checkpointing="full")
    with_flops, without = measure_step(model, ckpt), measure_step(model, ckpt, count_flops=False)
    assert with_flops.components == without.components and without.flops_forward == 0


def test_grad_accum_measures_a_later_micro_batch_with_gradients_alive():
    model = linear_stack((32, 32, 32))
    n = model.params().total
    one = measure_step(model, Workload(batch=2))
    two = measure_step(model, Workload(batch=2, grad_accum=2))
    assert two.phase_peaks["setup"] == one.phase_peaks["setup"] + 4 * n  # earlier micro-batch's grads
    assert two.phase_peaks["forward"] == one.phase_peaks["forward"] + 4 * n


def test_fp16_autocast_runs_on_cpu_and_halves_what_bf16_halves():
    bf16 = measure_step(ffn_tower(), Workload(batch=4, precision="bf16-mixed"))
    fp16 = measure_step(ffn_tower(), Workload(batch=4, precision="fp16-mixed"))
    assert fp16.components == bf16.components  # same element size, same CPU autocast op lists


def test_lora_rank_leaves_gradients_and_adam_state_only_for_the_adapters():
    # tiny_lm: d_model 16, 2 layers; LoRA r=4 on q_proj and v_proj: A (4x16) + B (16x4) each.
    from layerwise.measure.step import measure_step as run

    result = run(tiny_lm(), Workload(batch=2, lora_rank=4))
    adapters = 2 * 2 * (4 * 16 + 16 * 4)
    tensors = 2 * 2 * 2  # layers x projections x (A, B)
    # AdamW keeps exp_avg and exp_avg_sq (fp32) per adapter parameter, plus a 4-byte step per tensor
    assert result.components["optimizer_states"] == 2 * 4 * adapters + 4 * tensors


FUSED = [(opt, p) for opt in ("sgd", "sgd-momentum", "adam", "adamw", "adagrad") for p in ("fp32", "bf16-mixed")]


@pytest.mark.parametrize("optimizer,precision", FUSED)
def test_fused_steps_stay_fake(monkeypatch, optimizer, precision):
    # A fused step without a Meta kernel made every fake tensor real (run_fallback_kernel): a 7B
    # model's fused SGD step took over 25 minutes and 20 GB of RSS. No op of the step may fall back.
    import torch._subclasses.fake_tensor as fake_tensor

    def refuse(func, *args, **kwargs):
        raise AssertionError(f"{func} ran on real tensors under FakeTensorMode")

    monkeypatch.setattr(fake_tensor, "run_fallback_kernel", refuse)
    w = Workload(batch=2, optimizer=optimizer, optimizer_impl="fused", precision=precision, grad_accum=2)
    fake = measure_step(tiny_lm(), w, count_flops=False)
    real = measure_step(tiny_lm(), w, fake=False, count_flops=False)
    assert fake.peak_bytes == real.peak_bytes
