"""RLHF memory (cost/rlhf.py) against the measured PPO / DPO step (measure/rlhf.py, fake tensors):
the peak and every stage (colocated) or every model's device (separate) within 2% on small models
over precisions and optimizers; the CLI's JSON keys; the frozen reference's quantization; the flags
--rlhf refuses."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from layerwise.cli import main  # noqa: E402
from layerwise.cost.memory import inference_memory, training_memory  # noqa: E402
from layerwise.cost.rlhf import rlhf_memory, rlhf_models  # noqa: E402
from layerwise.measure.rlhf import measure_rlhf  # noqa: E402
from layerwise.presets import get_preset  # noqa: E402
from layerwise.workload import Workload  # noqa: E402

LLAMA = dict(n_layers=2, d_model=128, n_heads=4, n_kv_heads=2, d_ff=256, vocab_size=1000)
CASES = [  # (preset, overrides, algorithm, workload)
    ("llama-2-7b", LLAMA, "ppo", dict(batch=2, seq=32, new_tokens=16)),
    ("llama-2-7b", LLAMA, "ppo", dict(batch=2, seq=32, new_tokens=16, precision="bf16-mixed", optimizer="sgd")),
    ("tiny-gpt", {}, "ppo", dict(batch=1, seq=24, new_tokens=8, precision="bf16", attention="eager")),
    ("llama-2-7b", LLAMA, "dpo", dict(batch=2, seq=48)),
    ("tiny-gpt", {}, "dpo", dict(batch=2, seq=32, precision="bf16-mixed", checkpointing="full")),
]


@pytest.mark.parametrize("preset,overrides,algorithm,fields", CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_rlhf_step_matches_measure(preset, overrides, algorithm, fields):
    model = get_preset(preset, **overrides)
    workload = Workload(**fields)
    analytic, measured = rlhf_memory(model, workload, algorithm), measure_rlhf(model, workload, algorithm)
    assert abs(analytic.peak_bytes - measured.peak_bytes) <= 0.02 * measured.peak_bytes
    assert analytic.peak_stage == measured.peak_stage
    for stage in analytic.stages:
        got = measured.stages[stage.name][0]
        assert abs(stage.total - got) <= 0.02 * got, (stage.name, stage.total, got)


@pytest.mark.parametrize("algorithm,fields", [("ppo", dict(batch=2, seq=32, new_tokens=16)),
                                              ("dpo", dict(batch=2, seq=48, precision="bf16-mixed"))])
def test_separate_devices_match_measure(algorithm, fields):
    # one device per model: each stage registers only the model it runs; every device within 2%
    model = get_preset("llama-2-7b", **LLAMA)
    workload = Workload(**fields)
    analytic = rlhf_memory(model, workload, algorithm, placement="separate")
    measured = measure_rlhf(model, workload, algorithm, placement="separate")
    assert set(analytic.models) == set(measured.models)
    for name, (got, _) in measured.models.items():
        assert abs(analytic.models[name][0] - got) <= 0.02 * got, (name, analytic.models[name][0], got)
    assert analytic.peak_stage == measured.peak_stage  # the model whose device peaks


def test_ppo_holds_four_models_and_the_rollout_cache():
    model = get_preset("llama-2-7b", **LLAMA)
    w = Workload(batch=2, seq=32, new_tokens=16)
    report = rlhf_memory(model, w, "ppo")
    assert set(report.models) == {"actor", "critic", "reference", "reward"}
    specs = rlhf_models(model, "ppo")
    critic = specs["critic"][0].build()
    assert critic(torch.randint(0, 1000, (2, 5))).shape == (2, 5, 1)  # the scalar head
    # colocated: every stage holds the four models' weights; the two trained ones their optimizer states
    actor = training_memory(model, w.with_(seq=48)).components
    # frozen models are held in the run's precision (fp32 here), not inference's bf16 default
    weights = sum(inference_memory(specs[n][0], Workload(mode="infer", seq=1, precision=w.precision)).components.weights
                  for n in specs)
    rollout = next(s for s in report.stages if s.name == "rollout").components
    assert rollout.weights == weights
    assert rollout.optimizer_states > actor.optimizer_states  # + the critic's
    # the KV cache of prompt + new tokens: 2 (k, v) x layers x batch x kv heads x 48 positions x d_head, fp32
    assert rollout.kv_cache == 2 * 2 * 2 * 2 * 48 * 32 * 4


def test_separate_placement_and_a_quantized_reference():
    model = get_preset("llama-2-7b", **LLAMA)
    w = Workload(batch=2, seq=32, new_tokens=16)
    colocated = rlhf_memory(model, w, "ppo")
    separate = rlhf_memory(model, w, "ppo", placement="separate")
    assert separate.per_device and separate.peak_bytes == max(b for b, _ in separate.models.values())
    assert separate.peak_bytes < colocated.peak_bytes
    nf4 = rlhf_memory(model, w, "ppo", ref_quant="nf4")
    ref = rlhf_models(model, "ppo")["reference"][0]
    quantized = inference_memory(ref, Workload(mode="infer", seq=1, quant="nf4", precision=w.precision)).components.weights
    assert nf4.models["reference"][1].weights == quantized < colocated.models["reference"][1].weights / 1.5
    assert nf4.models["actor"] == colocated.models["actor"]  # only the reference is quantized


def test_memory_rlhf_json(capsys):
    assert main(["memory", "tiny-gpt", "--rlhf", "dpo", "--batch", "2", "--seq", "32", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"peak_bytes", "models", "components", "stages"} <= set(data)
    assert set(data["models"]) == {"policy", "reference"}
    assert all(set(m) == {"peak_bytes", "components"} for m in data["models"].values())
    assert data["peak_bytes"] == max(s["peak_bytes"] for s in data["stages"].values())


@pytest.mark.parametrize("argv,message", [
    (["memory", "tiny-gpt", "--rlhf", "ppo", "--seq", "32"], "--new-tokens"),
    (["memory", "tiny-gpt", "--rlhf", "dpo", "--seq", "32", "--new-tokens", "4"], "no rollout"),
    (["memory", "tiny-gpt", "--placement", "separate"], "--placement applies to --rlhf"),
    (["memory", "tiny-gpt", "--rlhf", "ppo", "--new-tokens", "4", "--fit", "24"], "--fit does not apply"),
    (["memory", "tiny-gpt", "--rlhf", "sac", "--new-tokens", "4"], "--rlhf must be one of"),
    (["memory", "digits-cnn", "--rlhf", "dpo"], "not a decoder LM"),
    (["verify", "tiny-gpt", "--rlhf", "dpo", "--zero", "2", "--dp", "2"], "one process"),
    (["verify", "tiny-gpt", "--rlhf", "dpo", "--ref-quant", "nf4"], "not measured"),
])
def test_rlhf_refusals(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
