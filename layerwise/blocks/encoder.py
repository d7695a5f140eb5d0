"""BERT-style encoder: token ids (B, S) -> pooled (B, d_model), or hidden states (B, S, d_model)
without the pooler.

  embed + pos + token_type -> embed_norm -> [drop] -> blocks (post-LN) -> [pooler: CLS, Linear, tanh]
                                                                     or [mlm_head -> tied decoder]
(Devlin et al. 2018; HF BertModel / RobertaModel; `mlm_head`: BertForMaskedLM, whose decoder reuses
embed.weight and adds its own bias (vocab_size), so the output is (B, S, vocab_size)). The token-type ids are taken as all zeros (one
segment), so `token_type` adds its row 0; its whole table is still a parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from layerwise.blocks.compose import Repeat, Sequential
from layerwise.blocks.transformer import make_norm
from layerwise.spec.base import Block, Shape, block_class, chain_trace, expect_last, expect_rank, register
from layerwise.spec.counts import FlopCtx, Flops, Params
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod


@register("token_type")
@dataclass(frozen=True, kw_only=True)
class TokenType(Block):
    """x + weight[0] (every token in segment 0); weight (type_vocab_size, d_model).

    FLOPs: the add, 1 per element forward; backward (if trainable) sums the rows' gradient, 1 per
    element."""

    type_vocab_size: int
    d_model: int
    trainable: bool = True

    def __post_init__(self):
        self._positive("type_vocab_size", "d_model")

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_rank(self, in_shape, 3, "(B, S, d_model)")
        expect_last(self, in_shape, self.d_model)
        return tuple(in_shape)

    def own_params(self) -> Params:
        n = self.type_vocab_size * self.d_model
        return Params(trainable=n) if self.trainable else Params(frozen=n)

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        n = prod(in_shape)
        return Flops(fwd_other=n, bwd_other=n if self.trainable else 0)

    def build(self):
        from layerwise.build.encoder import TokenTypeModule

        module = TokenTypeModule(self.type_vocab_size, self.d_model)
        module.requires_grad_(self.trainable)
        return module


def pooler(d_model: int, trainable: bool = True) -> Block:
    """CLS token -> Linear -> tanh (BERT pooler, HF ViTModel pooler); params pooler.dense.*."""
    return Sequential(layers=(block_class("select_token")(index=0),
                              block_class("linear")(d_in=d_model, d_out=d_model, trainable=trainable),
                              block_class("activation")(kind="tanh")),
                      names=("select", "dense", "act"))


@register("encoder")
@dataclass(frozen=True, kw_only=True)
class Encoder(Block):
    vocab_size: int
    d_model: int
    n_layers: int
    block: Block  # one (post-LN) transformer block, repeated n_layers times as `blocks`
    max_seq: int  # rows of the position table (RoBERTa: 514 = 512 + padding_idx + 1)
    type_vocab_size: int = 2  # 0: no token-type table (DistilBERT)
    pooler: bool = True  # BertModel's pooler; False: output the hidden states (B, S, D)
    mlm_head: bool = False  # BertForMaskedLM's head: dense, gelu, LayerNorm, tied decoder + bias
    norm_eps: float = 1e-12
    dropout: float = 0.0  # embedding dropout (hidden_dropout_prob)
    padding_idx: int | None = None
    trainable: bool = True  # the embeddings, embedding norm and pooler made here

    def __post_init__(self):
        self._positive("vocab_size", "d_model", "n_layers", "max_seq")
        self._non_negative("type_vocab_size")
        if self.pooler and self.mlm_head:
            raise SpecError("encoder: pooler and mlm_head are alternatives (BertModel vs BertForMaskedLM); set pooler=False")
        width = getattr(self.block, "d_model", self.d_model)
        if width != self.d_model:
            raise SpecError(f"encoder.block has d_model {width}, expected {self.d_model}")

    def children(self):
        t = self.trainable
        out = [("embed", block_class("embedding")(vocab_size=self.vocab_size, d_model=self.d_model,
                                                  padding_idx=self.padding_idx, trainable=t)),
               ("pos", block_class("learned_positions")(max_seq=self.max_seq, d_model=self.d_model, trainable=t))]
        if self.type_vocab_size:
            out.append(("token_type", TokenType(type_vocab_size=self.type_vocab_size, d_model=self.d_model, trainable=t)))
        out.append(("embed_norm", make_norm("layernorm", self.d_model, self.norm_eps, True, t)))
        if self.dropout > 0:
            out.append(("drop", block_class("dropout")(p=self.dropout)))
        out.append(("blocks", Repeat(block=self.block, n_layers=self.n_layers)))
        if self.pooler:
            out.append(("pooler", pooler(self.d_model, t)))
        if self.mlm_head:
            out.append(("mlm_head", Sequential(layers=(
                block_class("linear")(d_in=self.d_model, d_out=self.d_model, trainable=t),
                block_class("activation")(kind="gelu"), make_norm("layernorm", self.d_model, self.norm_eps, True, t)),
                names=("dense", "act", "norm"))))
        return tuple(out)

    def _decoder(self) -> Block:
        """The MLM decoder as a Linear: embed.weight^T (shared) plus the encoder's own bias."""
        return block_class("linear")(d_in=self.d_model, d_out=self.vocab_size, trainable=self.trainable)

    def own_params(self) -> Params:
        n = self.vocab_size if self.mlm_head else 0  # the decoder bias; its weight is embed.weight
        return Params(trainable=n) if self.trainable else Params(frozen=n)

    def out_shape(self, in_shape: Shape) -> Shape:
        shape = super().out_shape(in_shape)
        return (*shape[:-1], self.vocab_size) if self.mlm_head else shape

    def flops(self, in_shape: Shape, ctx: FlopCtx = FlopCtx()) -> Flops:
        total = super().flops(in_shape, ctx)  # includes own_flops: nothing for the bias alone
        if not self.mlm_head:
            return total
        grad = ctx.input_grad or any(child.params().trainable > 0 for _, child, _ in self.trace(in_shape))
        return total + self._decoder().flops((*in_shape, self.d_model), replace(ctx, input_grad=grad))

    def trace(self, in_shape: Shape):
        expect_rank(self, in_shape, 2, "token ids (B, S)")
        return chain_trace(self.children(), in_shape)

    def build(self):
        from layerwise.build.encoder import EncoderModule

        return EncoderModule({name: child.build() for name, child in self.children()},
                             mlm_vocab=self.vocab_size if self.mlm_head else 0, trainable=self.trainable)
