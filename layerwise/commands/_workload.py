"""The workload flags every sizing command shares (memory, flops, measure, verify, time, plan).

Use the decorator: it adds the flags to a typer command and hands the command one `Workload`:

    @app.command()
    @with_workload
    def memory(model: str = typer.Argument(...), json: bool = ..., *, workload: Workload):
        ...

or list `WORKLOAD_OPTIONS` yourself and call `workload_from_options(**values)`. Values are checked
by `Workload` itself, so a bad flag raises WorkloadError naming it. No torch here.
"""
from __future__ import annotations

import functools
import inspect
import typing
from typing import Optional

import typer

from layerwise.spec.errors import WorkloadError
from layerwise.workload import (ATTENTION, CHECKPOINTING, DEVICES, KV_DTYPES, MODES, OPTIMIZER_IMPLS, OPTIMIZERS,
                                PRECISIONS, QUANT, REFERENCES, Workload)

_D = Workload()  # defaults come from the dataclass, so the CLI and the API agree


def _choices(values) -> str:
    return "|".join(values)


# name -> (annotation, typer.Option). Option names are the DESIGN.md flags.
WORKLOAD_OPTIONS: dict[str, tuple[object, object]] = {
    "batch": (int, typer.Option(_D.batch, "--batch", help="micro-batch size")),
    "seq": (Optional[int], typer.Option(None, "--seq", help="tokens per sequence (default: the model's)")),
    "image": (Optional[str], typer.Option(None, "--image", help="image size H or HxW (default: the model's)")),
    "mode": (str, typer.Option(_D.mode, "--mode", help=_choices(MODES))),
    "precision": (Optional[str], typer.Option(None, "--precision", help=f"{_choices(PRECISIONS)} (default: fp32 to "
                                                                        f"train, bf16 to infer)")),
    "optimizer": (str, typer.Option(_D.optimizer, "--optimizer", help=_choices(OPTIMIZERS))),
    "optimizer_impl": (Optional[str], typer.Option(None, "--optimizer-impl",
                                                   help=f"{_choices(OPTIMIZER_IMPLS)} (default: the device's)")),
    "checkpointing": (str, typer.Option(_D.checkpointing, "--checkpointing", help=_choices(CHECKPOINTING))),
    "attention": (str, typer.Option(_D.attention, "--attention", help=_choices(ATTENTION))),
    "grad_accum": (int, typer.Option(_D.grad_accum, "--grad-accum", help="micro-batches per optimizer step")),
    "zero": (int, typer.Option(_D.zero, "--zero", help="ZeRO stage 0|1|2|3")),
    "dp": (int, typer.Option(_D.dp, "--dp", help="data-parallel ranks")),
    "tp": (int, typer.Option(_D.tp, "--tp", help="tensor-parallel ranks")),
    "pp": (int, typer.Option(_D.pp, "--pp", help="pipeline stages")),
    "lora_rank": (int, typer.Option(_D.lora_rank, "--lora-rank", help="LoRA rank (0: full fine-tuning)")),
    "quant": (str, typer.Option(_D.quant, "--quant", help=_choices(QUANT))),
    "new_tokens": (int, typer.Option(_D.new_tokens, "--new-tokens", help="inference: tokens generated (KV cache)")),
    "kv_dtype": (Optional[str], typer.Option(None, "--kv-dtype", help=f"inference: the KV cache's dtype, "
                                                                      f"{_choices(KV_DTYPES)} (default: the activations')")),
    "device": (str, typer.Option(_D.device, "--device", help=f"{_choices(DEVICES)}: whose implementation defaults")),
    "reference": (str, typer.Option(_D.reference, "--impl",
                                    help=f"{_choices(REFERENCES)}: whose code (ours, or transformers' modeling "
                                         f"classes from an HF config.json)")),
}


def parse_image(text: str | None) -> tuple[int, int] | None:
    """'224' -> (224, 224); '224x160' -> (224, 160)."""
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise WorkloadError(f"--image {text!r}: expected H or HxW, e.g. 224 or 224x160") from None
    if len(dims) not in (1, 2) or any(d <= 0 for d in dims):
        raise WorkloadError(f"--image {text!r}: expected one or two positive sizes")
    return (dims[0], dims[-1])


def workload_from_options(**values) -> Workload:
    """Flag values (the names of WORKLOAD_OPTIONS; missing ones take the defaults) -> Workload."""
    unknown = set(values) - set(WORKLOAD_OPTIONS)
    if unknown:
        raise TypeError(f"unknown workload option(s) {sorted(unknown)}")
    if "image" in values:
        values["image"] = parse_image(values["image"])
    if values.get("seq") is not None and values["seq"] <= 0:
        raise WorkloadError(f"--seq must be a positive integer, got {values['seq']}")
    return Workload(**values)


# A flag accepted and ignored is a defect (DESIGN.md "Bad input"): a workload flag a command cannot
# honour is refused, one line naming the flag and the command, exit 2, when given a value other than
# its default. tests/test_cli_flags.py holds every (command, flag) pair of the CLI to this table: a
# flag is either shown by the command's output (declared in the test) or refused here with a reason.
# Adding a workload flag or a command with @with_workload? Declare here what it cannot honour.
_ONE_PROCESS = "the measure reading runs one process on one device; `layerwise memory` sizes parallel set-ups"
_NOT_MEASURED = "quantized weights are not measured; `layerwise memory` sizes them"
NOT_APPLYING: dict[str, dict[str, str]] = {
    "flops": {
        "precision": "FLOPs do not depend on the dtype",
        "optimizer": "optimizer.step() is not a matmul and is not counted",
        "optimizer_impl": "optimizer.step() is not counted",
        "grad_accum": "FLOPs are per micro-batch (`layerwise flops --tokens D` gives a run's total)",
        "zero": "sharding does not change the FLOPs of a step",
        "dp": "FLOPs are per replica",
        "tp": "FLOPs are of the whole model (`layerwise time` splits them over ranks)",
        "pp": "FLOPs are of the whole model (`layerwise time` splits them over stages)",
        "quant": "quantized weights are dequantized to the same matmuls",
        "reference": "it counts our build's FLOPs; `layerwise measure CONFIG.json --impl hf` counts transformers'",
        "kv_dtype": "FLOPs do not depend on the cache's dtype",
    },
    "measure": {"zero": _ONE_PROCESS, "dp": _ONE_PROCESS, "tp": _ONE_PROCESS, "pp": _ONE_PROCESS,
                "quant": _NOT_MEASURED, "kv_dtype": "the built model caches keys and values in its compute dtype; "
                                                    "`layerwise memory` sizes another cache dtype"},
}
NOT_APPLYING["verify"] = dict(NOT_APPLYING["measure"])  # verify runs the measure reading
# Flags that mean nothing in the other mode, for every command with workload flags.
TRAIN_ONLY = ("optimizer", "optimizer_impl", "checkpointing", "grad_accum", "zero", "dp")
INFER_ONLY = ("new_tokens", "kv_dtype")


def _why_not(command: str, name: str, values: dict, others: dict | None = None) -> str | None:
    """Why `command` cannot honour workload flag `name` with these values and the command's other
    arguments (None: it can)."""
    why = NOT_APPLYING.get(command, {}).get(name)
    infer = values.get("mode", _D.mode) == "infer"
    generates = infer or bool((others or {}).get("rlhf"))  # PPO's rollouts generate in a training step
    if why is None and infer and name in TRAIN_ONLY:
        why = "it applies to training (--mode train)"
    if why is None and not generates and name in INFER_ONLY:
        why = "it applies to inference (--mode infer) and to --rlhf ppo's rollouts"
    if why is None and name == "quant" and not infer and not values.get("lora_rank", _D.lora_rank):
        why = "a trained model's weights are not quantized; it applies to inference or a frozen LoRA base (--lora-rank)"
    return why


def refuse_not_applying(command: str, values: dict, others: dict | None = None) -> None:
    """WorkloadError naming the first flag given (not at its default) that `command` cannot honour."""
    for name, value in values.items():
        if value == WORKLOAD_OPTIONS[name][1].default:
            continue
        why = _why_not(command, name, values, others)
        if why is not None:
            flag = WORKLOAD_OPTIONS[name][1].param_decls[0]
            raise WorkloadError(f"{flag} does not apply to `layerwise {command}`: {why}")


def with_workload(fn):
    """Decorator for a typer command with a keyword-only `workload: Workload` parameter: adds
    every workload flag to its signature and builds the Workload from them."""
    sig = inspect.signature(fn)
    if "workload" not in sig.parameters:
        raise TypeError(f"{fn.__name__} needs a `workload` parameter")
    own = [p for p in sig.parameters.values() if p.name != "workload"]
    own = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in own]
    extra = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=opt, annotation=ann)
             for name, (ann, opt) in WORKLOAD_OPTIONS.items()]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        values = {name: kwargs.pop(name) for name in WORKLOAD_OPTIONS if name in kwargs}
        workload = workload_from_options(**dict(values))  # bad values first: "--precision must be one of"
        refuse_not_applying(fn.__name__, values, kwargs)
        return fn(*args, **kwargs, workload=workload)

    hints = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if k != "workload"}
    wrapper.__annotations__ = {**_resolved(fn, hints), **{n: a for n, (a, _) in WORKLOAD_OPTIONS.items()}}
    wrapper.__signature__ = sig.replace(parameters=own + extra)
    del wrapper.__wrapped__  # typer must see the new signature, not fn's
    return wrapper


def _resolved(fn, hints: dict) -> dict:
    """String annotations (from __future__ import annotations) evaluated in fn's module."""
    resolved = typing.get_type_hints(fn, globalns={**fn.__globals__, "Workload": Workload})
    return {name: resolved.get(name, ann) for name, ann in hints.items()}
