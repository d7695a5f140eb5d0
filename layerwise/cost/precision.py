"""Bytes per element by dtype, and which dtype each model state uses under a precision policy.

Pure Python. Sizes are kept in *bits* so that 4-bit formats stay exact: bytes of n elements is
ceil(n * bits / 8) (two int4 values pack into one byte).

Two different things are both called "mixed precision", and they cost different bytes:

* PyTorch `torch.autocast` (what `--precision fp16-mixed|bf16-mixed` means here): parameters stay
  fp32 (4 B), their gradients are fp32 (4 B), there is no separate master copy; matmul inputs are
  cast to fp16/bf16 on the fly, and autocast *caches* the low-precision copy of each fp32 leaf
  parameter that requires grad for the rest of the forward (so backward reuses it), freed when the
  autocast context exits. Source: aten/src/ATen/autocast_mode.cpp `cached_cast` ("Do what Apex does,
  and cache lower_precision_fp casts of fp32 model weights (leaves)"). Which ops are cast differs
  between the CPU policy (bf16 by default, a shorter op list) and the CUDA one (fp16 by default).
* The ZeRO/DeepSpeed/Megatron convention ("mixed precision training", Micikevicius et al. 2018, as
  counted in the ZeRO paper): fp16 weights and fp16 gradients on the device, plus an fp32 master copy
  that the optimizer updates: 2 + 2 + 4 (+ Adam's 8) = 16 B/param.
"""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.spec.errors import WorkloadError

# Bits per element of each storage dtype. nf4/int4 are 4 bits of payload; their block/group scales
# are counted by cost/inference.py, where the block size is known.
DTYPE_BITS: dict[str, int] = {
    "fp64": 64,
    "fp32": 32,
    "tf32": 32,  # a math mode, stored as fp32
    "fp16": 16,
    "bf16": 16,
    "fp8": 8,  # e4m3 / e5m2
    "int8": 8,
    "uint8": 8,
    "int4": 4,
    "nf4": 4,  # QLoRA NormalFloat4 payload (Dettmers et al. 2023)
    "bool": 8,  # torch stores bool as one byte
}


def dtype_bits(dtype: str) -> int:
    if dtype not in DTYPE_BITS:
        raise WorkloadError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPE_BITS)}")
    return DTYPE_BITS[dtype]


def nbytes(n_elements: int, dtype: str) -> int:
    """Exact bytes of `n_elements` packed at the dtype's width (4-bit rounds up to whole bytes)."""
    return -(-n_elements * dtype_bits(dtype) // 8)


def bytes_per_element(dtype: str) -> float:
    """For display only (0.5 for int4); arithmetic uses `nbytes`."""
    return dtype_bits(dtype) / 8


@dataclass(frozen=True)
class PrecisionPolicy:
    """Which dtype each model state is stored in, as PyTorch does it for `--precision NAME`."""

    name: str
    weights: str  # dtype of the parameters the module holds
    grads: str  # dtype of .grad (same as the parameter's in PyTorch)
    master: str | None  # a separate fp32 copy the optimizer updates (None: the weights are it)
    activations: str  # dtype of most saved activations (matmul outputs under autocast)
    autocast: bool  # torch.autocast: fp32 params, low-precision compute, weight-cast cache
    optimizer_states: str  # dtype of Adam's exp_avg/exp_avg_sq (zeros_like(param))


POLICIES: dict[str, PrecisionPolicy] = {
    "fp32": PrecisionPolicy("fp32", "fp32", "fp32", None, "fp32", False, "fp32"),
    # pure half: model.half() / .to(bf16); torch optimizers keep states in the parameter's dtype.
    "fp16": PrecisionPolicy("fp16", "fp16", "fp16", None, "fp16", False, "fp16"),
    "bf16": PrecisionPolicy("bf16", "bf16", "bf16", None, "bf16", False, "bf16"),
    # torch.autocast: parameters, grads and states stay fp32; no master copy.
    "fp16-mixed": PrecisionPolicy("fp16-mixed", "fp32", "fp32", None, "fp16", True, "fp32"),
    "bf16-mixed": PrecisionPolicy("bf16-mixed", "fp32", "fp32", None, "bf16", True, "fp32"),
}


def policy(name: str) -> PrecisionPolicy:
    if name not in POLICIES:
        raise WorkloadError(f"--precision must be one of {', '.join(POLICIES)}; got {name!r}")
    return POLICIES[name]


def autocast_dtype(name: str) -> str | None:
    """The low-precision dtype autocast casts to under this policy (None: no autocast)."""
    p = policy(name)
    return p.activations if p.autocast else None


# torch.autocast's default low-precision dtype per device (torch.get_autocast_dtype): the CPU
# policy casts to bf16, CUDA to fp16; `--precision` names the dtype explicitly, this is the
# default a user gets from `torch.autocast(device_type)` alone.
AUTOCAST_DEFAULT_DTYPE = {"cpu": "bf16", "cuda": "fp16"}


def autocast_cache_bytes(cast_params: int, precision: str, *, cache_enabled: bool = True) -> int:
    """Bytes of the low-precision weight copies autocast keeps alive from forward to backward.

    `cast_params`: elements of the fp32 leaf parameters (requires_grad) that reach an op autocast
    casts down (linear/matmul/conv weights; not norms, which run in fp32). The cache is per
    autocast context (`torch.autocast(..., cache_enabled=True)` is the default) and is cleared when
    the outermost context exits, so it is live from the first cast to the end of forward+loss when
    backward runs outside the context (the usual recipe), and through backward if it runs inside.
    """
    dt = autocast_dtype(precision)
    if dt is None or not cache_enabled:
        return 0
    return nbytes(cast_params, dt)


@dataclass(frozen=True)
class Convention:
    """Bytes per parameter of the model states for mixed-precision Adam, by a named convention.

    Published estimates disagree by 2 B/param because they count gradients differently; each is
    kept here under its own name so a number can be reproduced and the difference explained.
    """

    name: str
    weights: int  # B/param of the weights the forward reads (fp16)
    grads: int  # B/param of gradients (fp16, plus an fp32 copy for "18")
    master: int  # B/param of fp32 master weights
    optimizer: int  # B/param of optimizer states (Adam: fp32 momentum + variance = 8)
    source: str

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.master + self.optimizer

    @property
    def k(self) -> int:
        """ZeRO's K: bytes/param held in the 'optimizer states' partition (master + moments)."""
        return self.master + self.optimizer


CONVENTIONS: dict[str, Convention] = {
    # ZeRO paper §3.1: "2Ψ + 2Ψ + KΨ", K = 12 (fp32 params 4 + momentum 4 + variance 4).
    "zero-16": Convention("zero-16", 2, 2, 4, 8,
                          "ZeRO (Rajbhandari et al. 2020) §3.1; memory_flops_facts.md §1a"),
    # HF "Model training anatomy": weights 6 (fp16 + fp32 copy) + gradients 4 ("kept in fp32") +
    # AdamW 8 = 18. DeepSpeed's estimators shard the same 18 ("18 = 2_grads_16bit + 4_grads_32bit +
    # 4_params_32bit + 8_optimizer_states_32bit") and add the fp16 weights on top (2 + 18 = 20 at
    # one GPU); cost/model_states.deepspeed_zero{2,3}_estimate reproduce those functions exactly.
    "hf-18": Convention("hf-18", 2, 4, 4, 8,
                        "HF docs 'Model training anatomy'; DeepSpeed 0.19.8 estimators; "
                        "memory_flops_facts.md §2, §3"),
    # torch.autocast + torch.optim.AdamW: fp32 params 4 + fp32 grads 4 + exp_avg 4 + exp_avg_sq 4;
    # the fp16 weight copies are autocast's cache (autocast_cache_bytes), not a model state.
    "torch-autocast": Convention("torch-autocast", 4, 4, 0, 8,
                                 "PyTorch torch.autocast + torch.optim.AdamW (measured in tests)"),
}


def convention(name: str) -> Convention:
    if name not in CONVENTIONS:
        raise WorkloadError(f"unknown bytes/param convention {name!r}; expected one of {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]
