"""Rotary position embedding (RoPE, Su et al. 2021, arXiv 2104.09864), used inside attention.

Pairs (x[i], x[i + d/2]) of each head vector are rotated by angle pos * inv_freq[i] (the "rotate
half" layout of GPT-NeoX / Hugging Face Llama). No parameters and no buffers: cos/sin are computed
on the fly for the sequence at hand, so parameter and buffer counts equal Hugging Face's
`named_parameters()`.

Context-length scaling (`factor` s, recorded in the spec so a dump says what was used):
  none    inv_freq[i] = base^(-2i/d)
  linear  positions divided by s (Chen et al. 2023, "position interpolation"): inv_freq / s
  ntk     "NTK-aware" (bloc97, 2023): base' = base * s^(d/(d-2)), unscaled positions
  yarn    YaRN (Peng et al. 2023, arXiv 2309.00071, eq. 17-19): per frequency, with
          r = max_seq / wavelength, gamma = clamp((r - alpha)/(beta - alpha), 0, 1), alpha=1, beta=32:
          inv_freq' = (1 - gamma) * inv_freq / s + gamma * inv_freq; cos/sin are multiplied by the
          attention factor 0.1 ln(s) + 1 (eq. 22, as Hugging Face applies it). max_seq = the
          original training context.

FLOPs (other, stated per element): tables: 1 per (position, frequency) for the outer product, and
1 each for cos and sin -> 3 * S * d/2 (+ 2 * S * d/2 for the YaRN attention factor); applying to
a (..., S, d) tensor: 3 per element (x*cos + rot(x)*sin); its backward: 3 per element.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from layerwise.spec.base import Block, Shape, expect_last, register
from layerwise.spec.counts import FlopCtx, Flops
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod

SCALINGS = ("none", "linear", "ntk", "yarn")
YARN_ALPHA, YARN_BETA = 1.0, 32.0  # the paper's recommended ramp bounds for Llama


@register("rope")
@dataclass(frozen=True, kw_only=True)
class Rope(Block):
    d_head: int  # the head width the rotation is applied to
    rotary_dim: int = 0  # dims rotated (the first ones; Phi-2 32 of 80, GPT-NeoX 25%); 0: the whole head
    base: float = 10000.0  # theta: wavelengths range from 2*pi to 2*pi*base
    scaling: str = "none"  # none | linear | ntk | yarn
    factor: float = 1.0  # context extension factor s (1.0 with scaling="none")
    max_seq: int = 0  # yarn: the original context length the model was trained on

    def __post_init__(self):
        self._positive("d_head")
        if self.d_head % 2:
            raise SpecError(f"rope.d_head must be even (dims are rotated in pairs), got {self.d_head}")
        self._non_negative("rotary_dim")
        if self.rotary_dim % 2 or self.rotary_dim > self.d_head:
            raise SpecError(f"rope.rotary_dim must be even and at most d_head {self.d_head}, got {self.rotary_dim}")
        self._one_of("scaling", SCALINGS)
        for name in ("base", "factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise SpecError(f"rope.{name} must be a positive number, got {value!r}")
        self._non_negative("max_seq")
        if self.scaling == "none" and self.factor != 1.0:
            raise SpecError(f"rope.factor is {self.factor} but scaling is 'none'; set scaling to linear, ntk or yarn")
        if self.scaling != "none" and self.factor < 1.0:
            raise SpecError(f"rope.factor must be >= 1 for {self.scaling} scaling (it extends the context), got {self.factor}")
        if self.scaling == "ntk" and self.rotated < 4:
            raise SpecError(f"rope.d_head must be >= 4 for ntk scaling (base * s^(d/(d-2))), got {self.rotated}")
        if self.scaling == "yarn" and self.max_seq <= 0:
            raise SpecError("rope.max_seq must be the original context length (> 0) for yarn scaling")

    # ---- the frequencies (pure Python, so the cost reading and tests can read them) ------------
    @property
    def rotated(self) -> int:
        """How many leading dims of each head are rotated."""
        return self.rotary_dim or self.d_head

    def inv_freq(self) -> list[float]:
        """The rotated/2 angular frequencies, scaling applied."""
        d, s = self.rotated, float(self.factor)
        base = float(self.base) * (s ** (d / (d - 2)) if self.scaling == "ntk" else 1.0)
        freqs = [base ** (-2 * i / d) for i in range(d // 2)]
        if self.scaling == "linear":
            return [f / s for f in freqs]
        if self.scaling == "yarn":
            return [_yarn(f, s, self.max_seq) for f in freqs]
        return freqs

    def attention_factor(self) -> float:
        """Multiplier of cos/sin: YaRN's sqrt(1/t) = 0.1 ln(s) + 1; 1 otherwise."""
        return 0.1 * math.log(self.factor) + 1.0 if self.scaling == "yarn" else 1.0

    # ---- readings ----------------------------------------------------------------------------
    def out_shape(self, in_shape: Shape) -> Shape:
        expect_last(self, in_shape, self.d_head)
        return tuple(in_shape)

    def table_flops(self, seq: int) -> int:
        """Computing cos/sin for `seq` positions (once per attention call)."""
        per = 3 + (2 if self.scaling == "yarn" else 0)
        return per * seq * (self.rotated // 2)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        """Applying the rotation to one (..., S, d_head) tensor (the table is attention's)."""
        n = prod(in_shape) // self.d_head * self.rotated
        return Flops(fwd_other=3 * n, bwd_other=3 * n if ctx.input_grad else 0)

    def build(self):
        from layerwise.build.attention import RotaryEmbedding

        return RotaryEmbedding(self.inv_freq(), self.attention_factor())


def _yarn(freq: float, s: float, original_len: int) -> float:
    wavelength = 2 * math.pi / freq
    r = original_len / wavelength  # rotations the frequency makes over the original context
    gamma = min(max((r - YARN_ALPHA) / (YARN_BETA - YARN_ALPHA), 0.0), 1.0)
    return (1 - gamma) * freq / s + gamma * freq  # interpolate long wavelengths, keep short ones
