"""`layerwise time MODEL --mode infer --gpu A,B --new-tokens N`: prefill latency / time to first
token and decode tokens/s per GPU (cost/infer_time.py). The training flags of `time` do not apply."""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.spec.errors import WorkloadError


@dataclass(frozen=True)
class InferAnswer:
    model: str
    workload: object  # the Workload timed
    times: list  # one cost.infer_time.InferenceTime per GPU, in the order asked

# `time` flags that describe a training run, with their defaults: any other value is refused
TRAINING_ONLY = {"gpus": None, "dp": None, "tp": 1, "pp": 1, "ep": 1, "zero": 0, "sp": False, "schedule": "1f1b",
                 "interleave": 1, "grad_accum": None, "global_batch": None, "checkpointing": "none", "tokens": None,
                 "samples": None, "mfu": None, "dtype": None, "price": None}


def gpu_names(text: str) -> list[str]:
    names = [g.strip() for g in text.split(",") if g.strip()]
    if not names:
        raise WorkloadError("--gpu: give a GPU type, e.g. a100-80gb (several, comma-separated, with --mode infer)")
    return names


def refuse_training_flags(values: dict) -> None:
    given = [k for k, default in TRAINING_ONLY.items() if values.get(k, default) != default]
    if given:
        flags = ", ".join("--" + ("price-per-gpu-hour" if k == "price" else k.replace("_", "-")) for k in given)
        raise WorkloadError(f"{flags}: a training setting; `time --mode infer` times one GPU's prefill and decode")


def infer_answer(spec, *, gpu: str, batch: int, seq, new_tokens: int, precision, quant: str, kv_dtype, attention):
    """InferAnswer: an InferenceTime per GPU named in --gpu (the CLI and the web API)."""
    from layerwise.cost.hardware import get_gpu
    from layerwise.cost.infer_time import inference_time
    from layerwise.workload import Workload

    gpus = [get_gpu(name) for name in gpu_names(gpu)]
    if precision is None:  # bf16 unless a GPU asked for has no bf16 (V100, T4): then fp16 for all
        precision = "bf16" if all("bf16" in g.dtypes for g in gpus) else "fp16"
    workload = Workload(mode="infer", batch=batch, seq=seq, new_tokens=new_tokens, precision=precision, quant=quant,
                        kv_dtype=kv_dtype, attention=attention, device="cuda")
    return InferAnswer(spec.name, workload, [inference_time(spec, workload, g) for g in gpus])
