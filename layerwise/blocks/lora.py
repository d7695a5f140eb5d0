"""LoRA: y = base(x) + (alpha / rank) * lora_b(lora_a(dropout(x))) (Hu et al. 2021, arXiv 2106.09685).

base: the wrapped Linear, frozen; lora_a: d_in -> rank, lora_b: rank -> d_out, both without bias;
lora_b starts at zero, so the wrapped layer starts equal to its base. Exposes d_in, d_out and bias
of the base, so a parent (attention, ffn) checks a LoRA child like the Linear it replaces.

FLOPs: the children's own (a frozen base has no grad_weight matmul; lora_b's input always needs
grad because lora_a is trainable); other, per output element: scale 1 and add 1 (backward: scale 1),
dropout 2 / 2 per input element if dropout > 0.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from layerwise.blocks.linear import Linear
from layerwise.spec.base import Block, Shape, register
from layerwise.spec.counts import FlopCtx, Flops
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod

INIT_A = ("gaussian", "kaiming")


@register("lora")
@dataclass(frozen=True, kw_only=True)
class LoRA(Block):
    base: Linear
    rank: int
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.0  # on the adapter's input only
    init_a: str = "gaussian"  # gaussian: N(0, 1/rank) (peft's "gaussian"); kaiming: kaiming_uniform(a=sqrt 5)
    # children, derived when left out
    lora_a: Linear | None = None
    lora_b: Linear | None = None

    def __post_init__(self):
        if not isinstance(self.base, Linear):
            raise SpecError(f"lora.base must be a linear block, got {type(self.base).__name__}")
        self._positive("rank")
        width = min(self.base.d_in, self.base.d_out)
        if self.rank > width:  # the update B @ A has rank <= min(d_in, d_out) whatever `rank` says
            raise SpecError(f"lora rank {self.rank} is larger than the layer's width min(d_in {self.base.d_in}, "
                            f"d_out {self.base.d_out}) = {width}; a larger rank adds parameters, not capacity")
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not a > 0:
            raise SpecError(f"lora.alpha must be a positive number, got {a!r}")
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise SpecError(f"lora.dropout must be in [0, 1), got {p!r}")
        self._one_of("init_a", INIT_A)
        for name, d_in, d_out in (("lora_a", self.d_in, self.rank), ("lora_b", self.rank, self.d_out)):
            got = getattr(self, name)
            if got is None:
                object.__setattr__(self, name, Linear(d_in=d_in, d_out=d_out, bias=False))
            elif not isinstance(got, Linear) or (got.d_in, got.d_out, got.bias) != (d_in, d_out, False):
                raise SpecError(f"lora.{name} must be a linear with d_in={d_in}, d_out={d_out}, bias=False")

    # the Linear this replaces, as a parent sees it
    @property
    def d_in(self) -> int:
        return self.base.d_in

    @property
    def d_out(self) -> int:
        return self.base.d_out

    @property
    def bias(self) -> bool:
        return self.base.bias

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def trace(self, in_shape: Shape):
        return (("base", self.base, tuple(in_shape)), ("lora_a", self.lora_a, tuple(in_shape)),
                ("lora_b", self.lora_b, (*in_shape[:-1], self.rank)))

    def out_shape(self, in_shape: Shape) -> Shape:
        return self.base.out_shape(in_shape)

    def depth(self) -> int:
        return self.base.depth()  # the adapter path runs beside the base, it does not deepen it

    def flops(self, in_shape: Shape, ctx: FlopCtx = FlopCtx()) -> Flops:
        out = self.out_shape(in_shape)
        total = self.base.flops(in_shape, ctx) + self.lora_a.flops(in_shape, ctx)
        mid_grad = ctx.input_grad or self.lora_a.params().trainable > 0
        total = total + self.lora_b.flops((*in_shape[:-1], self.rank), replace(ctx, input_grad=mid_grad))
        n_out, n_in = prod(out), prod(in_shape)
        adapter_grad = mid_grad or self.lora_b.params().trainable > 0
        drop = 2 * n_in if self.dropout > 0 else 0
        return total + Flops(fwd_other=2 * n_out + drop,
                             bwd_other=(n_out + (drop if ctx.input_grad else 0)) if adapter_grad else 0)

    def build(self):
        from layerwise.build.lora import LoRAModule

        return LoRAModule(self)
