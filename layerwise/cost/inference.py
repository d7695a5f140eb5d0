"""Inference memory: weights by storage dtype (incl. int8/int4/nf4 with their scales) + KV cache +
the prefill's transient activation peak (which the activation model provides).

Quantized storage, per quantized matrix of shape (out, in) = n elements:
* int8 per-channel (LLM.int8 / torch.ao weight-only): n x 1 B + one fp16 scale per output row.
* int4 with groups of g along `in` (GPTQ/AWQ): n / 2 B + per group an fp16 scale and, if
  asymmetric, a 4-bit zero point (GPTQ packs zeros at 4 bits).
* nf4 (bitsandbytes, QLoRA, Dettmers et al. 2023 §3): n / 2 B + one absmax per block of 64; an fp32
  absmax (4 B) without double quantization; with it, 1-byte absmax + one fp32 per 256 of them
  (+ a 4-byte offset): 0.5 + 8/64 + 32/(64 x 256) bits/param of constants, the paper's 0.127.
Only matrices (2-D weights of linear layers) are quantized; embeddings, norms and biases keep the
activation dtype (what bitsandbytes and GPTQ do by default: `lm_head` and embeddings skipped).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Iterable, Mapping

from layerwise.cost.kv_cache import KVConfig, kv_cache_bytes
from layerwise.cost.optimizers import Shape, as_shapes
from layerwise.cost.precision import nbytes
from layerwise.spec.errors import WorkloadError

QUANTS = ("none", "int8", "int4", "nf4")


@dataclass(frozen=True)
class QuantConfig:
    """How matrices are stored. `dtype` is what unquantized params (and scales for int8) use."""

    quant: str = "none"
    dtype: str = "fp16"  # storage of non-quantized params (and the compute dtype)
    group_size: int = 128  # int4: elements per scale group along the input dim
    asymmetric: bool = True  # int4: a zero point per group (GPTQ default)
    nf4_block: int = 64  # nf4: elements per absmax block (bitsandbytes default)
    double_quant: bool = True  # nf4: absmax quantized to 8 bits in blocks of 256 (QLoRA)

    def __post_init__(self):
        if self.quant not in QUANTS:
            raise WorkloadError(f"--quant must be one of {', '.join(QUANTS)}; got {self.quant!r}")
        if self.group_size < 1 or self.nf4_block < 1:
            raise WorkloadError("quantization group/block sizes must be positive")


def quantized_matrix_bytes(shape: Shape, q: QuantConfig) -> int:
    """Storage of one 2-D weight (out, in) under `q`, scales included."""
    n, rows, cols = prod(shape), shape[0], shape[-1]
    if q.quant == "none":
        return nbytes(n, q.dtype)
    if q.quant == "int8":
        return n + nbytes(rows, "fp16")  # int8 payload + a per-output-channel fp16 scale
    if q.quant == "int4":
        groups = rows * -(-cols // q.group_size)
        zeros = nbytes(groups, "int4") if q.asymmetric else 0
        return nbytes(n, "int4") + nbytes(groups, "fp16") + zeros
    # nf4: the tensor is flattened and split into blocks of nf4_block
    blocks = -(-n // q.nf4_block)
    if not q.double_quant:
        return nbytes(n, "nf4") + 4 * blocks
    return nbytes(n, "nf4") + blocks + 4 * -(-blocks // 256) + 4


def is_quantizable(path: str, shape: Shape) -> bool:
    """Linear weights: 2-D, not an embedding table or the LM head (kept in full precision)."""
    leaf = path.rsplit(".", 1)[-1]
    skip = ("embed", "lm_head", "wte", "wpe", "pos")
    return len(shape) == 2 and leaf == "weight" and not any(k in path for k in skip)


def weight_bytes(params: Mapping[str, Shape] | Iterable[Shape], q: QuantConfig = QuantConfig(), *,
                 quantizable=is_quantizable) -> int:
    """Bytes of all weights stored for inference. `params`: {path: shape} (paths let embeddings
    and norms be told apart); a plain list of shapes quantizes every 2-D shape."""
    if isinstance(params, Mapping):
        items = list(params.items())
    else:
        items = [(f"{i}.weight", s) for i, s in enumerate(as_shapes(params))]
    total = 0
    for path, shape in items:
        shape = tuple(shape)
        if q.quant != "none" and quantizable(path, shape):
            total += quantized_matrix_bytes(shape, q)
        else:
            total += nbytes(prod(shape), q.dtype)
    return total


@dataclass(frozen=True)
class InferenceMemory:
    weights: int
    kv_cache: int
    activations: int  # the prefill's transient peak, from the activation model (0 if not given)

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations


def inference_memory(params: Mapping[str, Shape] | Iterable[Shape], kv: KVConfig | None, *, batch: int,
                     prompt: int, new_tokens: int = 0, q: QuantConfig = QuantConfig(),
                     activation_peak: int = 0) -> InferenceMemory:
    kv_b = kv_cache_bytes(kv, batch=batch, prompt=prompt, new_tokens=new_tokens) if kv else 0
    return InferenceMemory(weights=weight_bytes(params, q), kv_cache=kv_b, activations=activation_peak)
