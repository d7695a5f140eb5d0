"""Transformer block: attention and a feed-forward (or MoE) layer, each behind a norm and a residual.

Three wirings (x: (B, S, D)):
  pre  (GPT-2, Llama):  h = x + attn(attn_norm(x));        y = h + ffn(ffn_norm(h))
  post (BERT):          h = attn_norm(x + attn(x));        y = ffn_norm(h + ffn(h))
  parallel (GPT-J, Phi-2: one shared norm; GPT-NeoX: shared_norm=False, two norms):
                        y = x + attn(attn_norm(x)) + ffn(ffn_norm or attn_norm (x))
  sandwich (Gemma 2/3: pre-norm plus a norm on each branch's output before its add):
                        h = x + attn_post_norm(attn(attn_norm(x)));  y = h + ffn_post_norm(ffn(ffn_norm(h)))
`attn` and `ffn` are child specs (so LoRA/quantization replace their projections); the norms are
made from `norm`, `norm_eps`, `norm_bias` at the width of `attn.d_model`. Residual dropout (`dropout`)
applies to each branch's output before its add.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from layerwise.spec.base import Block, Shape, block_class, child_out, register
from layerwise.spec.counts import FlopCtx, Flops
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod

NORMS = ("layernorm", "rmsnorm")


def make_norm(kind: str, d_model: int, eps: float, bias: bool = True, trainable: bool = True) -> Block:
    """A LayerNorm or RMSNorm spec: the one place a norm name becomes a norm type."""
    if kind == "layernorm":
        return block_class("layernorm")(d_model=d_model, eps=eps, bias=bias, trainable=trainable)
    if kind == "rmsnorm":
        return block_class("rmsnorm")(d_model=d_model, eps=eps, trainable=trainable)
    raise SpecError(f"norm must be one of {list(NORMS)}, got {kind!r}")


@register("transformer_block")
@dataclass(frozen=True, kw_only=True)
class TransformerBlock(Block):
    attn: Block  # attention (self-attention; d_model read from it)
    ffn: Block  # ffn or moe
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5
    norm_bias: bool = True  # LayerNorm only
    norm_position: str = "pre"  # pre | post
    parallel: bool = False  # attention and FFN read the same normed input (GPT-J, Phi-2, GPT-NeoX)
    shared_norm: bool = True  # parallel only: one norm for both branches (GPT-J, Phi-2); False: two (NeoX)
    dropout: float = 0.0  # residual dropout on each branch's output
    sandwich: bool = False  # pre-norm with a second norm on each branch's output (Gemma 2/3)
    trainable: bool = True  # the norms this block makes (attn and ffn carry their own flags)

    def __post_init__(self):
        if self.sandwich and (self.parallel or self.norm_position != "pre"):
            raise SpecError("transformer_block.sandwich needs the sequential pre-norm wiring (Gemma 2/3)")
        self._one_of("norm", NORMS)
        self._one_of("norm_position", ("pre", "post"))
        if self.parallel and self.norm_position != "pre":
            raise SpecError("transformer_block.parallel needs norm_position='pre' (GPT-J/NeoX wiring)")
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"transformer_block.dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(getattr(self.attn, "d_model", None), int):
            raise SpecError(f"transformer_block.attn must have a d_model (an attention spec), got {self.attn.type_name}")

    @property
    def d_model(self) -> int:
        return self.attn.d_model

    # ---- children -------------------------------------------------------------------------------
    def _norm(self) -> Block:
        return make_norm(self.norm, self.d_model, self.norm_eps, self.norm_bias, self.trainable)

    def _drop(self) -> Block | None:
        return block_class("dropout")(p=self.dropout) if self.dropout > 0 else None

    def _has_ffn_norm(self) -> bool:
        return not (self.parallel and self.shared_norm)

    def children(self):
        drop = self._drop()
        out = [("attn_norm", self._norm()), ("attn", self.attn)]
        if self.sandwich:
            out.append(("attn_post_norm", self._norm()))
        if drop is not None:
            out.append(("attn_dropout", drop))
        if self._has_ffn_norm():
            out.append(("ffn_norm", self._norm()))
        out.append(("ffn", self.ffn))
        if self.sandwich:
            out.append(("ffn_post_norm", self._norm()))
        if drop is not None:
            out.append(("ffn_dropout", drop))
        return tuple(out)

    def trace(self, in_shape: Shape):
        # Every child sees (B, S, D); the order is the execution order of the wiring above.
        kids = dict(self.children())
        if self.norm_position == "post":
            order = ["attn", "attn_dropout", "attn_norm", "ffn", "ffn_dropout", "ffn_norm"]
        else:
            order = ["attn_norm", "attn", "attn_post_norm", "attn_dropout", "ffn_norm", "ffn", "ffn_post_norm",
                     "ffn_dropout"]
        return tuple((n, kids[n], tuple(in_shape)) for n in order if n in kids)

    def out_shape(self, in_shape: Shape) -> Shape:
        for name, child, child_in in self.trace(in_shape):
            out = child_out(name, child, child_in)
            if tuple(out) != tuple(in_shape):
                raise SpecError(f"{name} must keep the shape {tuple(in_shape)} for its residual, got {tuple(out)}")
        return tuple(in_shape)

    # ---- readings -------------------------------------------------------------------------------
    def depth(self) -> int:
        kids = dict(self.children())
        attn = kids["attn_norm"].depth() + kids["attn"].depth()
        ffn = kids["ffn_norm" if "ffn_norm" in kids else "attn_norm"].depth() + kids["ffn"].depth()
        if self.parallel:  # both branches read x side by side: the longer one counts
            return max(attn, ffn)
        return attn + ffn

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        return Flops(fwd_other=2 * prod(in_shape))  # two residual adds (parallel: x + a + f)

    def flops(self, in_shape: Shape, ctx: FlopCtx = FlopCtx()) -> Flops:
        if not self.parallel:
            return super().flops(in_shape, ctx)
        # Parallel: the FFN's input needs grad if x does or its norm is trainable, not because the
        # attention branch is trainable (the base rule assumes a chain).
        kids, shape = dict(self.children()), tuple(in_shape)
        total = self.own_flops(shape, ctx)
        norm_grad = ctx.input_grad or kids["attn_norm"].params().trainable > 0
        total = total + kids["attn_norm"].flops(shape, ctx) + kids["attn"].flops(shape, replace(ctx, input_grad=norm_grad))
        if "ffn_norm" in kids:
            total = total + kids["ffn_norm"].flops(shape, ctx)
            norm_grad = ctx.input_grad or kids["ffn_norm"].params().trainable > 0
        total = total + kids["ffn"].flops(shape, replace(ctx, input_grad=norm_grad))
        for name in ("attn_dropout", "ffn_dropout"):
            if name in kids:
                total = total + kids[name].flops(shape, ctx)
        return total

    def build(self):
        from layerwise.build.transformer import TransformerBlockModule

        kids = {name: child.build() for name, child in self.children()}
        return TransformerBlockModule(kids, self.norm_position, self.parallel)
