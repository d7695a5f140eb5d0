"""Vision Transformer (Dosovitskiy et al. 2020): images (B, C, H, W) -> logits (B, n_classes).

  patch_embed (B, N, D) -> cls (B, N+1, D) -> pos -> [drop] -> blocks (pre-LN) -> final_norm
  -> select (CLS token, (B, D)) or pooler (CLS, Linear, tanh: HF ViTModel) -> [head]
With n_classes = 0 and no pooler the output is the hidden states (B, N+1, D) (a backbone).
"""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.blocks.compose import Repeat
from layerwise.blocks.encoder import pooler
from layerwise.blocks.transformer import make_norm
from layerwise.spec.base import Block, Shape, block_class, chain_trace, expect_rank, register
from layerwise.spec.errors import SpecError


@register("vit")
@dataclass(frozen=True, kw_only=True)
class ViT(Block):
    image_size: int
    patch: int
    c_in: int
    d_model: int
    n_layers: int
    block: Block  # one pre-LN transformer block, repeated n_layers times as `blocks`
    n_classes: int  # 0: no head
    patch_kind: str = "conv"  # conv | linear (same parameters)
    pooler: bool = False  # HF ViTModel's pooler (dense + tanh on the CLS token)
    norm_eps: float = 1e-6  # torchvision 1e-6, HF 1e-12
    dropout: float = 0.0  # after the position add
    patch_bias: bool = True  # the patch projection's bias (CLIP's has none)
    pre_norm: bool = False  # a LayerNorm before the blocks (CLIP's pre_layrnorm)
    cls_only_norm: bool = False  # CLIP: the final norm sees only the CLS token (its pooled output, (B, D))
    trainable: bool = True  # the patch embedding, CLS, positions, final norm, pooler and head

    def __post_init__(self):
        self._positive("image_size", "patch", "c_in", "d_model", "n_layers")
        self._non_negative("n_classes")
        self._one_of("patch_kind", ("conv", "linear"))
        if self.cls_only_norm and self.pooler:
            raise SpecError("vit.cls_only_norm and vit.pooler both pool the CLS token; choose one")
        if self.image_size % self.patch:
            raise SpecError(f"vit.image_size {self.image_size} is not divisible by the patch {self.patch}")
        width = getattr(self.block, "d_model", self.d_model)
        if width != self.d_model:
            raise SpecError(f"vit.block has d_model {width}, expected {self.d_model}")

    @property
    def n_tokens(self) -> int:
        return (self.image_size // self.patch) ** 2 + 1  # patches + CLS

    def children(self):
        t, d = self.trainable, self.d_model
        out = [("patch_embed", block_class("patch_embedding")(image_size=self.image_size, patch=self.patch, c_in=self.c_in,
                                                              d_model=d, kind=self.patch_kind, bias=self.patch_bias,
                                                              trainable=t)),
               ("cls", block_class("cls_token")(d_model=d, trainable=t)),
               ("pos", block_class("learned_positions")(max_seq=self.n_tokens, d_model=d, trainable=t))]
        if self.dropout > 0:
            out.append(("drop", block_class("dropout")(p=self.dropout)))
        if self.pre_norm:
            out.append(("pre_norm", make_norm("layernorm", d, self.norm_eps, True, t)))
        out.append(("blocks", Repeat(block=self.block, n_layers=self.n_layers)))
        if self.cls_only_norm:
            out.append(("select", block_class("select_token")(index=0)))
        out.append(("final_norm", make_norm("layernorm", d, self.norm_eps, True, t)))
        if self.pooler:
            out.append(("pooler", pooler(d, t)))
        elif self.n_classes and not self.cls_only_norm:
            out.append(("select", block_class("select_token")(index=0)))
        if self.n_classes:
            out.append(("head", block_class("linear")(d_in=d, d_out=self.n_classes, trainable=t)))
        return tuple(out)

    def trace(self, in_shape: Shape):
        expect_rank(self, in_shape, 4, "images (B, C, H, W)")
        if tuple(in_shape[2:]) != (self.image_size, self.image_size):
            raise SpecError(f"vit: expected {self.image_size}x{self.image_size} images (the position table's size), "
                            f"got {in_shape[2]}x{in_shape[3]}")
        return chain_trace(self.children(), in_shape)

    def build(self):
        from layerwise.build.encoder import EncoderModule  # runs its children in order

        return EncoderModule({name: child.build() for name, child in self.children()})
