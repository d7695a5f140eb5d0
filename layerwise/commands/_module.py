"""MODEL = `FILE.py:factory` or `package.module:factory`: the commands' path for a user's own module.

Which flags apply: the input (`--input`, `--input-dtype`, `--vocab`), the batch, and what a step
does (mode, precision, optimizer and its implementation, grad-accum, `--checkpointing full` over
`--checkpoint-modules`, device defaults, `--new-tokens` for a module with the KV-cache hook). The
rest describe a spec (sequence length, attention implementation, LoRA, quantization, parallelism)
and are refused by name when given, never ignored.
"""
from __future__ import annotations

import click

from layerwise.spec.errors import LayerwiseError, WorkloadError

MODULE_HELP = ("or FILE.py:factory / package.module:factory, a callable returning your own nn.Module "
               "(importing it runs that code; nothing else is imported)")

# Flags of a spec model that a module cannot honour.
SPEC_ONLY = ("seq", "image", "attention", "zero", "dp", "tp", "pp", "lora_rank", "quant", "reference")
# Flags that only describe a module's input or checkpointing.
MODULE_ONLY = ("input_dtype", "vocab", "checkpoint_modules")
INPUT_DTYPES = ("float", "long")


def given(name: str) -> bool:
    """Was the option typed on the command line (not just its default)?"""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return False
    source = ctx.get_parameter_source(name)
    return source is not None and source not in (click.core.ParameterSource.DEFAULT,
                                                 click.core.ParameterSource.DEFAULT_MAP)


def refuse(names, why: str) -> None:
    """WorkloadError naming the first of `names` typed on the command line, and the command."""
    for name in names:
        if given(name):
            ctx = click.get_current_context(silent=True)
            raise WorkloadError(f"{ctx.command_path if ctx else 'layerwise'} --{name.replace('_', '-')}: {why}")


def is_module_ref(model: str) -> bool:
    from layerwise.measure.user_module import is_module_ref as check

    return check(model)


def check_flags(model: str) -> None:
    """Refuse the flags that do not apply to this kind of MODEL."""
    if is_module_ref(model):
        refuse(SPEC_ONLY, f"does not apply to your own module ({model}); its input is --input SHAPE")
    else:
        refuse(MODULE_ONLY, "applies to FILE.py:factory / package.module:factory models only")


def sample_shape(input: str | None, input_dtype: str, vocab: int | None, model: str) -> tuple[tuple[int, ...], int | None]:
    """(one sample's shape, vocab size or None for float input) from the flags."""
    from layerwise.commands.summary import parse_shape

    if input is None:
        raise LayerwiseError(f"{model}: your own module needs --input SHAPE (one sample, e.g. 3x224x224; "
                             f"token models: --input 128 --input-dtype long --vocab V)")
    if input_dtype not in INPUT_DTYPES:
        raise WorkloadError(f"--input-dtype must be one of {', '.join(INPUT_DTYPES)}; got {input_dtype!r}")
    if input_dtype == "long" and not vocab:
        raise WorkloadError("--input-dtype long: pass --vocab V, the number of token ids")
    if input_dtype == "float" and vocab:
        raise WorkloadError("--vocab applies to token input (--input-dtype long)")
    if vocab is not None and vocab <= 0:
        raise WorkloadError(f"--vocab must be a positive integer, got {vocab}")
    return parse_shape(input), (vocab if input_dtype == "long" else None)


def load(model: str):
    """(ModuleRef, a checked zero-argument factory). Imports the named file or module."""
    from layerwise.measure.user_module import checked_factory, load_factory, parse_ref

    ref = parse_ref(model)
    return ref, checked_factory(ref, load_factory(ref))


def classes(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise WorkloadError(f"--checkpoint-modules {text!r}: expected class names, e.g. Block or Bottleneck,Stem")
    return names


def measure(model: str, input, input_dtype, vocab, checkpoint_modules, workload, *, real: bool):
    """The measure reading of a user's module; the StepMeasurement and the module's name."""
    from layerwise.measure.module_api import measure_module

    shape, vocab_size = sample_shape(input, input_dtype, vocab, model)
    wanted = classes(checkpoint_modules)
    if workload.checkpointing == "full" and not wanted:
        raise WorkloadError("--checkpointing full on your own module: name the blocks to recompute with "
                            "--checkpoint-modules CLASS[,CLASS]")
    ref, build = load(model)
    result = measure_module(build, (workload.batch, *shape), workload, fake=not real, vocab_size=vocab_size,
                            checkpoint_modules=wanted, name=ref.text)
    return ref.name, result


def read_fake(model: str, input, input_dtype, vocab, batch: int, fn):
    """Build the user's module and a batch under FakeTensorMode and return `fn(name, module, x)`."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from layerwise.measure.step import _fakeify, _has_real_tensors
    from layerwise.measure.user_module import forward_error

    if batch <= 0:
        raise WorkloadError(f"--batch must be a positive integer, got {batch}")
    shape, vocab_size = sample_shape(input, input_dtype, vocab, model)
    ref, build = load(model)
    fake_mode = FakeTensorMode()
    with fake_mode:
        torch.manual_seed(0)
        module = build()
        if _has_real_tensors(module):
            module = _fakeify(module, fake_mode)
        full = (batch, *shape)
        x = torch.randint(0, vocab_size, full) if vocab_size else torch.randn(full)
        try:
            return fn(ref.name, module, x)
        except LayerwiseError:
            raise
        except Exception as exc:
            raise forward_error(ref.text, full, vocab_size is not None, exc, fake=True) from None
