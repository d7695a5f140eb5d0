"""Encoder-decoder Transformer (Vaswani et al. 2017; torch.nn.Transformer; T5, BART).

Input: token ids (B, S, 2): [..., 0] the source, [..., 1] the decoder's input (the target shifted
right behind a start token); both S long. Output: logits (B, S, vocab_size) for the target.

  src -> embed -> [pos] -> [embed_norm] -> [drop] -> encoder (n_layers transformer blocks, bidirectional)
      -> [enc_norm] = memory (B, S, d_model)
  tgt -> embed (shared) or tgt_embed -> [pos] -> [embed_norm] -> [drop] -> decoder (n_dec_layers decoder blocks:
      causal self-attention, cross-attention over memory, FFN) -> [dec_norm] -> lm_head | tied
The memory is read by every decoder layer's cross-attention k/v projections, so it stays alive
until the decoder's backward is done, and its gradient sums over the decoder layers.
`share_embeddings`: one table for source and target (the notes' example, nn.Transformer-based
models, T5, BART); `tie_embeddings`: the head reuses the target's table (no lm_head child).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from layerwise.blocks.compose import Repeat
from layerwise.blocks.transformer import NORMS, make_norm
from layerwise.spec.base import Block, Shape, block_class, chain_trace, expect_last, expect_rank, register
from layerwise.spec.counts import FlopCtx, Flops
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod


@register("decoder_block")
@dataclass(frozen=True, kw_only=True)
class DecoderBlock(Block):
    """Causal self-attention, cross-attention over the encoder's memory, FFN; each behind a norm
    and a residual (x: (B, S, D), memory (B, Sk, D) with Sk = cross_attn.context_len).
      pre  (T5, nn.Transformer norm_first):  h = x + attn(n1(x)); h = h + cross(n2(h), m); y = h + ffn(n3(h))
      post (nn.Transformer default, BART):   h = n1(x + attn(x)); h = n2(h + cross(h, m)); y = n3(h + ffn(h))
    """

    self_attn: Block  # causal self-attention
    cross_attn: Block  # attention with context_dim > 0 (keys/values from the memory)
    ffn: Block
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_bias: bool = True
    norm_position: str = "pre"  # pre | post
    dropout: float = 0.0  # residual dropout on each branch's output
    trainable: bool = True  # the norms this block makes

    def __post_init__(self):
        self._one_of("norm", NORMS)
        self._one_of("norm_position", ("pre", "post"))
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"decoder_block.dropout must be in [0, 1), got {self.dropout!r}")
        if not getattr(self.self_attn, "causal", False):
            raise SpecError("decoder_block.self_attn must be causal attention")
        if not getattr(self.cross_attn, "context_dim", 0):
            raise SpecError("decoder_block.cross_attn must be cross attention (context_dim > 0)")
        if self.cross_attn.d_model != self.self_attn.d_model:
            raise SpecError(f"decoder_block.cross_attn.d_model {self.cross_attn.d_model} != self_attn.d_model "
                            f"{self.self_attn.d_model}")

    @property
    def d_model(self) -> int:
        return self.self_attn.d_model

    def with_memory(self, length: int) -> "DecoderBlock":
        """This block reading a memory of `length` positions (shapes and FLOPs depend on it)."""
        return replace(self, cross_attn=replace(self.cross_attn, context_len=length))

    def children(self):
        drop = block_class("dropout")(p=self.dropout) if self.dropout > 0 else None
        out = []
        for name in ("self_attn", "cross_attn", "ffn"):
            out += [(f"{name}_norm", make_norm(self.norm, self.d_model, self.norm_eps, self.norm_bias, self.trainable)),
                    (name, getattr(self, name))]
            if drop is not None:
                out.append((f"{name}_dropout", drop))
        return tuple(out)

    def trace(self, in_shape: Shape):
        # every child sees (B, S, D), in the execution order of the wiring above
        kids = dict(self.children())
        suffixes = ("", "_dropout", "_norm") if self.norm_position == "post" else ("_norm", "", "_dropout")
        order = [f"{b}{s}" for b in ("self_attn", "cross_attn", "ffn") for s in suffixes]
        return tuple((n, kids[n], tuple(in_shape)) for n in order if n in kids)

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_rank(self, in_shape, 3, "(B, S, d_model)")
        expect_last(self, in_shape, self.d_model)
        for name, child, child_in in self.trace(in_shape):
            out = child.out_shape(child_in)
            if tuple(out) != tuple(in_shape):
                raise SpecError(f"{name} must keep the shape {tuple(in_shape)} for its residual, got {tuple(out)}")
        return tuple(in_shape)

    def depth(self) -> int:
        return sum(c.depth() for n, c in self.children() if not n.endswith(("_norm", "_dropout")))

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        return Flops(fwd_other=3 * prod(in_shape))  # three residual adds

    def build(self):
        from layerwise.build.seq2seq import DecoderBlockModule

        return DecoderBlockModule({name: child.build() for name, child in self.children()}, self.norm_position)


@register("encoder_decoder")
@dataclass(frozen=True, kw_only=True)
class EncoderDecoder(Block):
    vocab_size: int
    d_model: int
    n_layers: int  # encoder layers
    n_dec_layers: int = 0  # decoder layers (0: = n_layers)
    enc_block: Block  # transformer_block with bidirectional self-attention
    dec_block: Block  # decoder_block
    max_seq: int  # longest source / target (position table rows; cross_attn.context_len of children())
    positions: str = "sinusoidal"  # sinusoidal | learned (one table each side) | none (T5: relative, in attention)
    pos_rows: int = 0  # learned table rows if not max_seq (BART keeps 2 extra rows: max_seq + 2)
    embed_norm: bool = False  # a norm after embedding + positions on each side (BART's layernorm_embedding)
    share_embeddings: bool = True  # one token table for source and target
    tie_embeddings: bool = False  # lm_head reuses the target's table
    final_norm: str = "layernorm"  # enc_norm and dec_norm: layernorm | rmsnorm | none
    norm_eps: float = 1e-5
    norm_bias: bool = True
    head_bias: bool = False
    dropout: float = 0.0  # embedding dropout
    rel_buckets: int = 0  # > 0: T5's relative position bias, one table per stack (enc_rel_bias, dec_rel_bias)
    rel_max_distance: int = 128
    trainable: bool = True

    def __post_init__(self):
        self._positive("vocab_size", "d_model", "n_layers", "max_seq")
        self._non_negative("rel_buckets")
        self._non_negative("n_dec_layers", "pos_rows")
        if self.pos_rows and self.pos_rows < self.max_seq:
            raise SpecError(f"encoder_decoder.pos_rows {self.pos_rows} is fewer than max_seq {self.max_seq}")
        self._one_of("positions", ("sinusoidal", "learned", "none"))
        self._one_of("final_norm", ("layernorm", "rmsnorm", "none"))
        if self.tie_embeddings and self.head_bias:
            raise SpecError("encoder_decoder: a tied head has no bias of its own; set head_bias=False")
        if self.enc_block.type_name != "transformer_block" or getattr(self.enc_block.attn, "causal", True):
            raise SpecError("encoder_decoder.enc_block must be a transformer_block with non-causal attention")
        if self.dec_block.type_name != "decoder_block":
            raise SpecError(f"encoder_decoder.dec_block must be a decoder_block, got {self.dec_block.type_name}")
        for name in ("enc_block", "dec_block"):
            if getattr(self, name).d_model != self.d_model:
                raise SpecError(f"encoder_decoder.{name} has d_model {getattr(self, name).d_model}, expected {self.d_model}")
        if self.dec_block.cross_attn.context_dim != self.d_model:
            raise SpecError(f"encoder_decoder.dec_block.cross_attn.context_dim must be d_model {self.d_model}")
        if self.rel_buckets and (self.enc_block.norm_position != "pre" or self.enc_block.parallel
                                 or self.enc_block.sandwich):
            raise SpecError("encoder_decoder: rel_buckets (T5) needs the sequential pre-norm wiring in enc_block")
        biased = (self.enc_block.attn.score_bias, self.dec_block.self_attn.score_bias)
        if biased != (bool(self.rel_buckets),) * 2:
            raise SpecError("encoder_decoder: rel_buckets > 0 needs score_bias on the encoder's attention and the "
                            f"decoder's self-attention (and rel_buckets 0 none); got rel_buckets {self.rel_buckets}, "
                            f"score_bias {biased}")

    @property
    def dec_layers(self) -> int:
        return self.n_dec_layers or self.n_layers

    # ---- children -------------------------------------------------------------------------------
    def _embed(self) -> Block:
        return block_class("embedding")(vocab_size=self.vocab_size, d_model=self.d_model, trainable=self.trainable)

    def _pos(self) -> Block | None:
        if self.positions == "learned":
            return block_class("learned_positions")(max_seq=self.pos_rows or self.max_seq, d_model=self.d_model,
                                                    trainable=self.trainable)
        if self.positions == "sinusoidal":
            return block_class("sinusoidal_positions")(max_seq=self.max_seq, d_model=self.d_model)
        return None

    def _rel_bias(self, side: str) -> Block:
        return block_class("relative_position_bias")(n_buckets=self.rel_buckets, n_heads=self.enc_block.attn.n_heads
                                                     if side == "enc" else self.dec_block.self_attn.n_heads,
                                                     max_distance=self.rel_max_distance, bidirectional=side == "enc",
                                                     trainable=self.trainable)

    def _head(self) -> Block:
        return block_class("linear")(d_in=self.d_model, d_out=self.vocab_size, bias=self.head_bias,
                                     init="normal", trainable=self.trainable)

    def _norm(self) -> Block | None:
        if self.final_norm == "none":
            return None
        return make_norm(self.final_norm, self.d_model, self.norm_eps, self.norm_bias, self.trainable)

    def _side(self, side: str, block: Block, n: int) -> list[tuple[str, Block]]:
        """One stack's children in execution order: [tgt_embed], [pos], [drop], layers, [norm]."""
        out = []
        if side == "dec" and not self.share_embeddings:
            out.append(("tgt_embed", self._embed()))
        if self.rel_buckets:
            out.append((f"{side}_rel_bias", self._rel_bias(side)))
        pos = self._pos()
        if pos is not None:
            out.append((f"{side}_pos" if self.positions == "learned" else "pos", pos))
        if self.embed_norm:
            out.append((f"{side}_embed_norm", make_norm(self.final_norm if self.final_norm != "none" else "layernorm",
                                                        self.d_model, self.norm_eps, self.norm_bias, self.trainable)))
        if self.dropout > 0:
            out.append(("drop", block_class("dropout")(p=self.dropout)))
        out.append(("encoder" if side == "enc" else "decoder", Repeat(block=block, n_layers=n)))
        norm = self._norm()
        if norm is not None:
            out.append((f"{side}_norm", norm))
        return out

    def children(self):
        out = [("embed", self._embed())]
        out += self._side("enc", self.enc_block, self.n_layers)
        out += [kid for kid in self._side("dec", self.dec_block.with_memory(self.max_seq), self.dec_layers)
                if kid[0] not in ("pos", "drop")]  # parameter-free, shared with the encoder side
        if not self.tie_embeddings:
            out.append(("lm_head", self._head()))
        return tuple(dict(out).items())

    def trace(self, in_shape: Shape):
        """The encoder side on the source, then the decoder side on the target. A shared table's
        and the sinusoid's second call are not listed again (flops adds them)."""
        expect_rank(self, in_shape, 3, "token ids (B, S, 2): source and decoder input")
        b, s, two = in_shape
        if two != 2:
            raise SpecError(f"encoder_decoder expects token ids (B, S, 2), got shape {tuple(in_shape)}")
        if s > self.max_seq:
            raise SpecError(f"encoder_decoder: sequence {s} is longer than max_seq {self.max_seq}")
        enc = _chain([("embed", self._embed())] + self._side("enc", self.enc_block, self.n_layers), (b, s), s)
        dec_side = self._side("dec", self.dec_block.with_memory(s), self.dec_layers)
        listed = {name for name, _, _ in enc}
        first = (b, s) if dec_side[0][0] == "tgt_embed" else (b, s, self.d_model)
        dec = [k for k in _chain(dec_side, first, s) if k[0] not in listed]
        head = [("lm_head", self._head(), (b, s, self.d_model))] if not self.tie_embeddings else []
        return tuple(enc) + tuple(dec) + tuple(head)

    def out_shape(self, in_shape: Shape) -> Shape:
        trace = self.trace(in_shape)
        for name, child, child_in in trace:
            child.out_shape(child_in)
        return (in_shape[0], in_shape[1], self.vocab_size)

    # ---- readings -------------------------------------------------------------------------------
    def depth(self) -> int:
        """Embedding, encoder, decoder, head on the longest path (the memory enters each decoder
        layer beside its input, so the encoder adds in front of the decoder)."""
        kids = dict(self.children())
        return (1 + kids["encoder"].depth() + kids["decoder"].depth() + (kids["lm_head"].depth() if "lm_head" in kids else 1))

    def flops(self, in_shape: Shape, ctx: FlopCtx = FlopCtx()) -> Flops:
        total = super().flops(in_shape, ctx)
        b, s, _ = in_shape
        kids = dict(self.children())
        hidden = (b, s, self.d_model)
        if self.share_embeddings:  # the target's lookup in the shared table
            total = total + kids["embed"].flops((b, s), ctx)
        if "pos" in kids:
            total = total + kids["pos"].flops(hidden, ctx)
        if "drop" in kids:
            total = total + kids["drop"].flops(hidden, ctx)
        # the memory's gradient sums the decoder layers' contributions: n_dec - 1 adds
        total = total + Flops(bwd_other=(self.dec_layers - 1) * prod(hidden))
        if self.tie_embeddings:
            total = total + replace(self._head(), bias=False).flops(hidden, replace(ctx, input_grad=True))
        return total

    def build(self):
        from layerwise.build.seq2seq import EncoderDecoderModule

        return EncoderDecoderModule({name: child.build() for name, child in self.children()}, self)


def _chain(kids, in_shape: Shape, s: int):
    """chain_trace, except that a relative position bias reads the (S, S) lengths, not the chain."""
    bias = [(name, child, (s, s)) for name, child in kids if child.type_name == "relative_position_bias"]
    rest = chain_trace([k for k in kids if k[1].type_name != "relative_position_bias"], in_shape)
    return tuple(rest[:1]) + tuple(bias) + tuple(rest[1:]) if bias else rest
