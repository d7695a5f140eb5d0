"""Refusing what cannot be built, before building it: the bytes a run needs (the cost reading's
numbers) against the bytes the machine has, as one WorkloadError naming both.

needed = the tensors a run really allocates (training, the measure reading with real tensors): the
         cost reading's peak of one step; nothing under FakeTensorMode, which allocates no data;
       + the Python objects of the built module, about HOST_BYTES_PER_TENSOR per parameter tensor
         (its nn.Module share, the nn.Parameter, under FakeTensorMode the FakeTensor, and the
         tracker's records). Measured on the measure reading of Llama-style stacks of 100 to 600
         layers (VmHWM above the starting RSS): 11 to 14 KB per tensor at the margin; the lower end
         is used, so a refusal is never a false alarm.
available = MemAvailable of /proc/meminfo (Linux); where that cannot be read, nothing is refused.
"""
from __future__ import annotations

from pathlib import Path

from layerwise.spec.errors import WorkloadError

HOST_BYTES_PER_TENSOR = 11_000


def available_bytes() -> int | None:
    """MemAvailable: what the kernel can give without swapping."""
    path = Path("/proc/meminfo")
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024  # reported in kB
    return None


def parameter_tensors(model, workload) -> int:
    """Parameter tensors of the built model, counted by the cost reading (equal copies counted)."""
    from layerwise.cost.memory import trace_step

    tr = trace_step(model, workload.with_(mode="infer"), lumping=True).trace
    return sum(tr.counts.get(key, 1) for key in tr.params)


def check_fits(what: str, model, workload, *, tensor_bytes: int = 0) -> None:
    """Raise WorkloadError if building `model` for `what` needs more memory than is available.
    `tensor_bytes`: what its tensors really allocate (0 under FakeTensorMode)."""
    from layerwise.spec.errors import LayerwiseError

    available = available_bytes()
    if available is None:
        return
    try:
        tensors = parameter_tensors(model, workload)
    except LayerwiseError:  # a set-up the cost reading does not trace: the run says what is wrong
        return
    host = tensors * HOST_BYTES_PER_TENSOR
    needed = tensor_bytes + host
    if needed > available:
        parts = f"{_gib(tensor_bytes)} of tensors + " if tensor_bytes else ""
        raise WorkloadError(f"{what}: building this model needs about {_gib(needed)} ({parts}{_gib(host)} of Python "
                            f"objects for {tensors:,} parameter tensors) but {_gib(available)} is available; the cost "
                            f"reading (`layerwise memory`) answers without building it")


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_run(what: str, model, workload, *, real: bool) -> None:
    """check_fits for a layerwise Model (other modules are not sized): with `real` tensors, the cost
    reading's peak of the step is what they allocate."""
    from layerwise.spec.errors import LayerwiseError
    from layerwise.spec.model import Model

    if not isinstance(model, Model):
        return
    tensors = 0
    if real:
        from layerwise.cost.memory import inference_memory, training_memory

        try:
            reading = inference_memory if workload.mode == "infer" else training_memory
            tensors = reading(model, workload).peak_bytes
        except LayerwiseError:  # a set-up the cost reading refuses: the run says what is wrong
            tensors = 0
    check_fits(what, model, workload, tensor_bytes=tensors)
