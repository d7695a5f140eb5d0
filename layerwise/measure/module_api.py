"""`layerwise.measure(module, example_input, workload)`: the measure reading of any nn.Module.

    import layerwise, torch
    r = layerwise.measure(MyNet, torch.randn(8, 3, 224, 224), layerwise.Workload(precision="bf16-mixed"))
    r.peak_bytes, r.peak_phase, r.params, r.saved_by_module

`module` is an nn.Module or a factory returning one; a factory runs inside FakeTensorMode, so a
7B-parameter module is never allocated (a module passed built is copied to fake tensors).
`example_input` is one batch: a tensor (its shape and dtype are used, not its values) or a shape
with the batch dimension. Integer inputs are token ids drawn below `vocab_size`. The loss is the
sum of the output (of its first element, for a tuple). Errors come back as one LayerwiseError.
"""
from __future__ import annotations

import torch
from torch import nn

from layerwise.measure.result import StepMeasurement
from layerwise.measure.user_module import forward_error
from layerwise.spec.errors import LayerwiseError, WorkloadError
from layerwise.workload import Workload


def measure_module(model, example_input, workload: Workload = Workload(), *, fake: bool = True,
                   vocab_size: int | None = None, checkpoint_modules: tuple[str, ...] = (),
                   name: str = "module") -> StepMeasurement:
    """One steady-state training step (or inference) of `model` on a batch like `example_input`."""
    from layerwise.measure.step import measure_step

    shape, kind, vocab = _input(example_input, vocab_size)
    if workload.batch not in (1, shape[0]):
        raise WorkloadError(f"batch {workload.batch} disagrees with the example input's batch of {shape[0]}")
    workload = workload.with_(batch=shape[0])
    if not isinstance(model, nn.Module) and not callable(model):
        raise LayerwiseError(f"{name}: expected an nn.Module or a factory returning one, got {type(model).__name__}")
    try:
        return measure_step(model, workload, fake=fake, input_shape=shape, input_kind=kind, vocab_size=vocab,
                            checkpoint_modules=tuple(checkpoint_modules), by_module=workload.mode == "train")
    except LayerwiseError:
        raise
    except Exception as exc:  # the user's forward (or something it called) failed
        raise forward_error(name, shape, kind == "tokens", exc, fake=fake) from None


def _input(example, vocab_size: int | None) -> tuple[tuple[int, ...], str, int]:
    """(shape with batch, kind, vocab size) from a tensor or a shape."""
    if isinstance(example, torch.Tensor):
        shape = tuple(example.shape)
        tokens = not (example.is_floating_point() or example.is_complex())
        if tokens and vocab_size is None:
            vocab_size = int(example.max()) + 1 if example.numel() else 0
    elif isinstance(example, (tuple, list, torch.Size)) and all(isinstance(d, int) for d in example):
        shape, tokens = tuple(example), vocab_size is not None
    else:
        raise LayerwiseError(f"example_input: expected a tensor or a shape (with the batch dimension), "
                             f"got {type(example).__name__}")
    if len(shape) < 1 or any(d <= 0 for d in shape):
        raise LayerwiseError(f"example_input: shape {shape} needs a batch dimension and positive sizes")
    if tokens and (vocab_size is None or vocab_size < 1):
        raise LayerwiseError("token input: pass vocab_size (--vocab V), the number of token ids")
    return shape, ("tokens" if tokens else "features"), (vocab_size or 0)
