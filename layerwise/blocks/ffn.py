"""Position-wise feed-forward: classic down(act(up(x))) or gated down(act(gate(x)) * up(x))
(SwiGLU with activation="silu", GeGLU with "gelu"; Shazeer 2020, arXiv 2002.05202).

Shapes: x (..., d_model) -> hidden (..., d_ff) -> (..., d_model). Dropout (if > 0) acts on the
hidden activations (T5's placement); the residual dropout belongs to the transformer block.
FLOPs: the projections' own (Linear); other, per hidden element: the activation's stated cost
(blocks.activation.COSTS), 1 for the gate product (backward 2: one per factor), dropout 2 / 2.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from layerwise.blocks.activation import COSTS
from layerwise.blocks.linear import Linear
from layerwise.spec.base import Block, Shape, expect_last, register
from layerwise.spec.counts import FlopCtx, Flops
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "quick_gelu", "silu", "sigmoid", "tanh")


@register("ffn")
@dataclass(frozen=True, kw_only=True)
class FFN(Block):
    d_model: int
    d_ff: int
    activation: str = "gelu"
    gated: bool = False  # True: act(gate_proj(x)) * up_proj(x) (LLaMA's SwiGLU)
    bias: bool = True  # on every projection
    dropout: float = 0.0  # on the hidden activations
    # children, derived from the fields above when left out
    up_proj: Block | None = None
    gate_proj: Block | None = None
    down_proj: Block | None = None

    def __post_init__(self):
        self._positive("d_model", "d_ff")
        self._one_of("activation", ACTIVATIONS)
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise SpecError(f"ffn.dropout must be in [0, 1), got {p!r}")
        want = {
            "up_proj": Linear(d_in=self.d_model, d_out=self.d_ff, bias=self.bias),
            "gate_proj": Linear(d_in=self.d_model, d_out=self.d_ff, bias=self.bias) if self.gated else None,
            "down_proj": Linear(d_in=self.d_ff, d_out=self.d_model, bias=self.bias),
        }
        for name, linear in want.items():
            got = getattr(self, name)
            if linear is None:
                if got is not None:
                    raise SpecError("ffn.gate_proj is given but gated is False")
            elif got is None:
                object.__setattr__(self, name, linear)
            else:
                _check_linear(f"ffn.{name}", got, linear)

    # ---- shapes ------------------------------------------------------------------------------
    def _hidden(self, in_shape: Shape) -> Shape:
        return (*in_shape[:-1], self.d_ff)

    def trace(self, in_shape: Shape):
        out = [("up_proj", self.up_proj, tuple(in_shape))]
        if self.gated:
            out.append(("gate_proj", self.gate_proj, tuple(in_shape)))
        return (*out, ("down_proj", self.down_proj, self._hidden(in_shape)))

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_last(self, in_shape, self.d_model)
        return tuple(in_shape)

    def depth(self) -> int:
        up = max(self.up_proj.depth(), self.gate_proj.depth() if self.gated else 0)
        return up + self.down_proj.depth()

    # ---- FLOPs -------------------------------------------------------------------------------
    def flops(self, in_shape: Shape, ctx: FlopCtx = FlopCtx()) -> Flops:
        self.out_shape(in_shape)
        total = self.up_proj.flops(in_shape, ctx)
        hidden_grad = ctx.input_grad or self.up_proj.params().trainable > 0
        if self.gated:
            total = total + self.gate_proj.flops(in_shape, ctx)
            hidden_grad = hidden_grad or self.gate_proj.params().trainable > 0
        n = prod(self._hidden(in_shape))
        act_fwd, act_bwd = COSTS[self.activation]
        fwd = n * (act_fwd + int(self.gated) + 2 * int(self.dropout > 0))
        bwd = n * (act_bwd + 2 * int(self.gated) + 2 * int(self.dropout > 0)) if hidden_grad else 0
        total = total + Flops(fwd_other=fwd, bwd_other=bwd)
        return total + self.down_proj.flops(self._hidden(in_shape), replace(ctx, input_grad=hidden_grad))

    def build(self):
        from layerwise.build.ffn import FFNModule

        return FFNModule(self)


def _check_linear(where: str, got: Block, want: Linear) -> None:
    dims = tuple(getattr(got, a, None) for a in ("d_in", "d_out", "bias"))
    if dims != (want.d_in, want.d_out, want.bias):
        raise SpecError(f"{where} must be a linear (or lora) with d_in={want.d_in}, d_out={want.d_out}, "
                        f"bias={want.bias} (from the parent's fields), got {got.type_name} with "
                        f"d_in, d_out, bias = {dims}")
