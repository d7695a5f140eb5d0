"""Seeded random workloads for the accuracy suite II (bench/accuracy.py --random N --seed S): every
workload setting the measure reading runs, drawn at random over every preset at small sizes, plus
full-size models under fake tensors.

Settings drawn: precision (fp32, fp16, bf16, fp16-mixed, bf16-mixed), optimizer (all nine),
optimizer implementation (the device default or any the optimizer has), checkpointing (none, full,
selective), attention (eager, sdpa), grad-accum (1, 2), LoRA (rank and target layers), attention
and residual dropout, inference with new tokens (KV cache), device conventions (cpu, cuda), batch,
sequence and image sizes. A draw the measure reading cannot run (e.g. full checkpointing of a model
without repeated blocks) is drawn again. Quantized frozen bases (--quant) are not drawn: the
measure reading does not run quantized weights (it refuses --quant), so there is nothing to
compare the cost reading's int8/int4/nf4 bytes with here. Mamba is drawn at a small width (a
full-size scan's loop over positions under fake tensors takes minutes), decoding with new tokens
through its states too.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

from layerwise.presets import PRESETS, get_preset
from layerwise.spec.applies import has_attention
from layerwise.workload import IMPLS_OF, OPTIMIZERS, PRECISIONS, Workload

# small sizes per family (the widths keep each head and GQA group whole)
_SMALL = {
    "decoder": dict(n_layers=2, d_model=64, n_heads=4, d_ff=128, vocab_size=256, max_seq=128),
    "encoder": dict(n_layers=2, d_model=64, n_heads=4, d_ff=128, vocab_size=256, max_seq=128),
    "vit": dict(n_layers=2, d_model=64, n_heads=4, d_ff=128, image_size=32, patch=8),
    "resnet": dict(layers=(1, 1, 1, 1)),
    "text_rnn": dict(vocab_size=256, d_embed=32, d_hidden=32, max_seq=64),
    "cnn": {},
    "mamba": dict(n_layers=2, d_model=64, vocab_size=256, max_seq=128),
    "deepseek": dict(n_layers=4, d_model=64, n_heads=4, d_ff=128, vocab_size=256, max_seq=128, kv_rank=32, d_nope=16,
                     d_rope=8, d_v=16, d_expert=32, n_experts=16),  # V3's 8 groups of 2 experts stay whole
}
FULL = [  # the models at their real size (fake tensors: no memory is allocated)
    "llama-2-7b", "mistral-7b", "gpt2-xl", "bert-large", "vit-l-16", "resnet-50", "phi-2", "qwen2-7b",
]
NOT_COSTED: set[str] = set()  # families cost/ refuses: nothing to compare
LORA_TARGETS = [("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "o_proj"), ("*.ffn.*",),
                ("q_proj", "v_proj", "up_proj", "down_proj", "gate_proj")]


@dataclass(frozen=True)
class Case:
    preset: str
    overrides: tuple  # (key, value) pairs for get_preset
    workload: Workload
    lora: tuple = ()  # (rank, targets) applied to the spec, or ()
    full_size: bool = False

    def model(self):
        model = get_preset(self.preset, **dict(self.overrides))
        if self.lora:
            from layerwise.spec.lora import apply_lora

            model = apply_lora(model, self.lora[0], targets=self.lora[1])
        return model

    def label(self) -> str:
        w = self.workload
        lora = f" lora{self.lora[0]}:{'+'.join(self.lora[1])}" if self.lora else ""
        return (f"{self.preset}{' (full)' if self.full_size else ''} {w.mode} b{w.batch}"
                f"{f' s{w.seq}' if w.seq else ''}{f' i{w.image[0]}' if w.image else ''} {w.precision} "
                f"{w.optimizer}/{w.impl} ckpt={w.checkpointing} {w.attention} ga{w.grad_accum} "
                f"{w.device}{f' new{w.new_tokens}' if w.new_tokens else ''}{lora}")


def small_overrides(name: str, rng: random.Random) -> dict:
    family, keywords, _ = PRESETS[name]
    over = dict(_SMALL.get(family, {}))
    if name == "tiny-gpt":
        over = {"n_layers": 2}
    if "n_kv_heads" in keywords:
        over["n_kv_heads"] = rng.choice([1, 2])
    if keywords.get("q_rank"):  # DeepSeek-V3's query bottleneck, narrower than the small d_model
        over["q_rank"] = 48
    if "n_experts" in keywords and family != "deepseek":
        over.update(n_experts=4, top_k=2)
    if "sliding_window" in keywords:
        over["sliding_window"] = rng.choice([8, 16])
    if family in ("decoder", "encoder", "vit") and rng.random() < 0.25:
        over["attn_dropout"] = 0.1
    if family in ("decoder", "encoder", "vit") and rng.random() < 0.2:
        over["dropout"] = 0.1
    return over


def _workload(rng: random.Random, family: str, infer: bool, full: bool) -> Workload:
    optimizer = rng.choice(OPTIMIZERS)
    impl = rng.choice([None, *IMPLS_OF[optimizer]])
    fields = dict(precision=rng.choice(PRECISIONS), optimizer=optimizer, optimizer_impl=impl,
                  checkpointing=rng.choice(["none", "full", "selective"]), attention=rng.choice(["eager", "sdpa"]),
                  grad_accum=rng.choice([1, 1, 2]), device=rng.choice(["cpu", "cuda"]),
                  batch=rng.choice([1, 2, 4]) if not full else 1)
    if family in ("decoder", "encoder", "mamba", "deepseek"):
        fields["seq"] = rng.choice([16, 32, 64, 128]) if not full else rng.choice([512, 1024])
    elif family in ("vit", "resnet"):
        size = rng.choice([32, 64]) if family == "resnet" else 32
        fields["image"] = (size, size) if not full else None
    if family == "resnet" and fields["batch"] == 1:
        fields["batch"] = 2  # BatchNorm in training needs more than one value per channel
    if infer:
        fields.update(mode="infer", optimizer="adamw", optimizer_impl=None, checkpointing="none", grad_accum=1)
        if family in ("decoder", "mamba", "deepseek"):
            fields["new_tokens"] = rng.choice([0, 4, 16])
    return Workload(**fields)


def _runnable(model, family: str, w: Workload) -> bool:
    """What the measure reading (and the model) can run."""
    from layerwise.cost.memory import first_repeat

    if w.checkpointing == "full" and first_repeat(model.body) is None:
        return False
    if w.checkpointing == "selective" and family not in ("decoder", "encoder", "vit", "deepseek"):
        return False
    if w.precision in ("fp16", "fp16-mixed") and family == "text_rnn":
        return False  # CPU GRU kernels have no fp16
    return True


def draw(rng: random.Random, name: str | None = None, full: bool = False) -> Case:
    """One random case (a preset drawn too unless `name`)."""
    for _ in range(100):
        preset = name or rng.choice(sorted(p for p in PRESETS if PRESETS[p][0] not in NOT_COSTED))
        family = PRESETS[preset][0]
        over = {} if full else small_overrides(preset, rng)
        infer = rng.random() < 0.2
        w = _workload(rng, family, infer, full)
        lora = ()
        if family == "decoder" and not infer and rng.random() < 0.3:
            lora = (rng.choice([2, 4, 8, 16]), rng.choice(LORA_TARGETS))
        case = Case(preset, tuple(sorted(over.items())), w, lora, full)
        try:
            model = case.model()
        except Exception:  # an override the preset cannot take: draw again
            continue
        limit = getattr(model.input, "max_seq", 0)
        if w.seq and limit and w.seq > limit:  # a full-size model with fewer positions (bert: 512)
            case = replace(case, workload=replace(w, seq=limit))
        if not has_attention(model.body):  # --attention is refused there (spec/applies.py); the draw
            case = replace(case, workload=replace(case.workload, attention="sdpa"))  # stays in the stream
        if _runnable(model, family, w):
            return case
    raise RuntimeError(f"no runnable draw for {name}")


def cases(n: int, seed: int, full_every: int = 50) -> list[Case]:
    """n cases; every `full_every`-th a full-size model."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if full_every and i % full_every == full_every - 1:
            out.append(draw(rng, FULL[(i // full_every) % len(FULL)], full=True))
        else:
            out.append(draw(rng))
    return out


def compare(case: Case):
    """(measured, analytic report, peak error, worst component, its error as a share of the peak)."""
    from layerwise.cost.memory import inference_memory, training_memory
    from layerwise.measure.step import measure_step

    model, w = case.model(), case.workload
    truth = measure_step(model, w, count_flops=False)
    report = (training_memory if w.mode == "train" else inference_memory)(model, w)
    peak_err = (report.peak_bytes - truth.peak_bytes) / truth.peak_bytes
    comps = report.components.as_dict()
    worst = max(truth.components, key=lambda k: abs(comps[k] - truth.components[k]))
    return truth, report, peak_err, worst, (comps[worst] - truth.components[worst]) / truth.peak_bytes
