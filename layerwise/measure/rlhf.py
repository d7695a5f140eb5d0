"""The measure reading of an RLHF step (cost/rlhf.py describes the stages): the models built from
their specs, one PPO update (rollout through the actor's KV cache, scoring, the actor's clipped
loss, the critic's value loss) or one DPO update, each stage under its own StorageTracker with the
models, their optimizer states and the live buffers registered first. Fake tensors by default
(one stage's peak is that tracker's peak); the same code runs on real CPU tensors.

Losses (the step's arithmetic, not a trainer):
  PPO  log-probs = -cross_entropy(logits, next tokens, reduction="none"); returns = score -
       kl_coef * (old - reference log-probs); advantages = returns - values; actor loss =
       -mean(min(r * A, clip(r, 1 - eps, 1 + eps) * A)), r = exp(new - old); critic loss =
       mean((values - returns)^2)  (Schulman et al. 2017, arXiv 1707.06347; Ouyang et al. 2022)
  DPO  -mean(logsigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))))  (Rafailov et al. 2023)
The next tokens are the sequences rolled by one (the last position's target wraps around: the
shapes and bytes of a shifted batch without a copy of the logits).
"""
from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from layerwise.cost.rlhf import PLACEMENTS, rlhf_models
from layerwise.measure import setup
from layerwise.measure.tracker import StorageTracker
from layerwise.spec.errors import WorkloadError
from layerwise.workload import Workload

KL_COEF, CLIP, BETA = 0.1, 0.2, 0.1


@dataclass(frozen=True)
class RLHFMeasurement:
    placement: str
    peak_bytes: int
    peak_stage: str  # colocated: the stage; separate: the model whose device peaks
    components: dict[str, int]
    stages: dict[str, tuple[int, dict[str, int]]]  # stage -> (peak bytes, components at it)
    models: dict[str, tuple[int, dict[str, int]]]  # model -> its own stages' peak (separate placement)

    def to_json(self) -> dict:
        return {"placement": self.placement, "peak_bytes": self.peak_bytes, "peak_phase": self.peak_stage,
                "components": dict(self.components),
                "stages": {n: {"peak_bytes": b, "components": dict(c)} for n, (b, c) in self.stages.items()},
                "models": {n: {"peak_bytes": b, "components": dict(c)} for n, (b, c) in self.models.items()}}


def measure_rlhf(model, workload: Workload, algorithm: str = "ppo", *, placement: str = "colocated",
                 fake: bool = True) -> RLHFMeasurement:
    """One PPO or DPO update of `model` (a decoder LM spec). Colocated: every model and optimizer
    state is registered in every stage (one device). Separate: a stage registers only the models
    it runs (one device per model; the others' tensors are never touched, so never counted)."""
    if workload.zero or workload.dp > 1 or workload.lora_rank:
        raise WorkloadError("--rlhf: the measure reading runs one process without ZeRO or LoRA; use "
                            "`layerwise memory --rlhf` for those set-ups")
    if workload.device != "cpu":
        raise WorkloadError("--rlhf: the measure reading runs on the CPU (--device cpu)")
    if placement not in PLACEMENTS:
        raise WorkloadError(f"--placement must be one of {list(PLACEMENTS)}, got {placement!r}")
    models = rlhf_models(model, algorithm)
    fake_mode = setup_fake() if fake else contextlib.nullcontext()
    with fake_mode:
        run = _Run(models, workload, fake, placement == "separate")
        run.ppo() if algorithm == "ppo" else run.dpo()
    top = run.by_model if placement == "separate" else run.stages
    name = max(top, key=lambda n: top[n][0])
    return RLHFMeasurement(placement, top[name][0], name, top[name][1], run.stages, run.by_model)


def setup_fake():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode()


class _Run:
    def __init__(self, models, workload: Workload, fake: bool, separate: bool):
        self.workload, self.fake, self.separate = workload, fake, separate
        torch.manual_seed(0)
        self.modules, self.optimizers = {}, {}
        for name, (spec, trained) in models.items():
            m = spec.build()
            setup.apply_precision(m, workload)
            setup.apply_runtime(m, workload, fake=fake)
            if trained:
                m.train()
                setup.apply_checkpointing(m, workload, spec.body)
                self.optimizers[name] = setup.make_optimizer([p for p in m.parameters() if p.requires_grad], workload)
                with StorageTracker(fake_scalars=fake):  # .item() of fake step counters needs its stand-in
                    _warm_up(self.optimizers[name])
            else:
                m.eval()
                m.requires_grad_(False)
            self.modules[name] = m
        self.spec = models
        self.stages: dict[str, tuple[int, dict[str, int]]] = {}
        self.by_model: dict[str, tuple[int, dict[str, int]]] = {}

    # ---- bookkeeping ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str, on: str, buffers, grad: bool):
        """A tracker over one stage of model `on`: the models and optimizer states on its device
        (colocated: all of them) and `buffers` registered first."""
        tracker = StorageTracker(fake_scalars=self.fake, count_flops=False)
        here = [on] if self.separate else list(self.modules)
        for n in here:
            tracker.register_module(self.modules[n])
            if n in self.optimizers:
                tracker.register_optimizer(self.optimizers[n])
        tracker.register([b for b in buffers if b is not None], "inputs")
        gc.disable()
        try:
            with tracker, (contextlib.nullcontext() if grad else torch.no_grad()):
                yield tracker
        finally:
            gc.enable()
            tracker.remove_hooks()
        peak = (tracker.peak.total, tracker.peak.components())
        for table, key in ((self.stages, name), (self.by_model, on)):
            if key not in table or peak[0] > table[key][0]:
                table[key] = peak

    def autocast(self):
        return setup.autocast(self.workload, "cpu")

    def logprobs(self, name: str, ids, targets):
        """(B*S,) log-probabilities of the targets under model `name` (its logits die here)."""
        logits = self.modules[name](ids)
        return -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")

    def scored(self, fn):
        """One no-grad forward in its own autocast region (autocast's weight-copy cache is dropped
        when the region ends, so one model's copies do not outlive its forward)."""
        with self.autocast():
            return fn()

    def update(self, name: str, loss_fn, tracker) -> None:
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        with tracker.phase("forward"), self.autocast():
            loss = loss_fn()
        with tracker.phase("backward"):
            loss.backward()
            del loss
        with tracker.phase("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)  # as DeepSpeed's engine.step(): no gradients held into the next stage

    # ---- PPO -------------------------------------------------------------------------------------
    def ppo(self):
        w = self.workload
        vocab = self.spec["actor"][0].input.vocab_size
        prompt = setup.make_input("tokens", self.spec["actor"][0].input_shape(w.batch, w.seq), vocab, w)
        with self.stage("rollout", "actor", [prompt], grad=False) as tr:
            with tr.phase("forward"), self.autocast():
                seq = self._generate(prompt, tr)
        b, s = seq.shape
        targets = seq.roll(-1, dims=1)
        old = self._score("actor", [seq, targets], lambda: self.logprobs("actor", seq, targets))
        ref = self._score("reference", [seq, targets, old], lambda: self.logprobs("reference", seq, targets))
        score = self._score("reward", [seq, targets, old, ref],
                            lambda: self.modules["reward"](seq)[:, -1, 0].clone())  # (B,)
        with self.stage("score", "critic", [seq, targets, old, ref, score], grad=False) as tr:
            with tr.phase("forward"):
                values = self.scored(lambda: self.modules["critic"](seq)[..., 0])  # (B, S)
                returns = (score[:, None] - KL_COEF * (old - ref).view(b, s)).float()
                adv = (returns - values).float()
                del ref, values, score
        buffers = [seq, targets, old, returns, adv]
        with self.stage("actor_update", "actor", buffers, grad=True) as tr:
            self.update("actor", lambda: _ppo_loss(self.logprobs("actor", seq, targets), old, adv.reshape(-1)), tr)
        with self.stage("critic_update", "critic", buffers, grad=True) as tr:
            self.update("critic", lambda: (self.modules["critic"](seq)[..., 0] - returns).pow(2).mean(), tr)

    def _score(self, on: str, buffers, fn):
        """One model's no-grad scoring forward, a part of the "score" stage."""
        with self.stage("score", on, buffers, grad=False) as tr:
            with tr.phase("forward"):
                return self.scored(fn)

    def _generate(self, prompt, tracker):
        """Greedy decoding of new_tokens through the actor's KV cache -> (B, prompt + new) ids."""
        actor, w = self.modules["actor"], self.workload
        b, p = prompt.shape
        dtype = setup.MIXED_DTYPES.get(w.precision, setup.input_dtype(w))
        cache = actor.init_kv_cache(b, p + w.new_tokens, dtype)
        tracker.register(cache, "kv_cache")
        out = actor(prompt, kv_cache=cache, start_pos=0)
        tokens = [prompt]
        for i in range(w.new_tokens):
            nxt = out[:, -1:].argmax(-1)  # (B, 1)
            tokens.append(nxt)
            out = actor(nxt, kv_cache=cache, start_pos=p + i)
        del out, cache
        return torch.cat(tokens, dim=1)

    # ---- DPO -------------------------------------------------------------------------------------
    def dpo(self):
        w = self.workload
        vocab = self.spec["policy"][0].input.vocab_size
        ids = setup.make_input("tokens", self.spec["policy"][0].input_shape(2 * w.batch, w.seq), vocab, w)
        targets = ids.roll(-1, dims=1)
        with self.stage("reference", "reference", [ids, targets], grad=False) as tr:
            with tr.phase("forward"), self.autocast():
                ref = self.logprobs("reference", ids, targets).view(ids.shape).sum(-1)  # (2B,)
        with self.stage("policy_update", "policy", [ids, targets, ref], grad=True) as tr:
            self.update("policy", lambda: _dpo_loss(self.logprobs("policy", ids, targets).view(ids.shape).sum(-1),
                                                    ref), tr)


def _ppo_loss(new, old, adv):
    ratio = (new - old).exp()
    return -torch.min(ratio * adv, ratio.clamp(1 - CLIP, 1 + CLIP) * adv).mean()


def _dpo_loss(policy, ref):
    half = policy.shape[0] // 2  # chosen first, then rejected
    margin = (policy[:half] - ref[:half]) - (policy[half:] - ref[half:])
    return -F.logsigmoid(BETA * margin).mean()


def _warm_up(optimizer) -> None:
    """Optimizer state as after a first step: step() on zero gradients, then gradients dropped."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
