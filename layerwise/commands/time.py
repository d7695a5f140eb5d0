"""`layerwise time`: training time of a model on a GPU type and layout, from the step-time model
(or from FLOPs at a given --mfu)."""
from __future__ import annotations

from typing import Optional

import typer


def time_answer(spec, *, gpu: str, gpus, dp, tp, pp, ep, zero, sp, schedule, interleave, batch, grad_accum,
                global_batch, checkpointing, precision, attention, tokens, samples, mfu, dtype, seq, price,
                mode="train", new_tokens=None, quant=None, kv_dtype=None):
    """What `layerwise time` computes (the CLI and the web API); the arguments are its flags. With
    mode "infer": an InferAnswer (prefill and decode per GPU, commands/_time_infer.py)."""
    from layerwise.cost.hardware import get_gpu
    from layerwise.cost.training_time import plan_layout, training_estimate
    from layerwise.spec.applies import check_applies
    from layerwise.workload import Workload

    check_applies(spec, Workload(mode="infer" if mode == "infer" else "train", attention=attention))  # one line
    if mode == "infer":
        from layerwise.commands._time_infer import infer_answer, refuse_training_flags

        refuse_training_flags(locals())
        return infer_answer(spec, gpu=gpu, batch=batch, seq=seq, new_tokens=new_tokens or 0, precision=precision,
                            quant=quant or "none", kv_dtype=kv_dtype, attention=attention)
    _refuse_inference_flags(mode, gpu, new_tokens, quant, kv_dtype)
    layout = plan_layout(gpus=gpus, dp=dp, tp=tp, pp=pp, ep=ep, zero=zero, sp=sp, schedule=schedule,
                         interleave=interleave, batch=batch, grad_accum=grad_accum, global_batch=global_batch,
                         checkpointing=checkpointing)
    return training_estimate(spec, get_gpu(gpu), layout, seq=seq, precision=precision, attention=attention,
                             tokens=_count("--tokens", tokens), samples=_count("--samples", samples), mfu=mfu,
                             dtype=dtype, price_per_gpu_hour=price)


def register(app: typer.Typer) -> None:
    @app.command()
    def time(
        model: str = typer.Argument(..., help="preset name, spec file (.yaml/.yml/.json) or HF config.json"),
        gpu: str = typer.Option(..., "--gpu", help="GPU type, e.g. a100-80gb, h100-sxm, rtx-4090 (--mode infer: "
                                                   "several, comma-separated)"),
        mode: str = typer.Option("train", "--mode", help="train: training time; infer: prefill, time to first token "
                                                         "and decode tokens/s"),
        new_tokens: Optional[int] = typer.Option(None, "--new-tokens", help="infer: tokens decoded after the prompt"),
        quant: Optional[str] = typer.Option(None, "--quant", help="infer: weight storage none|int8|int4|nf4"),
        kv_dtype: Optional[str] = typer.Option(None, "--kv-dtype", help="infer: the KV cache's dtype "
                                                                        "fp32|fp16|bf16|fp8|int8"),
        gpus: Optional[int] = typer.Option(None, "--gpus", help="number of GPUs (= dp x tp x pp)"),
        dp: Optional[int] = typer.Option(None, "--dp", help="data-parallel ranks (default: gpus / (tp x pp))"),
        tp: int = typer.Option(1, "--tp", help="tensor-parallel ranks"),
        pp: int = typer.Option(1, "--pp", help="pipeline stages"),
        ep: int = typer.Option(1, "--ep", help="expert-parallel ranks (MoE; divides dp)"),
        zero: int = typer.Option(0, "--zero", help="ZeRO stage 0|1|2|3 (3 = FSDP)"),
        sp: bool = typer.Option(False, "--sp", help="sequence parallelism (needs --tp > 1)"),
        schedule: str = typer.Option("1f1b", "--schedule", help="pipeline schedule: 1f1b|gpipe|interleaved"),
        interleave: int = typer.Option(1, "--interleave", help="model chunks per GPU (interleaved schedule)"),
        batch: int = typer.Option(1, "--batch", help="micro-batch size"),
        grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help="micro-batches per step"),
        global_batch: Optional[int] = typer.Option(None, "--global-batch", help="sequences per step (sets --grad-accum)"),
        checkpointing: str = typer.Option("none", "--checkpointing", help="none|selective|full"),
        precision: Optional[str] = typer.Option(None, "--precision", help="bf16-mixed|fp16-mixed|fp32|bf16|fp16 "
                                                                          "(default: bf16-mixed where the GPU has bf16)"),
        attention: str = typer.Option("sdpa", "--attention", help="sdpa (flash kernels on CUDA) | eager"),
        tokens: float = typer.Option(None, "--tokens", help="token budget D, e.g. 300e9 (default: 20 x params)"),
        samples: float = typer.Option(None, "--samples", help="sample budget for non-token models"),
        mfu: Optional[float] = typer.Option(None, "--mfu", help="override: time = FLOPs / (GPUs x peak x MFU)"),
        dtype: str = typer.Option(None, "--dtype", help="peak to use with --mfu: bf16, fp16, tf32, fp32, fp8"),
        seq: int = typer.Option(None, "--seq", help="tokens per sequence (default: the model's)"),
        price: Optional[float] = typer.Option(None, "--price-per-gpu-hour", help="$ per GPU-hour: adds the cost"),
        json: bool = typer.Option(False, "--json", help="JSON output"),
    ):
        """Step time, tokens/s, MFU/HFU and days from the step-time model (--mfu overrides it); with
        --mode infer, prefill latency (time to first token) and decode tokens/s per GPU."""
        from layerwise.commands._model import resolve
        from layerwise.report.console import print_json
        from layerwise.report.infer_time import render_infer_time
        from layerwise.report.time import any_time_json, render_time

        est = time_answer(resolve(model), gpu=gpu, gpus=gpus, dp=dp, tp=tp, pp=pp, ep=ep, zero=zero, sp=sp,
                          schedule=schedule, interleave=interleave, batch=batch, grad_accum=grad_accum,
                          global_batch=global_batch, checkpointing=checkpointing, precision=precision,
                          attention=attention, tokens=tokens, samples=samples, mfu=mfu, dtype=dtype, seq=seq,
                          price=price, mode=mode, new_tokens=new_tokens, quant=quant, kv_dtype=kv_dtype)
        if json:
            print_json(any_time_json(est))
        else:
            render_infer_time(est) if mode == "infer" else render_time(est)


def _refuse_inference_flags(mode, gpu, new_tokens, quant, kv_dtype) -> None:
    from layerwise.spec.errors import WorkloadError

    if mode != "train":
        raise WorkloadError(f"--mode must be train or infer, got {mode!r}")
    given = [f for f, v in (("--new-tokens", new_tokens), ("--quant", quant), ("--kv-dtype", kv_dtype)) if v is not None]
    if given:
        raise WorkloadError(f"{', '.join(given)}: inference settings; add --mode infer")
    if "," in gpu:
        raise WorkloadError("--gpu: one GPU type for a training estimate (several, comma-separated, with --mode infer)")


def _count(flag: str, value: float | None) -> int | None:
    """'3e11' arrives as a float: keep it an exact integer, refuse fractions."""
    from layerwise.spec.errors import LayerwiseError

    if value is None:
        return None
    if value != int(value) or value < 1:
        raise LayerwiseError(f"{flag} must be a positive whole number, got {value}")
    return int(value)
