"""Mamba's selective state-space block (Gu and Dao 2023, arXiv 2312.00752; HF MambaMixer), x: (B, S, D).

  mamba_block:  y = x + mixer(norm(x))                      (RMSNorm, HF MambaBlock)
  mamba_mixer:  x, z = in_proj(x).chunk(2)                  (B, S, d_inner) each, d_inner = expand * D
                x = silu(conv(x))                           depthwise causal conv1d, kernel d_conv
                dt, Bm, Cm = x_proj(x).split(dt_rank, d_state, d_state)
                dt = softplus(dt_proj(dt))                  (B, S, d_inner)
                y = scan(x, dt, A = -exp(A_log), Bm, Cm) + D * x
                out_proj(y * silu(z))
  scan: h_t = exp(dt_t A) h_{t-1} + dt_t Bm_t x_t, y_t = Cm_t . h_t, a state h of (B, d_inner, d_state).
Parameters: the projections and the conv, and the scan's A_log (d_inner, d_state) and D (d_inner)
(children; HF names them mixer.A_log, mixer.D; here mixer.scan.A_log, mixer.scan.D).
FLOPs: the projections and the conv are matmul FLOPs (what FlopCounterMode counts); the scan is
elementwise, counted as other: per (B, S, d_inner, d_state) element 8 forward (exp(dt A): 2,
dt Bm x: 2, the state update: 2, Cm . h: 2) and 16 backward; per (B, S, d_inner) element 14 forward
(softplus 4, silu on x and z 4 + 4, D x + y 2) and twice that backward. Estimates, named as such:
FlopCounterMode counts no elementwise op.
"""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.blocks.conv import Conv1d
from layerwise.blocks.linear import Linear
from layerwise.blocks.transformer import make_norm
from layerwise.spec.base import Block, Shape, expect_last, expect_rank, register
from layerwise.spec.counts import FlopCtx, Flops, Params


@register("selective_scan")
@dataclass(frozen=True, kw_only=True)
class SelectiveScan(Block):
    """The scan's own parameters, A_log (d_inner, d_state) and D (d_inner), and its elementwise work.
    Input: x (B, S, d_inner) (dt, Bm, Cm come from the mixer's projections)."""

    d_inner: int
    d_state: int
    trainable: bool = True

    def own_params(self) -> Params:
        n = self.d_inner * self.d_state + self.d_inner
        return Params(trainable=n) if self.trainable else Params(frozen=n)

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_last(self, in_shape, self.d_inner)
        return tuple(in_shape)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        b, s, _ = in_shape
        states, rows = b * s * self.d_inner * self.d_state, b * s * self.d_inner
        return Flops(fwd_other=8 * states + 14 * rows, bwd_other=16 * states + 28 * rows)

    def build(self):
        from layerwise.build.mamba import SelectiveScanModule

        module = SelectiveScanModule(self.d_inner, self.d_state)
        module.requires_grad_(self.trainable)
        return module


@register("mamba_mixer")
@dataclass(frozen=True, kw_only=True)
class MambaMixer(Block):
    d_model: int
    d_inner: int  # expand * d_model
    d_state: int = 16
    d_conv: int = 4
    dt_rank: int  # HF "auto": ceil(d_model / 16)
    bias: bool = False  # in_proj and out_proj
    conv_bias: bool = True
    trainable: bool = True

    def __post_init__(self):
        self._positive("d_model", "d_inner", "d_state", "d_conv", "dt_rank")

    def children(self):
        lin = dict(trainable=self.trainable)
        return (("in_proj", Linear(d_in=self.d_model, d_out=2 * self.d_inner, bias=self.bias, **lin)),
                ("conv1d", Conv1d(c_in=self.d_inner, c_out=self.d_inner, kernel=self.d_conv, groups=self.d_inner,
                                  padding=self.d_conv - 1, bias=self.conv_bias, init="torch", **lin)),
                ("x_proj", Linear(d_in=self.d_inner, d_out=self.dt_rank + 2 * self.d_state, bias=False, **lin)),
                ("dt_proj", Linear(d_in=self.dt_rank, d_out=self.d_inner, bias=True, **lin)),
                ("scan", SelectiveScan(d_inner=self.d_inner, d_state=self.d_state, trainable=self.trainable)),
                ("out_proj", Linear(d_in=self.d_inner, d_out=self.d_model, bias=self.bias, **lin)))

    def trace(self, in_shape: Shape):
        b, s, _ = in_shape
        kids = dict(self.children())
        return (("in_proj", kids["in_proj"], tuple(in_shape)), ("conv1d", kids["conv1d"], (b, self.d_inner, s)),
                ("x_proj", kids["x_proj"], (b, s, self.d_inner)), ("dt_proj", kids["dt_proj"], (b, s, self.dt_rank)),
                ("scan", kids["scan"], (b, s, self.d_inner)), ("out_proj", kids["out_proj"], (b, s, self.d_inner)))

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_rank(self, in_shape, 3, "(B, S, d_model)")
        expect_last(self, in_shape, self.d_model)
        return tuple(in_shape)

    def depth(self) -> int:
        return 5  # in_proj, conv, x_proj, dt_proj, out_proj on the longest path (the scan mixes no features)

    def build(self):
        from layerwise.build.mamba import MambaMixerModule

        return MambaMixerModule(self)


@register("mamba_block")
@dataclass(frozen=True, kw_only=True)
class MambaBlock(Block):
    mixer: Block
    norm_eps: float = 1e-5
    trainable: bool = True  # the norm

    @property
    def d_model(self) -> int:
        return self.mixer.d_model

    def children(self):
        return (("norm", make_norm("rmsnorm", self.d_model, self.norm_eps, trainable=self.trainable)),
                ("mixer", self.mixer))

    def trace(self, in_shape: Shape):
        return tuple((name, child, tuple(in_shape)) for name, child in self.children())

    def out_shape(self, in_shape: Shape) -> Shape:
        return self.mixer.out_shape(in_shape)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        b, s, d = in_shape
        return Flops(fwd_other=b * s * d)  # the residual add

    def build(self):
        from layerwise.build.mamba import MambaBlockModule

        return MambaBlockModule({name: child.build() for name, child in self.children()})
