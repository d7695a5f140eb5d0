"""Token-level blocks: token embedding, image patch embedding, the CLS token, token selection."""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.blocks._sizes import normalize_lists, sizes
from layerwise.spec.base import Block, Shape, expect_last, expect_rank, register
from layerwise.spec.counts import FlopCtx, Flops, Params
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod


def _params(n: int, trainable: bool) -> Params:
    return Params(trainable=n) if trainable else Params(frozen=n)


@register("embedding")
@dataclass(frozen=True, kw_only=True)
class Embedding(Block):
    """(B, S) token ids -> (B, S, d_model), a row lookup in weight (vocab_size, d_model).

    FLOPs: the lookup is a gather (0). Backward, if trainable: each output-gradient row is added
    into its token's row of the weight gradient, 1 FLOP per output element. Ids have no gradient.
    """

    vocab_size: int
    d_model: int
    padding_idx: int | None = None  # this row's gradient stays zero (torch semantics; may be negative)
    # "normal": N(0, 0.02), the initializer_range of GPT-2, BERT and Llama; torch's N(0, 1) makes a
    # tied LM head emit logits with std ~sqrt(d_model) and a first loss far above ln(vocab_size).
    init: str = "normal"  # normal | torch
    trainable: bool = True

    def __post_init__(self):
        self._positive("vocab_size", "d_model")
        self._one_of("init", ("normal", "torch"))
        p = self.padding_idx
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or not -self.vocab_size <= p < self.vocab_size):
            raise SpecError(
                f"embedding.padding_idx must be an integer in [-{self.vocab_size}, {self.vocab_size}), got {p!r}"
            )

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_rank(self, in_shape, 2, "token ids (B, S)")
        return (*in_shape, self.d_model)

    def own_params(self) -> Params:
        return _params(self.vocab_size * self.d_model, self.trainable)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        return Flops(bwd_other=prod(in_shape) * self.d_model if self.trainable else 0)

    def build(self):
        import torch
        from torch import nn

        module = nn.Embedding(self.vocab_size, self.d_model, padding_idx=self.padding_idx)
        if self.init == "normal":
            nn.init.normal_(module.weight, std=0.02)
            if self.padding_idx is not None:
                with torch.no_grad():
                    module.weight[self.padding_idx].zero_()
        module.requires_grad_(self.trainable)
        return module


@register("patch_embedding")
@dataclass(frozen=True, kw_only=True)
class PatchEmbedding(Block):
    """(B, c_in, H, W) -> (B, N, d_model): non-overlapping patches, each projected to d_model
    (ViT, Dosovitskiy et al. 2020). N = (H / ph) * (W / pw).

    FLOPs are a conv (or linear) with K = ph*pw taps and O = N positions, groups 1:
    2 * B * N * d_model * c_in * ph * pw forward, the same for grad_input (if the image needs
    grad) and for grad_weight (if trainable); the bias add is B * N * d_model, not a matmul.
    """

    image_size: int | tuple[int, int]  # the design size (H, W); positions are sized from it
    patch: int | tuple[int, int]
    c_in: int
    d_model: int
    kind: str = "conv"  # conv: Conv2d(kernel = stride = patch); linear: cut into patches, then Linear
    bias: bool = True
    trainable: bool = True

    def __post_init__(self):
        normalize_lists(self, "image_size", "patch")
        self._positive("c_in", "d_model")
        self._one_of("kind", ("conv", "linear"))
        image, patch = sizes(self, "image_size", 2), sizes(self, "patch", 2)
        if image[0] % patch[0] or image[1] % patch[1]:
            raise SpecError(
                f"patch_embedding.image_size {image[0]}x{image[1]} is not divisible by the patch {patch[0]}x{patch[1]}"
            )

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per column and per row at the design image size."""
        (h, w), (ph, pw) = sizes(self, "image_size", 2), sizes(self, "patch", 2)
        return h // ph, w // pw

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_rank(self, in_shape, 4, "images (B, C, H, W)")
        if in_shape[1] != self.c_in:
            raise SpecError(f"expected dim 1 (channels) {self.c_in}, got {in_shape[1]} (input shape {tuple(in_shape)})")
        (h, w), (ph, pw) = in_shape[2:], sizes(self, "patch", 2)
        if h % ph or w % pw:
            raise SpecError(f"patch_embedding: image {h}x{w} is not divisible by the patch {ph}x{pw} (input shape {tuple(in_shape)})")
        return (in_shape[0], (h // ph) * (w // pw), self.d_model)

    def own_params(self) -> Params:
        ph, pw = sizes(self, "patch", 2)
        return _params(self.d_model * self.c_in * ph * pw + (self.d_model if self.bias else 0), self.trainable)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        batch, n, d = self.out_shape(in_shape)
        ph, pw = sizes(self, "patch", 2)
        fwd = 2 * batch * n * d * self.c_in * ph * pw
        bwd = (fwd if ctx.input_grad else 0) + (fwd if self.trainable else 0)
        bias = batch * n * d if self.bias else 0
        return Flops(fwd_matmul=fwd, fwd_other=bias, bwd_matmul=bwd, bwd_other=bias if self.trainable else 0)

    def build(self):
        from layerwise.build.layers import PatchEmbedding as Module

        module = Module(self.c_in, self.d_model, sizes(self, "patch", 2), self.kind, self.bias)
        module.requires_grad_(self.trainable)
        return module


@register("cls_token")
@dataclass(frozen=True, kw_only=True)
class ClsToken(Block):
    """Prepends one learned token: (B, S, D) -> (B, S+1, D); weight (1, 1, d_model).

    FLOPs: the concat is a copy (0). Backward, if trainable: the weight's gradient sums the
    batch, 1 FLOP per (batch, feature).
    """

    d_model: int
    trainable: bool = True

    def __post_init__(self):
        self._positive("d_model")

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_rank(self, in_shape, 3, "(B, S, D)")
        expect_last(self, in_shape, self.d_model)
        return (in_shape[0], in_shape[1] + 1, self.d_model)

    def own_params(self) -> Params:
        return _params(self.d_model, self.trainable)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        return Flops(bwd_other=in_shape[0] * self.d_model if self.trainable else 0)

    def build(self):
        from layerwise.build.layers import ClsToken as Module

        module = Module(self.d_model)
        module.requires_grad_(self.trainable)
        return module


@register("select_token")
@dataclass(frozen=True, kw_only=True)
class SelectToken(Block):
    """(B, S, D) -> (B, D): the token at `index` (ViT's CLS at 0; negative counts from the end),
    or "mean" over tokens (mean pooling).

    FLOPs: an index is a view (0). Mean: 1 per input element forward (sum, then one divide per
    output, which we fold in), 1 per input element backward (g / S spread), if the input needs grad.
    """

    index: int | str = 0

    def __post_init__(self):
        i = self.index
        if isinstance(i, str):
            self._one_of("index", ("mean",))
        elif isinstance(i, bool) or not isinstance(i, int):
            raise SpecError(f"select_token.index must be an integer or 'mean', got {i!r}")

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_rank(self, in_shape, 3, "(B, S, D)")
        seq = in_shape[1]
        if self.index != "mean" and not -seq <= self.index < seq:
            raise SpecError(f"select_token.index {self.index} is out of range for {seq} tokens (input shape {tuple(in_shape)})")
        return (in_shape[0], in_shape[2])

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        if self.index != "mean":
            return Flops()
        n = prod(in_shape)
        return Flops(fwd_other=n, bwd_other=n if ctx.input_grad else 0)

    def build(self):
        from layerwise.build.layers import SelectToken as Module

        return Module(self.index)
