"""Model-state bytes (weights, master weights, gradients, optimizer states) on one device.

Three ways to count, each named:
* `torch_model_states`: what PyTorch actually holds for a precision policy and torch.optim
  optimizer (exact, from parameter shapes; checked against a real step in tests).
* `convention_model_states`: bytes/param by a published convention (ZeRO's 16, HF's 18).
* `deepspeed_zero2_estimate` / `deepspeed_zero3_estimate`: DeepSpeed's own estimator functions,
  reproduced term by term so their published numbers can be matched.
Per-device sharding (ZeRO stages, TP, offload) lives in cost/parallel.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Iterable, Mapping

from layerwise.cost.optimizers import Shape, as_shapes, state_bytes
from layerwise.cost.precision import Convention, convention, nbytes, policy


@dataclass(frozen=True)
class ModelStates:
    """Bytes of each model state (the JSON `components` keys of the same names)."""

    weights: int = 0
    master_weights: int = 0
    gradients: int = 0
    optimizer_states: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.master_weights + self.gradients + self.optimizer_states

    def __add__(self, other: "ModelStates") -> "ModelStates":
        return ModelStates(self.weights + other.weights, self.master_weights + other.master_weights,
                           self.gradients + other.gradients, self.optimizer_states + other.optimizer_states)


def torch_model_states(trainable: Iterable[Shape] | Mapping[str, Shape],
                       frozen: Iterable[Shape] | Mapping[str, Shape] = (), *, precision: str = "fp32",
                       optimizer: str = "adamw", frozen_dtype: str | None = None, **optimizer_kw) -> ModelStates:
    """What a single-process PyTorch step holds, after `optimizer.step()` has run once.

    weights: every parameter in the policy's weight dtype (frozen ones in `frozen_dtype`, e.g. a
    QLoRA base stored elsewhere; default the same dtype). gradients: trainable only, same dtype
    as the parameter (`.grad` matches `param.dtype`). master: only policies with a separate fp32
    copy (none of PyTorch's; see precision.py). optimizer: state + scalar `step` tensors.
    """
    pol = policy(precision)
    train_shapes, frozen_shapes = as_shapes(trainable), as_shapes(frozen)
    n_train = sum(prod(s) for s in train_shapes)
    n_frozen = sum(prod(s) for s in frozen_shapes)
    weights = nbytes(n_train, pol.weights) + nbytes(n_frozen, frozen_dtype or pol.weights)
    master = nbytes(n_train, pol.master) if pol.master else 0
    opt_dtype = pol.master or pol.optimizer_states
    opt = state_bytes(optimizer, train_shapes, dtype=opt_dtype, **optimizer_kw).total if train_shapes else 0
    return ModelStates(weights=weights, master_weights=master, gradients=nbytes(n_train, pol.grads),
                       optimizer_states=opt)


def convention_model_states(n_params: int, name: str | Convention = "zero-16") -> ModelStates:
    """Model states of `n_params` trainable parameters at a named bytes/param convention."""
    conv = convention(name) if isinstance(name, str) else name
    return ModelStates(weights=conv.weights * n_params, master_weights=conv.master * n_params,
                       gradients=conv.grads * n_params, optimizer_states=conv.optimizer * n_params)


@dataclass(frozen=True)
class HostDeviceBytes:
    """An estimate split into CPU RAM and per-GPU memory, in bytes."""

    cpu: int
    gpu: int


def deepspeed_zero2_estimate(total_params: int, *, num_gpus_per_node: int = 1, num_nodes: int = 1,
                             cpu_offload: bool = False, additional_buffer_factor: float = 1.5) -> HostDeviceBytes:
    """deepspeed 0.19.8 `stage_1_and_2.estimate_zero2_model_states_mem_needs` (memory_flops_facts §2):
    no offload: gpu = 2P (fp16 params, replicated) + int(18P / total_gpus) ("18 = 2_grads_16bit +
    4_grads_32bit + 4_params_32bit + 8_optimizer_states_32bit"), cpu = 4P x gpus_per_node x 1.5;
    cpu_offload: gpu = 2P, cpu = P x max(4 x total_gpus, 16) x 1.5. Floats and int() as DeepSpeed has them."""
    total_gpus = num_nodes * num_gpus_per_node
    if cpu_offload:
        gpu = 2 * total_params
        cpu = total_params * max(4 * total_gpus, 16) * additional_buffer_factor
    else:
        gpu = 2 * total_params + int(18 * total_params / total_gpus)
        cpu = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return HostDeviceBytes(cpu=int(cpu), gpu=int(gpu))


def deepspeed_zero3_estimate(total_params: int, largest_layer_params: int, *, num_gpus_per_node: int = 1,
                             num_nodes: int = 1, cpu_offload: bool = False, cpu_offload_params: bool = False,
                             zero_init: bool = True, additional_buffer_factor: float = 1.5) -> HostDeviceBytes:
    """deepspeed 0.19.8 `stage3.estimate_zero3_model_states_mem_needs` (memory_flops_facts §2).

    largest_layer_memory = 4 x largest_layer_params (the gathered fp16 params + grads of the biggest
    module); the sharded part is 18 B/param as in ZeRO-2, 16 with the optimizer offloaded."""
    total_gpus = num_nodes * num_gpus_per_node
    gpus_factor = 1 / num_nodes
    largest = 4 * largest_layer_params
    f = additional_buffer_factor
    if cpu_offload and cpu_offload_params:
        gpu = largest
        per = 18 * gpus_factor if zero_init else max(4 * num_gpus_per_node, 18 * gpus_factor)
        cpu = total_params * per * f
    elif cpu_offload:
        gpu = largest + int(2 * total_params / total_gpus)
        per = 16 * gpus_factor if zero_init else max(4 * num_gpus_per_node, 16 * gpus_factor)
        cpu = total_params * per * f
    else:
        gpu = largest + int(18 * total_params / total_gpus)
        cpu = (largest_layer_params if zero_init else total_params) * 4 * num_gpus_per_node * f
    return HostDeviceBytes(cpu=int(cpu), gpu=int(gpu))
