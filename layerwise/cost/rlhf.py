"""Memory of an RLHF / preference-tuning step: PPO's four models, or DPO's two. Pure Python.

PPO (Ouyang et al. 2022, arXiv 2203.02155; the step of TRL's PPOTrainer / DeepSpeed-Chat) holds
  actor      the policy LM, trained (weights, master weights, optimizer states)
  critic     the LM with a scalar head (decoder_lm head_out=1), trained: the value model
  reference  the initial policy, frozen (optionally quantized: `ref_quant`)
  reward     the reward model (an LM with a scalar head), frozen
and runs, in turn (the measure reading's stages, measure/rlhf.py):
  rollout        the actor generates `new_tokens` after a `seq`-token prompt through its KV cache
  score          no-grad forwards of the full sequences (S = seq + new_tokens): the actor's and the
                 reference's log-probabilities, the reward model's score, the critic's values
  actor_update   one training step of the actor on the PPO clipped loss
  critic_update  one training step of the critic on the value loss
DPO (Rafailov et al. 2023, arXiv 2305.18290) holds the policy (trained) and a frozen reference,
both run on the chosen and the rejected sequence of each pair (2 * batch sequences of `seq` tokens):
  reference      the reference's no-grad log-probabilities
  policy_update  one training step of the policy on the DPO loss

Each stage's bytes = what every model keeps all along (trained: weights, master weights, optimizer
states; frozen: weights) + the rollout's buffers + the stage's own work, which is the single-model
reading of cost/memory.py: a training step (training_memory), a prefill + KV cache
(inference_memory) or a no-grad forward ending in the log-probabilities (trace_step). Colocated
(one device): the peak is the largest stage. Separate (one device per model): each model's device
holds that model and its own stages only, and the peak is the largest device. `--lora-rank`
applies to the trained models (the frozen ones stay whole copies); `--zero`/`--dp` shard the
trained models' states as in a single-model step, the frozen weights only at stage 3.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from layerwise.cost.act_trace import nbytes
from layerwise.cost.memory import Components, MemoryReport, inference_memory, trace_step, training_memory
from layerwise.spec.errors import WorkloadError
from layerwise.spec.model import Model
from layerwise.spec.transform import freeze
from layerwise.workload import QUANT, Workload

ALGORITHMS = ("ppo", "dpo")
PLACEMENTS = ("colocated", "separate")


@dataclass(frozen=True)
class Stage:
    name: str
    components: Components
    models: tuple[str, ...]  # the models whose work this stage is (their device, when separate)

    @property
    def total(self) -> int:
        return self.components.total


@dataclass(frozen=True)
class RLHFReport:
    algorithm: str
    placement: str
    peak_bytes: int
    peak_stage: str
    components: Components
    stages: tuple[Stage, ...]  # colocated: the whole device; separate: each stage on its model's device
    models: dict  # name -> (peak bytes, Components) of the device that model sits on (placed alone)
    per_device: bool
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"rlhf": self.algorithm, "placement": self.placement, "peak_bytes": self.peak_bytes,
                "peak_phase": self.peak_stage, "components": self.components.as_dict(),
                "per_device": self.per_device,
                "stages": {s.name: {"peak_bytes": s.total, "components": s.components.as_dict()} for s in self.stages},
                "models": {n: {"peak_bytes": b, "components": c.as_dict()} for n, (b, c) in self.models.items()}}


def scalar_head(model: Model, name: str) -> Model:
    """The LM with a scalar head (a reward model, a critic): head_out=1, untied; output (B, S, 1)."""
    body = model.body
    if getattr(body, "type_name", "") != "decoder_lm":
        raise WorkloadError(f"--rlhf: {model.name} is not a decoder LM (a decoder_lm spec or preset)")
    return replace(model, name=name, body=replace(body, head_out=1, tie_embeddings=False), task="none")


def rlhf_models(model: Model, algorithm: str, reward: Model | None = None) -> dict[str, tuple[Model, bool]]:
    """name -> (spec, trained). The critic and (unless given) the reward model are `model` with a
    scalar head; the reference is `model` itself."""
    if algorithm not in ALGORITHMS:
        raise WorkloadError(f"--rlhf must be one of {list(ALGORITHMS)}, got {algorithm!r}")
    if getattr(model.body, "type_name", "") != "decoder_lm" or model.task != "lm":
        raise WorkloadError(f"--rlhf: {model.name} is not a decoder LM (a decoder_lm spec or preset)")
    lm = replace(model, task="lm")
    ref = replace(lm, name="reference", body=freeze(lm.body))
    if algorithm == "dpo":
        return {"policy": (replace(lm, name="policy"), True), "reference": (ref, False)}
    rm = scalar_head(reward if reward is not None else model, "reward")
    return {"actor": (replace(lm, name="actor"), True), "critic": (scalar_head(model, "critic"), True),
            "reference": (ref, False), "reward": (replace(rm, body=freeze(rm.body)), False)}


def _check(algorithm: str, placement: str, workload: Workload, ref_quant: str) -> None:
    if placement not in PLACEMENTS:
        raise WorkloadError(f"--placement must be one of {list(PLACEMENTS)}, got {placement!r}")
    if ref_quant not in QUANT:
        raise WorkloadError(f"--ref-quant must be one of {list(QUANT)}, got {ref_quant!r}")
    if workload.mode != "train":
        raise WorkloadError("--rlhf sizes a training step: --mode train")
    if workload.quant != "none":
        raise WorkloadError("--quant: with --rlhf use --ref-quant for the frozen reference (the trained models are not quantized)")
    if workload.tp > 1 or workload.pp > 1 or workload.grad_accum > 1:
        raise WorkloadError("--rlhf: --tp, --pp and --grad-accum are not modelled for RLHF steps")
    if algorithm == "ppo" and not workload.new_tokens:
        raise WorkloadError("--rlhf ppo: --new-tokens N (the tokens each rollout generates after the --seq prompt)")
    if algorithm == "dpo" and workload.new_tokens:
        raise WorkloadError("--rlhf dpo has no rollout: drop --new-tokens (--seq is each chosen/rejected sequence)")


def rlhf_memory(model: Model, workload: Workload, algorithm: str = "ppo", *, placement: str = "colocated",
                ref_quant: str = "none", reward: Model | None = None) -> RLHFReport:
    """The RLHF step's stages and peak (see the module docstring). `workload.seq` is the prompt
    (PPO) or each sequence (DPO), `workload.batch` the prompts (PPO) or pairs (DPO)."""
    _check(algorithm, placement, workload, ref_quant)
    models = rlhf_models(model, algorithm, reward)
    seq = model.input_shape(workload.batch, workload.seq)[1]
    if algorithm == "ppo":
        stages = _ppo_stages(models, workload, seq, ref_quant)
    else:
        stages = _dpo_stages(models, workload, seq, ref_quant)
    return _report(algorithm, placement, models, stages, workload, ref_quant)


# ---- what each model keeps, and the stages' own work ---------------------------------------------
def _resident(spec: Model, trained: bool, workload: Workload, quant: str, seq: int, batch: int) -> Components:
    """Trained: weights, master weights and optimizer states of its training step (gradients exist
    only inside its update). Frozen: its weights (quantized with `quant`; ZeRO-3 shards them)."""
    if trained:
        c = training_memory(spec, workload.with_(batch=batch, seq=seq), cuda_allocator=False).components
        return Components(weights=c.weights, master_weights=c.master_weights, optimizer_states=c.optimizer_states)
    w = inference_memory(spec, workload.with_(mode="infer", batch=1, seq=1, new_tokens=0, quant=quant)).components.weights
    return Components(weights=-(-w // workload.dp) if workload.zero == 3 else w)


def _update(spec: Model, workload: Workload, batch: int, seq: int, resident: Components) -> Components:
    """A trained model's step at its peak, minus what it keeps anyway (and minus its input batch
    and targets, which are the stage's buffers)."""
    report = training_memory(spec, workload.with_(batch=batch, seq=seq), cuda_allocator=False)
    own = _minus(report.components, resident)
    return replace(own, activations=own.activations - _batch_bytes(spec, batch, seq))


def _score(spec: Model, workload: Workload, batch: int, seq: int) -> Components:
    """A no-grad forward of (batch, seq) tokens: the forward's transient peak, or the log-probs'
    moment (logits, their fp32 copy under autocast and the log-softmax); minus the input ids."""
    w = workload.with_(mode="infer", batch=batch, seq=seq, new_tokens=0)
    st = trace_step(spec, w)
    # autocast's cached weight copies (trained models' weights require grad) live to the region's end
    at_logprobs = st.loss_fwd + st.trace.cast_cache_bytes() if spec.task == "lm" else 0
    return Components(activations=max(st.trace.liveness.peak, st.inputs + at_logprobs) - st.inputs)


def _rollout(spec: Model, workload: Workload, batch: int, prompt: int) -> Components:
    """Generation: the prefill's transient peak and the KV cache for prompt + new tokens."""
    c = inference_memory(spec, workload.with_(mode="infer", batch=batch, seq=prompt)).components
    ids = nbytes(batch * prompt, "int64")
    return Components(activations=c.activations - ids, kv_cache=c.kv_cache)


def _batch_bytes(spec: Model, batch: int, seq: int) -> int:
    """The input ids and, for an LM loss, the targets (both int64)."""
    ids = nbytes(batch * seq, "int64")
    return 2 * ids if spec.task == "lm" else ids


def _ppo_stages(models, workload: Workload, prompt: int, ref_quant: str) -> list[tuple[str, tuple[str, ...], Components]]:
    b, s = workload.batch, prompt + workload.new_tokens
    actor, critic, ref, rm = (models[n][0] for n in ("actor", "critic", "reference", "reward"))
    ids = nbytes(b * s, "int64")
    per_token = nbytes(b * s, "fp32")
    # after scoring: the sequences and their shifted targets, old log-probs, returns, advantages
    buffers = Components(activations=2 * ids + 3 * per_token)
    scoring = Components(activations=2 * ids + 4 * per_token)  # + the reference's log-probs, the values
    return [
        ("rollout", ("actor",), _add(_rollout(actor, workload, b, prompt), Components(activations=ids))),
        ("score", ("actor",), _add(_score(actor, workload, b, s), scoring)),
        ("score", ("reference",), _add(_score(ref, workload.with_(quant=ref_quant), b, s), scoring)),
        ("score", ("reward",), _add(_score(rm, workload, b, s), scoring)),
        ("score", ("critic",), _add(_score(critic, workload, b, s), scoring)),
        ("actor_update", ("actor",), _add(_update(actor, workload, b, s, _resident(actor, True, workload, "none", s, b)),
                                          buffers)),
        ("critic_update", ("critic",), _add(_update(critic, workload, b, s, _resident(critic, True, workload, "none", s, b)),
                                            buffers)),
    ]


def _dpo_stages(models, workload: Workload, seq: int, ref_quant: str):
    b2 = 2 * workload.batch  # chosen and rejected
    policy, ref = models["policy"][0], models["reference"][0]
    seqs = Components(activations=nbytes(b2 * seq, "int64") * 2 + nbytes(b2, "fp32"))  # ids, targets, ref log-probs
    return [
        ("reference", ("reference",), _add(_score(ref, workload.with_(quant=ref_quant), b2, seq), seqs)),
        ("policy_update", ("policy",), _add(_update(policy, workload, b2, seq,
                                                    _resident(policy, True, workload, "none", seq, b2)), seqs)),
    ]


def _report(algorithm: str, placement: str, models, stages, workload: Workload, ref_quant: str) -> RLHFReport:
    seq = workload.seq
    b = workload.batch * (2 if algorithm == "dpo" else 1)
    s_train = (seq or 0) + workload.new_tokens
    resident = {}
    for name, (spec, trained) in models.items():
        s = spec.input_shape(b, s_train if algorithm == "ppo" else seq)[1]
        resident[name] = _resident(spec, trained, workload, ref_quant if name == "reference" else "none", s, b)
    everything = _sum(resident.values())
    colocated = [_merge(name, [_add(everything, c) for n, m, c in stages if n == name])
                 for name in dict.fromkeys(n for n, _, _ in stages)]
    per_model = {}
    for name in models:
        mine = [Stage(n, _add(resident[name], c), m) for n, m, c in stages if name in m]
        top = max(mine, key=lambda st: st.total) if mine else Stage("idle", resident[name], (name,))
        per_model[name] = (top.total, top.components)
    if placement == "colocated":
        peak = max(colocated, key=lambda st: st.total)
        return RLHFReport(algorithm, placement, peak.total, peak.name, peak.components, tuple(colocated),
                          per_model, workload.zero > 0 or workload.dp > 1)
    name = max(per_model, key=lambda n: per_model[n][0])
    separate = tuple(Stage(n, _add(resident[m[0]], c), m) for n, m, c in stages)
    return RLHFReport(algorithm, placement, per_model[name][0], name, per_model[name][1], separate, per_model, True,
                      (f"separate devices: the peak is the {name}'s device",))


def _merge(name: str, options: list[Components]) -> Stage:
    top = max(options, key=lambda c: c.total)
    return Stage(name, top, ())


def _add(a: Components, b: Components) -> Components:
    return Components(**{k: v + getattr(b, k) for k, v in a.as_dict().items()})


def _minus(a: Components, b: Components) -> Components:
    return Components(**{k: v - getattr(b, k) for k, v in a.as_dict().items()})


def _sum(cs) -> Components:
    total = Components()
    for c in cs:
        total = _add(total, c)
    return total
