"""Multi-head attention: one spec for MHA, GQA and MQA (n_kv_heads = n_heads, a divisor, 1).

Shapes: x (B, S, d_model); q (B, H, S, d_head); k, v (B, Hkv, Sk, d_head), Sk = S for self
attention, context_len for cross attention (context (B, context_len, context_dim)).
Children q_proj/k_proj/v_proj/o_proj are injected specs (Linear, or LoRA after apply_lora), so
freezing or adapting a projection replaces a child; left out, they are derived from the scalars.

FLOPs (1 MAC = 2 FLOPs). Matmul, per call, with unit = 2*B*H*S*Sk*d_head:
  forward   scores q@k^T (unit) + probabilities@v (unit): the full S x Sk, what kernels compute;
            `causal_skippable` = the part of both spent on masked (causal / sliding window) entries
  backward  eager (explicit bmms): grad_q, grad_k, grad_probs, grad_v -- each only when needed
            sdpa: 5 units whenever anything needs grad (PyTorch's fused backward recomputes scores;
            torch.utils.flop_counter.sdpa_backward_flop_count); on CPU with attention dropout,
            sdpa runs its math path, counted as eager (FlopCtx.device)
  GQA/MQA repeat k and v to H heads before the products, so units count H heads.
Other, per score element (B*H*S*Sk): scale 1, mask 1 (if causal or windowed), bias 1 (score_bias),
softmax 5, dropout 2 (if dropout > 0), soft-capping 3 (divide, tanh, multiply: Gemma 2); backward (if
q or k needs grad): softmax 4, scale 1, dropout 2, soft-capping 4 (the two scalings, tanh's 1 - y^2
times the gradient). Soft-capping has no sdpa kernel: the built module computes the scores
explicitly, so `sdpa` runs (and is counted as) eager there.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from layerwise.spec.base import Block, Shape, block_class, expect_last, expect_rank, register
from layerwise.spec.counts import FlopCtx, Flops
from layerwise.spec.errors import SpecError

from layerwise.blocks.linear import Linear
from layerwise.blocks.rope import Rope

QK_NORMS = ("none", "rmsnorm", "layernorm")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


@register("attention")
@dataclass(frozen=True, kw_only=True)
class Attention(Block):
    d_model: int
    n_heads: int
    n_kv_heads: int = 0  # 0: = n_heads (MHA); 1: MQA; a divisor of n_heads: GQA
    d_head: int = 0  # 0: d_model // n_heads
    causal: bool = False  # decoder self-attention: query i sees keys j <= i
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: str = "none"  # none | rmsnorm | layernorm, over d_head (Qwen3, OLMo2, ViT-22B)
    rope: Rope | None = None  # rotary positions on q and k (self attention only)
    dropout: float = 0.0  # on the attention probabilities
    sliding_window: int = 0  # > 0: each query sees at most this many keys (Mistral: i - j < w)
    context_dim: int = 0  # > 0: cross attention; keys/values come from a context of this width
    context_len: int = 0  # cross attention: the context's length (for shapes and FLOPs)
    score_bias: bool = False  # scores + a (1, H, S, Sk) bias given per call (T5's relative positions)
    scale: float = 0.0  # the scores' factor; 0: d_head ** -0.5 (Gemma 2/3: query_pre_attn_scalar ** -0.5)
    softcap: float = 0.0  # > 0: scores -> softcap * tanh(scores / softcap) before the mask (Gemma 2)
    # children, derived from the fields above when left out
    q_proj: Block | None = None
    k_proj: Block | None = None
    v_proj: Block | None = None
    o_proj: Block | None = None
    q_norm: Block | None = None
    k_norm: Block | None = None

    def __post_init__(self):
        self._positive("d_model", "n_heads")
        self._non_negative("n_kv_heads", "d_head", "sliding_window", "context_dim", "context_len")
        if not self.d_head and self.d_model % self.n_heads:
            raise SpecError(f"attention.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}), "
                            f"or give d_head explicitly")
        if self.n_heads % self.kv_heads:
            raise SpecError(f"attention.n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})")
        self._one_of("qk_norm", QK_NORMS)
        for name in ("scale", "softcap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise SpecError(f"attention.{name} must be a finite number >= 0 (0: off), got {value!r}")
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise SpecError(f"attention.dropout must be in [0, 1), got {p!r}")
        if self.context_dim and not self.context_len:
            raise SpecError("attention.context_len must be > 0 for cross attention (context_dim > 0)")
        if self.context_len and not self.context_dim:
            raise SpecError("attention.context_len is set but context_dim is 0; set context_dim for cross attention")
        if self.context_dim and self.score_bias:
            raise SpecError("attention: score_bias is for self attention (T5's relative positions), not cross attention")
        if self.context_dim and (self.causal or self.rope is not None or self.sliding_window):
            raise SpecError("attention: cross attention (context_dim > 0) cannot be causal, windowed or use rope")
        if self.rope is not None:
            if not isinstance(self.rope, Rope):
                raise SpecError(f"attention.rope must be a rope block, got {type(self.rope).__name__}")
            if self.rope.d_head != self.head_dim:
                raise SpecError(f"attention.rope.d_head ({self.rope.d_head}) must equal the head width {self.head_dim}")
        self._derive_children()

    # ---- derived sizes -----------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_head or self.d_model // self.n_heads

    @property
    def score_scale(self) -> float:
        return self.scale or self.head_dim ** -0.5

    @property
    def kv_dim(self) -> int:
        """Width keys/values are projected from: d_model, or context_dim for cross attention."""
        return self.context_dim or self.d_model

    def _expected(self) -> dict[str, Linear]:
        q, kv = self.n_heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "q_proj": Linear(d_in=self.d_model, d_out=q, bias=self.qkv_bias),
            "k_proj": Linear(d_in=self.kv_dim, d_out=kv, bias=self.qkv_bias),
            "v_proj": Linear(d_in=self.kv_dim, d_out=kv, bias=self.qkv_bias),
            "o_proj": Linear(d_in=q, d_out=self.d_model, bias=self.o_bias),
        }

    def _derive_children(self) -> None:
        """Fill left-out children; check given ones against the scalars (they carry only what the
        scalars do not: trainable, init, a LoRA wrapper)."""
        for name, want in self._expected().items():
            got = getattr(self, name)
            if got is None:
                object.__setattr__(self, name, want)
                continue
            dims = tuple(getattr(got, a, None) for a in ("d_in", "d_out", "bias"))
            if dims != (want.d_in, want.d_out, want.bias):
                raise SpecError(f"attention.{name} must be a linear (or lora) with d_in={want.d_in}, "
                                f"d_out={want.d_out}, bias={want.bias} (from the attention's fields), got "
                                f"{got.type_name} with d_in, d_out, bias = {dims}")
        for name in ("q_norm", "k_norm"):
            got = getattr(self, name)
            if self.qk_norm == "none":
                if got is not None:
                    raise SpecError(f"attention.{name} is given but qk_norm is 'none'")
            elif got is None:
                object.__setattr__(self, name, block_class(self.qk_norm)(d_model=self.head_dim))
            elif got.type_name != self.qk_norm or getattr(got, "d_model", None) != self.head_dim:
                raise SpecError(f"attention.{name} must be a {self.qk_norm} over d_head={self.head_dim}, "
                                f"got {got.type_name} with d_model={getattr(got, 'd_model', None)}")

    # ---- shapes ------------------------------------------------------------------------------
    def _kv_shape(self, in_shape: Shape) -> Shape:
        return (in_shape[0], self.context_len, self.context_dim) if self.context_dim else tuple(in_shape)

    def trace(self, in_shape: Shape):
        b, s = in_shape[0], in_shape[1]
        kv = self._kv_shape(in_shape)
        out = [("q_proj", self.q_proj, tuple(in_shape)), ("k_proj", self.k_proj, kv), ("v_proj", self.v_proj, kv)]
        if self.q_norm is not None:
            out += [("q_norm", self.q_norm, (b, s, self.n_heads, self.head_dim)),
                    ("k_norm", self.k_norm, (b, kv[1], self.kv_heads, self.head_dim))]
        out.append(("o_proj", self.o_proj, (b, s, self.n_heads * self.head_dim)))
        return tuple(out)

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_rank(self, in_shape, 3, "(B, S, d_model)")
        expect_last(self, in_shape, self.d_model)
        return tuple(in_shape)

    def depth(self) -> int:
        qkv = max(self.q_proj.depth(), self.k_proj.depth(), self.v_proj.depth())
        norm = self.q_norm.depth() if self.q_norm is not None else 0
        return qkv + norm + self.o_proj.depth()

    # ---- FLOPs -------------------------------------------------------------------------------
    def flops(self, in_shape: Shape, ctx: FlopCtx = FlopCtx()) -> Flops:
        """Children with the input-grad each one really has (q/k/v are parallel, not a chain).
        A cross-attention context needs grad iff the input does."""
        self.out_shape(in_shape)
        b, s = in_shape[0], in_shape[1]
        kv = self._kv_shape(in_shape)
        total = self.q_proj.flops(in_shape, ctx) + self.k_proj.flops(kv, ctx) + self.v_proj.flops(kv, ctx)
        grad = {n: ctx.input_grad or getattr(self, n).params().trainable > 0 for n in ("q_proj", "k_proj", "v_proj")}
        q_grad, k_grad, v_grad = grad["q_proj"], grad["k_proj"], grad["v_proj"]
        q_shape, k_shape = (b, self.n_heads, s, self.head_dim), (b, self.kv_heads, kv[1], self.head_dim)
        if self.q_norm is not None:
            total = total + self.q_norm.flops(q_shape, replace(ctx, input_grad=q_grad))
            total = total + self.k_norm.flops(k_shape, replace(ctx, input_grad=k_grad))
            q_grad = q_grad or self.q_norm.params().trainable > 0
            k_grad = k_grad or self.k_norm.params().trainable > 0
        if self.rope is not None:
            total = total + Flops(fwd_other=self.rope.table_flops(s))
            total = total + self.rope.own_flops(q_shape, replace(ctx, input_grad=q_grad))
            total = total + self.rope.own_flops(k_shape, replace(ctx, input_grad=k_grad))
        total = total + self.core_flops(b, s, kv[1], q_grad, k_grad, v_grad, self._impl(ctx))
        return total + self.o_proj.flops((b, s, self.n_heads * self.head_dim),
                                         replace(ctx, input_grad=q_grad or k_grad or v_grad))

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        """The attention core alone (scores, softmax, probabilities @ v), all inputs needing grad
        as ctx says: what selective checkpointing recomputes. `flops` adds the projections."""
        kv = self._kv_shape(in_shape)
        g = ctx.input_grad
        return self.core_flops(in_shape[0], in_shape[1], kv[1], g, g, g, self._impl(ctx))

    def _impl(self, ctx: FlopCtx) -> str:
        """The kernel PyTorch really runs: on CPU, sdpa with attention dropout (training) has no fused
        kernel and decomposes into the eager matmuls, whose backward is 4 products, not 5."""
        if ctx.attention == "sdpa" and (self.dropout > 0 or self.score_bias) and ctx.device == "cpu":
            return "eager"  # a score bias that needs grad sends CPU sdpa to the math path too
        return "eager" if self.softcap else ctx.attention

    def core_flops(self, b: int, s: int, sk: int, q_grad: bool, k_grad: bool, v_grad: bool, impl: str) -> Flops:
        """Scores, softmax and probabilities @ v for H query heads (see the module docstring)."""
        if impl not in ("eager", "sdpa"):
            raise SpecError(f"attention implementation must be 'eager' or 'sdpa', got {impl!r}")
        unit = 2 * b * self.n_heads * s * sk * self.head_dim
        skippable = 2 * 2 * b * self.n_heads * self.head_dim * (s * sk - self.visible(s, sk))
        if impl == "sdpa":
            bwd_mm = 5 * unit if (q_grad or k_grad or v_grad) else 0
        else:  # grad_q, grad_k, grad_probs (needed for either), grad_v
            bwd_mm = unit * (int(q_grad) + int(k_grad) + int(q_grad or k_grad) + int(v_grad))
        n = b * self.n_heads * s * sk
        masked = self.causal or self.sliding_window > 0
        drop = self.dropout > 0
        cap = self.softcap > 0
        fwd_other = n * (1 + int(masked) + int(self.score_bias) + 5 + 2 * int(drop) + 3 * int(cap))
        bwd_other = n * (4 + 1 + 2 * int(drop) + 4 * int(cap)) if (q_grad or k_grad) else 0
        return Flops(fwd_matmul=2 * unit, fwd_other=fwd_other, bwd_matmul=bwd_mm, bwd_other=bwd_other,
                     causal_skippable=skippable)

    def visible(self, s: int, sk: int) -> int:
        """(query, key) pairs the mask lets through."""
        w = self.sliding_window
        if self.causal:
            return _causal_visible(s, w)
        if w:
            return 2 * _causal_visible(s, w) - s  # |i - j| < w: both triangles, diagonal once
        return s * sk

    # ---- build -------------------------------------------------------------------------------
    def build(self):
        from layerwise.build.attention import AttentionModule

        return AttentionModule(self)


def _causal_visible(s: int, w: int) -> int:
    """Pairs j <= i (and i - j < w if w > 0) for i, j in [0, s): sum_i min(i + 1, w)."""
    if not w or w >= s:
        return s * (s + 1) // 2
    return w * (w + 1) // 2 + (s - w) * w
