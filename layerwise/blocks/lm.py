"""Decoder-only language model: token ids (B, S) -> logits (B, S, vocab_size).

  embed [* sqrt(d_model)] -> [pos] -> [drop] -> blocks (n_layers copies of `block`) -> [final_norm]
  -> lm_head [-> logit_softcap * tanh(logits / logit_softcap)]
Gemma scales the embeddings by sqrt(d_model) (`scale_embeddings`); Gemma 2 soft-caps the logits
(`logit_softcap`); Gemma 2/3 alternate two blocks: `local_block` (sliding-window attention, its own
rope base) on every layer but each `global_every`-th, which is `block` (global attention).
(the first n_first of the copies may be another block, `first_block`: DeepSeek's dense layers)
Positions: "learned" adds a (max_seq, d_model) table (GPT-2, OPT), "sinusoidal" a fixed one,
"rope"/"none" add nothing here (RoPE lives inside the attention spec). A tied head
(`tie_embeddings`) has no child and no parameters of its own: the logits are x @ embed.weight^T,
counted once in params and twice in FLOPs (lookup + projection), as in GPT-2.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from layerwise.blocks.compose import Repeat
from layerwise.blocks.transformer import make_norm
from layerwise.spec.base import Block, Shape, block_class, child_out, expect_rank, register
from layerwise.spec.counts import FlopCtx, Flops
from layerwise.spec.errors import SpecError

POSITIONS = ("learned", "sinusoidal", "rope", "none")


@register("decoder_lm")
@dataclass(frozen=True, kw_only=True)
class DecoderLM(Block):
    vocab_size: int
    d_model: int
    n_layers: int
    block: Block  # one transformer block; repeated n_layers times as `blocks`
    max_seq: int  # longest sequence (the learned table's rows; rope models: the trained context)
    positions: str = "learned"  # learned | sinusoidal | rope | none
    pos_rows: int = 0  # learned table rows if not max_seq (OPT keeps 2 extra rows: max_seq + 2)
    tie_embeddings: bool = False  # lm_head reuses embed.weight (GPT-2, OPT, small Qwen2)
    final_norm: str = "layernorm"  # layernorm | rmsnorm | none
    norm_eps: float = 1e-5
    norm_bias: bool = True
    head_bias: bool = False  # untied head with a bias (Phi-2)
    dropout: float = 0.0  # embedding dropout (GPT-2's embd_pdrop)
    padding_idx: int | None = None
    trainable: bool = True  # the embeddings, final norm and head made here
    head_out: int = 0  # > 0: the head's width instead of vocab_size (1: a reward model's / critic's scalar head)
    scale_embeddings: bool = False  # x = embed(ids) * sqrt(d_model), rounded to the weights' dtype (Gemma)
    logit_softcap: float = 0.0  # > 0: logits -> cap * tanh(logits / cap) (Gemma 2: final_logit_softcapping 30)
    local_block: Block | None = None  # Gemma 2/3: the sliding-window layers' block (same parameters)
    global_every: int = 0  # with local_block: layer i is `block` iff (i + 1) % global_every == 0
    first_block: Block | None = None  # the first n_first layers are this block (DeepSeek's dense layers before MoE)
    n_first: int = 0

    def __post_init__(self):
        self._positive("vocab_size", "d_model", "n_layers", "max_seq")
        self._non_negative("pos_rows", "head_out")
        if self.head_out and self.tie_embeddings:
            raise SpecError("decoder_lm.head_out: a scalar (or other) head is its own linear; set tie_embeddings=False")
        self._one_of("positions", POSITIONS)
        self._one_of("final_norm", ("layernorm", "rmsnorm", "none"))
        if self.tie_embeddings and self.head_bias:
            raise SpecError("decoder_lm: a tied head has no bias of its own; set head_bias=False or tie_embeddings=False")
        if self.pos_rows and self.pos_rows < self.max_seq:
            raise SpecError(f"decoder_lm.pos_rows {self.pos_rows} is fewer than max_seq {self.max_seq}")
        for name in ("block", "first_block"):
            width = getattr(getattr(self, name), "d_model", self.d_model)
            if width != self.d_model:
                raise SpecError(f"decoder_lm.{name} has d_model {width}, expected {self.d_model}")
        self._non_negative("n_first")
        if (self.first_block is None) != (self.n_first == 0):
            raise SpecError("decoder_lm.first_block and decoder_lm.n_first > 0 go together")
        if self.n_first > self.n_layers:
            raise SpecError(f"decoder_lm.n_first ({self.n_first}) exceeds n_layers ({self.n_layers})")
        self._non_negative("global_every")
        if (self.local_block is None) != (self.global_every == 0):
            raise SpecError("decoder_lm.local_block and decoder_lm.global_every go together "
                            "(global_every >= 1 with a local block)")
        if self.local_block is not None and getattr(self.local_block, "d_model", self.d_model) != self.d_model:
            raise SpecError(f"decoder_lm.local_block has d_model {self.local_block.d_model}, expected {self.d_model}")
        cap = self.logit_softcap
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 <= cap < float("inf"):
            raise SpecError(f"decoder_lm.logit_softcap must be a finite number >= 0 (0: off), got {cap!r}")
        if cap and self.head_out:
            raise SpecError("decoder_lm.logit_softcap caps a language model's logits; a head_out head has none")

    # ---- children -------------------------------------------------------------------------------
    def _head(self) -> Block:
        return block_class("linear")(d_in=self.d_model, d_out=self.head_out or self.vocab_size, bias=self.head_bias,
                                     init="normal", trainable=self.trainable)

    def children(self):
        out = [("embed", block_class("embedding")(vocab_size=self.vocab_size, d_model=self.d_model,
                                                  padding_idx=self.padding_idx, trainable=self.trainable))]
        if self.positions == "learned":
            out.append(("pos", block_class("learned_positions")(max_seq=self.pos_rows or self.max_seq,
                                                                d_model=self.d_model, trainable=self.trainable)))
        elif self.positions == "sinusoidal":
            out.append(("pos", block_class("sinusoidal_positions")(max_seq=self.max_seq, d_model=self.d_model)))
        if self.dropout > 0:
            out.append(("drop", block_class("dropout")(p=self.dropout)))
        out.append(("blocks", Repeat(block=self.block, n_layers=self.n_layers, other=self.local_block,
                                     every=self.global_every, first=self.first_block, n_first=self.n_first)))
        if self.final_norm != "none":
            out.append(("final_norm", make_norm(self.final_norm, self.d_model, self.norm_eps, self.norm_bias, self.trainable)))
        if not self.tie_embeddings:
            out.append(("lm_head", self._head()))
        return tuple(out)

    def trace(self, in_shape: Shape):
        expect_rank(self, in_shape, 2, "token ids (B, S)")
        if in_shape[1] > self.max_seq:
            raise SpecError(f"decoder_lm: sequence {in_shape[1]} is longer than max_seq {self.max_seq}")
        out, shape = [], tuple(in_shape)
        for name, child in self.children():
            out.append((name, child, shape))
            shape = child_out(name, child, shape)
        return tuple(out)

    def out_shape(self, in_shape: Shape) -> Shape:
        shape = super().out_shape(in_shape)
        return (*shape[:-1], self.vocab_size) if self.tie_embeddings else shape

    # ---- readings -------------------------------------------------------------------------------
    def depth(self) -> int:
        return super().depth() + (1 if self.tie_embeddings else 0)  # the tied projection is a layer

    def own_flops(self, in_shape: Shape, ctx: FlopCtx) -> Flops:
        """The embedding scale (1 per element, its backward 1) and the logits' soft-capping (3 per
        logit: divide, tanh, multiply; backward 4: the scalings, tanh's 1 - y^2 times the gradient)."""
        grad = ctx.input_grad or self.params().trainable > 0
        rows = in_shape[0] * in_shape[1]
        scale = rows * self.d_model if self.scale_embeddings else 0
        cap = rows * self.vocab_size if self.logit_softcap else 0
        return Flops(fwd_other=scale + 3 * cap, bwd_other=(scale + 4 * cap) if grad else 0)

    def flops(self, in_shape: Shape, ctx: FlopCtx = FlopCtx()) -> Flops:
        total = super().flops(in_shape, ctx)
        if not self.tie_embeddings:
            return total
        # Tied head: (B*S, d_model) @ embed.weight^T, with the same backward as an untied Linear.
        # Its input needs grad if anything before it is trainable (ids never need grad).
        trace = self.trace(in_shape)
        grad = ctx.input_grad or any(child.params().trainable > 0 for _, child, _ in trace)
        hidden = (*in_shape, self.d_model)
        return total + replace(self._head(), bias=False).flops(hidden, replace(ctx, input_grad=grad))

    def build(self):
        from layerwise.build.lm import DecoderLMModule

        return DecoderLMModule({name: child.build() for name, child in self.children()}, self.tie_embeddings,
                               embed_scale=self.d_model ** 0.5 if self.scale_embeddings else 0.0,
                               logit_softcap=float(self.logit_softcap))
