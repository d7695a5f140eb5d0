"""Optimizer state and optimizer.step() temporaries, in bytes, as PyTorch keeps them.

The state depends on parameter *shapes* (Adafactor factors >=2-D tensors; every torch optimizer
keeps one scalar `step` tensor per parameter tensor), so the API takes the trainable parameters'
shapes: a list of shapes, or a {path: shape} mapping (what a spec's `named_parameters` paths give).
Pure Python; the numbers are checked against torch.optim in tests/cost/test_optimizers.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Iterable, Mapping

from layerwise.cost.precision import nbytes
from layerwise.spec.errors import WorkloadError

Shape = tuple[int, ...]

# torch.optim keeps `step` as a 0-dim float32 tensor per parameter tensor (adam.py, adagrad.py,
# rmsprop.py, _adafactor.py: `torch.tensor(0.0, dtype=_get_scalar_dtype())`, on the CPU unless
# capturable/fused, then on the parameter's device). SGD keeps no step; Lion (lion-pytorch) neither.
STEP_BYTES = 4
OPTIMIZERS = ("sgd", "sgd-momentum", "adagrad", "rmsprop", "adam", "adamw", "adafactor", "lion", "adam-8bit")
WITH_STEP = {"adagrad", "rmsprop", "adam", "adamw", "adafactor"}


@dataclass(frozen=True)
class OptimizerStateBytes:
    """`state`: moment buffers (on the parameters' device); `step`: the scalar step tensors."""

    state: int
    step: int
    n_tensors: int  # parameter tensors the optimizer holds state for

    @property
    def total(self) -> int:
        return self.state + self.step


def as_shapes(params: Iterable[Shape] | Mapping[str, Shape]) -> list[Shape]:
    """Accept a list of shapes or {path: shape}; checks every dim is a positive integer."""
    items = params.items() if isinstance(params, Mapping) else enumerate(params)
    shapes = []
    for where, shape in items:
        shape = tuple(shape)
        if any(not isinstance(d, int) or d < 0 for d in shape):
            raise WorkloadError(f"parameter {where}: shape must be non-negative integers, got {shape!r}")
        shapes.append(shape)
    return shapes


def _check(name: str) -> None:
    if name not in OPTIMIZERS:
        raise WorkloadError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")


def adafactor_state_elements(shape: Shape) -> int:
    """torch.optim.Adafactor (torch 2.13 _adafactor.py): for grad.dim() > 1, `row_var` of shape
    [..., rows, 1] and `col_var` of shape [..., 1, cols]; else a full `variance` like the param."""
    n = prod(shape)
    if len(shape) > 1:
        rows, cols = shape[-2], shape[-1]
        return (n // cols if cols else 0) + (n // rows if rows else 0)
    return n


def _adafactor_sizes(shape: Shape) -> tuple[int, int, int, int]:
    """(numel, row_mean, col_mean, row_var.mean(dim=-2)) elements of a >= 2-D tensor: the factors
    have shapes [..., rows, 1] and [..., 1, cols], the mean over rows of row_var [..., 1, 1]."""
    n = prod(shape)
    rows, cols = shape[-2], shape[-1]
    return n, n // cols if cols else 0, n // rows if rows else 0, n // (rows * cols) if rows * cols else 0


def _adafactor_loop_peak(shapes: list[Shape]) -> int:
    """Most elements torch 2.13's `_single_tensor_adafactor` holds at once, walking the tensors in
    the optimizer's order. Its Python locals outlive the loop iteration that made them: `update`
    (the previous tensor's var_estimate) until the next `update =`, `row_mean`/`col_mean` until
    the next >= 2-D tensor reassigns them, `grad_squared` until the next 1-D one does. Per tensor:
    >= 2-D: row_mean, col_mean, var_estimate = row_var @ col_var (numel) and the divisor
    row_var.mean(dim=-2) (freed after the div_); 1-D: grad_squared = grad * grad and
    var_estimate = variance.clone() (numel each)."""
    update = row = col = squared = most = 0
    for shape in shapes:
        if len(shape) > 1:
            n, r, c, m = _adafactor_sizes(shape)
            most = max(most, update + squared + row + col + r, update + squared + r + col + c)
            row, col = r, c
            most = max(most, update + squared + row + col + n + m)
        else:
            n = prod(shape)
            most = max(most, update + row + col + squared + n)  # grad * grad, then the old one dies
            squared = n
            most = max(most, update + row + col + squared + n)  # the clone beside the old update
        update = n
    return most


def _adafactor_foreach_peak(shapes: list[Shape]) -> int:
    """Most elements torch 2.13's `_multi_tensor_adafactor` holds at once. It steps two groups in
    the order their first tensor comes: the >= 2-D tensors (row_means, del; col_means, del; then
    var_estimates (all numels) beside row_var_means) and the 1-D ones (grads_squared, del; then
    var_estimates = clones); the first group's `updates` (its var_estimates) stays alive, a
    Python local, while the second group runs."""
    groups: dict[bool, list[tuple[int, int, int, int]]] = {}
    for shape in shapes:
        groups.setdefault(len(shape) > 1, []).append(_adafactor_sizes(shape) if len(shape) > 1
                                                      else (prod(shape), 0, 0, 0))
    prev = most = 0
    for multidim, sizes in groups.items():
        total = sum(s[0] for s in sizes)
        if multidim:
            own = max(sum(s[1] for s in sizes), sum(s[2] for s in sizes), total + sum(s[3] for s in sizes))
        else:
            own = total
        most = max(most, prev + own)
        prev = total
    return most


# for-loop steps whose result is a Python local that outlives its iteration, until the next
# tensor's replaces it (torch 2.13): adam.py's `denom`, adagrad.py's `std`, rmsprop.py's `avg`
LOOP_CARRY = {"adam", "adamw", "adagrad", "rmsprop"}


def _loop_peak(optimizer: str, numels: list[int], weight_decay: float) -> int:
    """Most elements a for-loop step holds at once, walking the tensors in the optimizer's order:
    tensor i's own temporaries (adam: exp_avg_sq.sqrt() and its quotient, + grad.add(param) with
    coupled weight decay; adagrad, rmsprop: the sqrt, updated in place) beside the previous
    tensor's denom / std / avg, which dies only when tensor i's is assigned."""
    if optimizer in ("adam", "adamw"):
        own = 2 + (1 if optimizer == "adam" and weight_decay else 0)
    else:
        own = 1
    prev = most = 0
    for n in numels:
        most = max(most, own * n + prev)
        prev = n
    return most


# bitsandbytes Adam8bit's quantization maps: a signed and an unsigned 256-code fp32 map, one pair
# shared by every parameter (Optimizer2State.init_state: state["qmap1"] = self.name2qmap["dynamic"]).
ADAM8BIT_QMAPS = 2 * 256 * 4
# layerwise.train.adam8bit (what the measure reading runs) updates CHUNK elements at a time; its
# temporaries are 3 fp32 copies of a chunk (the two dequantized moments and one of sqrt / abs /
# codes) plus an fp32 copy of a low-precision gradient chunk, and one fp32 absmax per block.
ADAM8BIT_CHUNK = 4096 * 256
ADAM8BIT_TEMP_COPIES = 3


def _adam8bit_state_bytes(n: int, blocksize: int, min_8bit_size: int) -> int:
    """bitsandbytes Adam8bit: two 1-byte states per element with one fp32 absmax per `blocksize`
    block each; tensors under `min_8bit_size` elements keep fp32 states (bitsandbytes 0.45-0.48
    Optimizer2State.init_state: min_8bit_size=4096, block_wise, blocksize = 256). Measured against
    layerwise.train.adam8bit, which allocates the same state, in tests/cost/test_optimizers.py."""
    if n < min_8bit_size:
        return 2 * 4 * n
    blocks = -(-n // blocksize)
    return 2 * (n + 4 * blocks)


def _adam8bit_temporary_bytes(numels: list[int], grad_dtype: str, min_8bit_size: int) -> int:
    """The largest tensor's step in layerwise.train.adam8bit: chunked 8-bit tensors, whole fp32 ones."""
    low = 0 if grad_dtype == "fp32" else 1  # the gradient chunk upcast to fp32
    per = []
    for n in numels:
        if n < min_8bit_size:  # fp32 states updated in place: sqrt's result (+ the upcast gradient)
            per.append((1 + low) * 4 * n)
        else:
            unit = min(n, ADAM8BIT_CHUNK)
            per.append((ADAM8BIT_TEMP_COPIES + low) * 4 * unit + 4 * -(-unit // 256))
    return max(per)


def shared_state_bytes(optimizer: str, params: Iterable[Shape] | Mapping[str, Shape], *,
                       min_8bit_size: int = 4096) -> int:
    """The part of `state_bytes` held once per optimizer, not per tensor (Adam8bit's qmaps): a sum
    of state_bytes over groups of tensors counts it once per group, so subtract it there."""
    if optimizer != "adam-8bit":
        return 0
    return ADAM8BIT_QMAPS if any(prod(s) >= min_8bit_size for s in as_shapes(params)) else 0


def state_bytes(optimizer: str, params: Iterable[Shape] | Mapping[str, Shape], *, dtype: str = "fp32",
                momentum: float = 0.0, centered: bool = False, amsgrad: bool = False,
                blocksize: int = 256, min_8bit_size: int = 4096) -> OptimizerStateBytes:
    """Persistent optimizer state for the trainable parameters `params` stored in `dtype`.

    `dtype` is the dtype of the moment buffers: torch creates them with zeros_like(param), so it is
    the parameter's dtype (fp32 under autocast and fp32; fp16/bf16 for a pure half model; the fp32
    master copy's for the ZeRO convention). `momentum` applies to rmsprop (momentum_buffer when > 0).
    """
    _check(optimizer)
    shapes = as_shapes(params)
    numels = [prod(s) for s in shapes]
    n_total = sum(numels)
    if optimizer == "sgd":
        state = 0  # momentum=0: state["momentum_buffer"] is None
    elif optimizer in ("sgd-momentum", "adagrad", "lion"):
        state = nbytes(n_total, dtype)  # momentum_buffer / sum / exp_avg
    elif optimizer == "rmsprop":
        copies = 1 + (momentum > 0) + bool(centered)  # square_avg (+ momentum_buffer, grad_avg)
        state = copies * nbytes(n_total, dtype)
    elif optimizer in ("adam", "adamw"):
        state = (2 + bool(amsgrad)) * nbytes(n_total, dtype)  # exp_avg, exp_avg_sq (+ max_exp_avg_sq)
    elif optimizer == "adafactor":
        state = nbytes(sum(adafactor_state_elements(s) for s in shapes), dtype)
    else:  # adam-8bit
        state = sum(_adam8bit_state_bytes(n, blocksize, min_8bit_size) for n in numels)
        state += ADAM8BIT_QMAPS if any(n >= min_8bit_size for n in numels) else 0
    step = STEP_BYTES * len(shapes) if optimizer in WITH_STEP else 0
    return OptimizerStateBytes(state=state, step=step, n_tensors=len(shapes))


def step_temporary_bytes(optimizer: str, params: Iterable[Shape] | Mapping[str, Shape], *,
                         impl: str = "loop", dtype: str = "fp32", weight_decay: float = 0.0) -> int:
    """Peak bytes of the temporaries `optimizer.step()` allocates on top of params, grads and state.

    adam/adamw, from torch 2.13 torch/optim/adam.py:
      loop (`_single_tensor_adam`): per tensor, `denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)`
        holds the sqrt and the quotient at once: 2 x the largest tensor. Adam (not AdamW) with
        weight_decay adds `grad = grad.add(param)`: one more largest-tensor copy.
      foreach (`_multi_tensor_adam`): `_foreach_sqrt(exp_avg_sqs)` over every tensor: 1 x all params
        (the "20 B/param" peak of fp32 AdamW on CUDA). Adam's coupled weight decay makes a full
        `_foreach_add(grads, params)` copy, but `del device_grads` frees it before the sqrt: still 1x.
      fused (`_fused_adam_`): one kernel per group, no full-size temporaries.
    sgd-momentum: the first step clones grad into the state (counted as state); later steps are in
    place; weight decay (`grad.add(param)`) adds one largest (loop) / full (foreach) copy.
    adagrad: loop `std = state_sum.sqrt().add_(eps)`: 1 x largest; foreach keeps two full lists
    (`_foreach_sqrt` and the addcdiv operand). rmsprop: 1 x largest (loop) or 1 x all (foreach). adafactor:
    _adafactor_loop_peak / _adafactor_foreach_peak (order-dependent: Python locals outlive their
    loop iteration).
    Small scalar temporaries are not counted: measured within 5% in the tests. lion (lion-pytorch):
    `exp_avg.clone().mul_(beta1).add(grad)`: 2 x largest. adam-8bit: layerwise.train.adam8bit's chunked
    step (bitsandbytes' CUDA kernel itself keeps a block in registers); `dtype` is then the gradients'.
    """
    _check(optimizer)
    if impl not in ("loop", "foreach", "fused"):
        raise WorkloadError(f"--optimizer-impl must be loop, foreach or fused; got {impl!r}")
    shapes = as_shapes(params)
    numels = [prod(s) for s in shapes]
    if not numels or impl == "fused":
        return 0
    if optimizer == "adam-8bit":  # `dtype`: the parameters' (and gradients') dtype here
        return _adam8bit_temporary_bytes(numels, dtype, 4096)
    if optimizer == "adafactor":
        return nbytes(_adafactor_loop_peak(shapes) if impl == "loop" else _adafactor_foreach_peak(shapes), dtype)
    if impl == "loop" and optimizer in LOOP_CARRY:
        return nbytes(_loop_peak(optimizer, numels, weight_decay), dtype)
    unit = max(numels) if impl == "loop" else sum(numels)
    if optimizer == "sgd":
        copies = 1 if weight_decay else 0
    elif optimizer == "sgd-momentum":
        copies = 1 if weight_decay else 0
    elif optimizer in ("adam", "adamw"):
        coupled_wd = 1 if (optimizer == "adam" and weight_decay) else 0
        copies = 2 + coupled_wd if impl == "loop" else 1
    elif optimizer == "adagrad":
        copies = 1 if impl == "loop" else 2
    elif optimizer == "adam-8bit":
        copies = 0
    elif optimizer == "lion":  # the clone, and .add()'s result beside it
        copies = 2
    else:  # rmsprop, adafactor
        copies = 1
    return copies * nbytes(unit, dtype)
