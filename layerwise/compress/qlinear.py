"""Weight-only quantized Linear: int8 or int4 codes with per-channel or grouped fp32 scales.

torchao is not installed and torch.ao has no CPU weight-only int4 kernel, so this is a small module
of our own: the weight is stored as symmetric integer codes and dequantized on the fly in forward
(activations stay fp32). What it saves is storage (the file and the resident weights), not compute.

Storage for a (d_out, d_in) weight with group size g (g = d_in: per output channel):
  int8: qweight int8 (d_out, d_in);            scale fp32 (d_out, d_in // g)
  int4: qweight uint8 (d_out, d_in // 2), two codes per byte (low nibble = even column);
        scale fp32 (d_out, d_in // g)
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from layerwise.spec.errors import LayerwiseError

# Symmetric code range: +-qmax (int8 drops -128, int4 drops -8, so zero is exact and no zero point).
QMAX = {8: 127, 4: 7}


def check_groups(d_in: int, bits: int, group_size: int, where: str) -> int:
    """The group size in force (0 -> d_in, per channel); raises if d_in does not split evenly."""
    if bits not in QMAX:
        raise LayerwiseError(f"{where}: weight-only bits must be 8 or 4, got {bits}")
    g = group_size or d_in
    if g <= 0 or d_in % g:
        raise LayerwiseError(f"{where}: d_in {d_in} is not divisible by group size {g}")
    if bits == 4 and d_in % 2:
        raise LayerwiseError(f"{where}: int4 packs two codes per byte, so d_in must be even, got {d_in}")
    return g


def quantize_weight(weight: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(d_out, d_in) float -> (codes int8 (d_out, d_in), scale fp32 (d_out, d_in // group))."""
    d_out, d_in = weight.shape
    w = weight.detach().float().reshape(d_out, d_in // group, group)
    scale = w.abs().amax(dim=-1).clamp(min=1e-12) / QMAX[bits]  # (d_out, n_groups)
    codes = torch.round(w / scale[..., None]).clamp(-QMAX[bits], QMAX[bits]).to(torch.int8)
    return codes.reshape(d_out, d_in), scale


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes in [-7, 7], (d_out, d_in) -> uint8 (d_out, d_in // 2), two's-complement nibbles."""
    nib = (codes.to(torch.int16) & 0xF).to(torch.uint8)
    return nib[:, 0::2] | (nib[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (d_out, d_in // 2) -> int8 codes (d_out, d_in)."""
    lo = (packed & 0xF).to(torch.int16)
    hi = (packed >> 4).to(torch.int16)
    both = torch.stack([lo, hi], dim=-1).reshape(packed.shape[0], -1)
    return torch.where(both > 7, both - 16, both).to(torch.int8)


class WeightOnlyLinear(nn.Module):
    """y = x @ dequant(qweight)^T + bias. Buffers: qweight, scale; parameter: bias (fp32)."""

    def __init__(self, d_in: int, d_out: int, *, bits: int = 8, group_size: int = 0, bias: bool = True):
        super().__init__()
        self.d_in, self.d_out, self.bits = d_in, d_out, bits
        self.group = check_groups(d_in, bits, group_size, "WeightOnlyLinear")
        cols = d_in if bits == 8 else d_in // 2
        self.register_buffer("qweight", torch.zeros(d_out, cols, dtype=torch.int8 if bits == 8 else torch.uint8))
        self.register_buffer("scale", torch.ones(d_out, d_in // self.group))
        self.bias = nn.Parameter(torch.zeros(d_out), requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, bits: int, group_size: int = 0) -> "WeightOnlyLinear":
        out = cls(linear.in_features, linear.out_features, bits=bits, group_size=group_size,
                  bias=linear.bias is not None)
        codes, scale = quantize_weight(linear.weight, bits, out.group)
        out.qweight.copy_(codes if bits == 8 else pack_int4(codes))
        out.scale.copy_(scale)
        if linear.bias is not None:
            out.bias.data.copy_(linear.bias.detach())
        return out

    def codes(self) -> torch.Tensor:
        return self.qweight if self.bits == 8 else unpack_int4(self.qweight)

    def dequantized(self) -> torch.Tensor:
        """The fp32 weight the codes stand for, (d_out, d_in)."""
        c = self.codes().float().reshape(self.d_out, -1, self.group)
        return (c * self.scale[..., None]).reshape(self.d_out, self.d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized(), self.bias)

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_out={self.d_out}, bits={self.bits}, group={self.group}"
