"""Multi-head latent attention (MLA; DeepSeek-V2, arXiv 2405.04434 sec. 2.1; DeepSeek-V3).

Keys and values come from one low-rank latent per token, and positions from a small decoupled
rotary key shared by all heads (transformers' DeepseekV2Attention / DeepseekV3Attention):
  q      = q_proj(x)                                   (q_rank 0)
         = q_b_proj(q_a_layernorm(q_a_proj(x)))        (q_rank > 0: d_model -> q_rank -> H*(d_nope+d_rope))
  c, kr  = split(kv_a_proj_with_mqa(x), [kv_rank, d_rope])   c: the latent, kr: the shared rotary key
  k_nope, v = split(kv_b_proj(kv_a_layernorm(c)), [d_nope, d_v]) per head
  q = [q_nope, rope(q_rope)], k = [k_nope, rope(kr) for every head]; softmax(q k^T * scale) v; o_proj
Shapes: x (B, S, d_model); q, k (B, H, S, d_nope + d_rope); v (B, H, S, d_v).
What a decode caches per token and layer is the normed latent c and the rotated kr: kv_rank +
d_rope values (cost/kv_cache.py), not 2 * H * d_head.

FLOPs (1 MAC = 2): the projections are children. Core, per call, with uq = 2*B*H*S*S*dq (scores,
dq = d_nope + d_rope) and uv = 2*B*H*S*S*d_v (probabilities @ v): forward uq + uv; backward eager
grad_q + grad_k (uq each), grad_probs + grad_v (uv each); sdpa (torch.utils.flop_counter.
sdpa_backward_flop_count): 3 uq + 2 uv. Other: as layerwise.blocks.attention (scale, mask,
softmax), the rotary tables and rotations, the concatenations 0 (copies).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from layerwise.blocks.linear import Linear
from layerwise.blocks.norm import RMSNorm
from layerwise.blocks.rope import Rope
from layerwise.spec.base import Block, Shape, expect_last, expect_rank, register
from layerwise.spec.counts import FlopCtx, Flops
from layerwise.spec.errors import SpecError


@register("mla")
@dataclass(frozen=True, kw_only=True)
class MLA(Block):
    sliding_window: ClassVar[int] = 0  # never windowed (read by the attention helpers it shares)
    d_model: int
    n_heads: int
    kv_rank: int  # the latent's width (HF kv_lora_rank): what is cached with d_rope
    d_nope: int  # per-head query/key width without positions (HF qk_nope_head_dim)
    d_rope: int  # per-head rotary query width = the shared rotary key's width (HF qk_rope_head_dim)
    d_v: int  # per-head value width (HF v_head_dim)
    q_rank: int = 0  # > 0: queries through a low-rank bottleneck (HF q_lora_rank); 0: one q_proj
    qkv_bias: bool = False  # bias on q_a_proj and kv_a_proj_with_mqa (HF attention_bias)
    o_bias: bool = False  # bias on o_proj (HF attention_bias too)
    norm_eps: float = 1e-6  # the latents' RMSNorms (transformers uses 1e-6 whatever rms_norm_eps is)
    scale: float = 0.0  # softmax scale; 0: (d_nope + d_rope) ** -0.5 (DeepSeek-V3's YaRN mscale changes it)
    rope: Rope | None = None  # over d_rope; left out: plain RoPE with base 10000
    dropout: float = 0.0  # on the attention probabilities
    causal: bool = True  # decoder self-attention (MLA exists only there)
    # children, derived from the fields above when left out
    q_proj: Block | None = None
    q_a_proj: Block | None = None
    q_a_layernorm: Block | None = None
    q_b_proj: Block | None = None
    kv_a_proj_with_mqa: Block | None = None
    kv_a_layernorm: Block | None = None
    kv_b_proj: Block | None = None
    o_proj: Block | None = None

    def __post_init__(self):
        self._positive("d_model", "n_heads", "kv_rank", "d_nope", "d_rope", "d_v")
        self._non_negative("q_rank")
        if not self.causal:
            raise SpecError("mla.causal must be true (latent attention is a decoder's self-attention)")
        if self.d_rope % 2:
            raise SpecError(f"mla.d_rope must be even (rotated in pairs), got {self.d_rope}")
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise SpecError(f"mla.dropout must be in [0, 1), got {p!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or self.scale < 0:
            raise SpecError(f"mla.scale must be a number >= 0 (0: (d_nope + d_rope) ** -0.5), got {self.scale!r}")
        if self.rope is None:
            object.__setattr__(self, "rope", Rope(d_head=self.d_rope))
        elif not isinstance(self.rope, Rope) or self.rope.d_head != self.d_rope or self.rope.rotary_dim:
            raise SpecError(f"mla.rope must be a rope block over the whole d_rope={self.d_rope}")
        self._derive_children()

    # ---- derived sizes and children ------------------------------------------------------------
    @property
    def d_qk(self) -> int:
        return self.d_nope + self.d_rope

    @property
    def softmax_scale(self) -> float:
        return float(self.scale) or self.d_qk ** -0.5

    @property
    def cache_width(self) -> int:
        """Values cached per token per layer: the latent and the shared rotary key."""
        return self.kv_rank + self.d_rope

    def _expected(self) -> dict[str, Block | None]:
        h, q = self.n_heads, self.n_heads * self.d_qk
        low = self.q_rank > 0
        return {
            "q_proj": None if low else Linear(d_in=self.d_model, d_out=q, bias=False),
            "q_a_proj": Linear(d_in=self.d_model, d_out=self.q_rank, bias=self.qkv_bias) if low else None,
            "q_a_layernorm": RMSNorm(d_model=self.q_rank, eps=self.norm_eps) if low else None,
            "q_b_proj": Linear(d_in=self.q_rank, d_out=q, bias=False) if low else None,
            "kv_a_proj_with_mqa": Linear(d_in=self.d_model, d_out=self.cache_width, bias=self.qkv_bias),
            "kv_a_layernorm": RMSNorm(d_model=self.kv_rank, eps=self.norm_eps),
            "kv_b_proj": Linear(d_in=self.kv_rank, d_out=h * (self.d_nope + self.d_v), bias=False),
            "o_proj": Linear(d_in=h * self.d_v, d_out=self.d_model, bias=self.o_bias),
        }

    def _derive_children(self) -> None:
        """Fill left-out children; check given ones against the scalars (as attention does)."""
        for name, want in self._expected().items():
            got = getattr(self, name)
            if want is None:
                if got is not None:
                    raise SpecError(f"mla.{name} is given but q_rank is {self.q_rank}")
                continue
            if got is None:
                object.__setattr__(self, name, want)
                continue
            keys = ("d_in", "d_out", "bias") if isinstance(want, Linear) else ("d_model",)
            have = tuple(getattr(got, a, None) for a in keys)
            if have != tuple(getattr(want, a) for a in keys):
                raise SpecError(f"mla.{name} must have {dict(zip(keys, (getattr(want, a) for a in keys)))} "
                                f"(from the mla's fields), got {got.type_name} with {dict(zip(keys, have))}")

    def q_path(self) -> tuple[str, ...]:
        return ("q_a_proj", "q_a_layernorm", "q_b_proj") if self.q_rank else ("q_proj",)

    # ---- shapes ------------------------------------------------------------------------------
    def trace(self, in_shape: Shape):
        b, s = in_shape[0], in_shape[1]
        x = tuple(in_shape)
        shapes = {"q_proj": x, "q_a_proj": x, "q_a_layernorm": (b, s, self.q_rank), "q_b_proj": (b, s, self.q_rank),
                  "kv_a_proj_with_mqa": x, "kv_a_layernorm": (b, s, self.kv_rank), "kv_b_proj": (b, s, self.kv_rank),
                  "o_proj": (b, s, self.n_heads * self.d_v)}
        names = (*self.q_path(), "kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj", "o_proj")
        return tuple((n, getattr(self, n), shapes[n]) for n in names)

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_rank(self, in_shape, 3, "(B, S, d_model)")
        expect_last(self, in_shape, self.d_model)
        return tuple(in_shape)

    def depth(self) -> int:
        q = sum(getattr(self, n).depth() for n in self.q_path())
        kv = self.kv_a_proj_with_mqa.depth() + self.kv_b_proj.depth()
        return max(q, kv) + self.o_proj.depth()

    # ---- FLOPs -------------------------------------------------------------------------------
    def _chain(self, names, shapes: dict, ctx: FlopCtx) -> tuple[Flops, bool]:
        """FLOPs of children run one after another, and whether the last output needs grad."""
        total, grad = Flops(), ctx.input_grad
        for n in names:
            child = getattr(self, n)
            total = total + child.flops(shapes[n], replace(ctx, input_grad=grad))
            grad = grad or child.params().trainable > 0
        return total, grad

    def flops(self, in_shape: Shape, ctx: FlopCtx = FlopCtx()) -> Flops:
        self.out_shape(in_shape)
        b, s = in_shape[0], in_shape[1]
        shapes = {n: shape for n, _, shape in self.trace(in_shape)}
        q_flops, q_grad = self._chain(self.q_path(), shapes, ctx)
        a_flops, a_grad = self._chain(("kv_a_proj_with_mqa",), shapes, ctx)
        kv_flops, kv_grad = self._chain(("kv_a_layernorm", "kv_b_proj"), shapes, replace(ctx, input_grad=a_grad))
        total = q_flops + a_flops + kv_flops + Flops(fwd_other=self.rope.table_flops(s))
        total = total + self.rope.own_flops((b, self.n_heads, s, self.d_rope), replace(ctx, input_grad=q_grad))
        total = total + self.rope.own_flops((b, 1, s, self.d_rope), replace(ctx, input_grad=a_grad))
        total = total + self.core_flops(b, s, q_grad, a_grad or kv_grad, kv_grad, self._impl(ctx))
        return total + self.o_proj.flops(shapes["o_proj"], replace(ctx, input_grad=q_grad or a_grad or kv_grad))

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        """The attention core alone, every input needing grad as ctx says (what selective
        checkpointing recomputes); `flops` adds the projections."""
        g = ctx.input_grad
        return self.core_flops(in_shape[0], in_shape[1], g, g, g, self._impl(ctx))

    def _impl(self, ctx: FlopCtx) -> str:
        """sdpa runs its math path, the eager products, when d_v != d_nope + d_rope (PyTorch's fused
        kernels take one head width for q, k and v; measured on CPU) and on CPU with dropout."""
        if ctx.attention == "sdpa" and (self.d_v != self.d_qk or (self.dropout > 0 and ctx.device == "cpu")):
            return "eager"
        return ctx.attention

    def core_flops(self, b: int, s: int, q_grad: bool, k_grad: bool, v_grad: bool, impl: str,
                   sk: int | None = None) -> Flops:
        """`sk`: keys (a decode step: s = 1 query over sk cached keys); default s."""
        if impl not in ("eager", "sdpa"):
            raise SpecError(f"attention implementation must be 'eager' or 'sdpa', got {impl!r}")
        sk = s if sk is None else sk
        pairs = b * self.n_heads * s * sk  # score elements
        uq, uv = 2 * pairs * self.d_qk, 2 * pairs * self.d_v
        hidden = 2 * b * self.n_heads * (self.d_qk + self.d_v) * (s * sk - self.visible(s, sk))  # masked part
        if impl == "sdpa":
            bwd_mm = 3 * uq + 2 * uv if (q_grad or k_grad or v_grad) else 0
        else:  # grad_q, grad_k, grad_probs (needed for either), grad_v
            bwd_mm = uq * (int(q_grad) + int(k_grad)) + uv * (int(q_grad or k_grad) + int(v_grad))
        drop = self.dropout > 0
        fwd_other = pairs * (1 + 1 + 5 + 2 * int(drop))  # scale, mask, softmax, dropout
        bwd_other = pairs * (4 + 1 + 2 * int(drop)) if (q_grad or k_grad) else 0
        return Flops(fwd_matmul=uq + uv, fwd_other=fwd_other, bwd_matmul=bwd_mm, bwd_other=bwd_other,
                     causal_skippable=hidden)

    def visible(self, s: int, sk: int) -> int:
        """(query, key) pairs the causal mask lets through; the s queries are the last of sk keys."""
        return s * (s + 1) // 2 + s * (sk - s)

    def decode_extra(self, b: int, n: int, prompt: int) -> Flops:
        """What n one-token decode steps after `prompt` cached tokens add to n one-token forwards:
        step i attends over L_i = prompt + i + 1 keys and decompresses all of them (kv_b_proj on
        L_i latents: the built module, like transformers', caches latents, not keys and values)."""
        keys = n * prompt + n * (n + 1) // 2  # sum of L_i
        core = self.core_flops(b, 1, False, False, False, "sdpa", sk=keys)
        own = self.core_flops(b, 1, False, False, False, "sdpa", sk=1)
        kv_b = self.kv_b_proj.flops((b, keys - n, self.kv_rank), FlopCtx(input_grad=False))
        return Flops(fwd_matmul=core.fwd_matmul - n * own.fwd_matmul + kv_b.fwd_matmul,
                     fwd_other=core.fwd_other - n * own.fwd_other + kv_b.fwd_other)

    # ---- build -------------------------------------------------------------------------------
    def build(self):
        from layerwise.build.mla import MLAModule

        return MLAModule(self)
