"""Mixture of experts with token-choice top-k routing (Shazeer et al. 2017; Mixtral, arXiv 2401.04088).

x (..., d_model) -> T = prod(...) tokens. router: Linear d_model -> n_experts (no bias); weights =
softmax(logits), the top_k kept and renormalised to sum 1 (Mixtral); each expert (an ffn) runs only
on its routed tokens; optional shared expert (an ffn of width shared_d_ff) on every token, scaled
by sigmoid(shared_expert_gate(x)) with `shared_gate` (Qwen2-MoE).
DeepSeek's routers (transformers' DeepseekV2TopkRouter / DeepseekV3TopkRouter): `scoring` sigmoid
(V3) scores sigmoid(logits) and chooses by scores + e_score_correction_bias (a buffer; it steers the
choice, not the weights); `n_groups` > 1 splits the experts into equal groups, scores each group
(softmax: its best expert, V2; sigmoid: the sum of its best 2, V3) and chooses only within the best
`topk_groups`; `norm_topk` renormalises the chosen weights (V2 does not); `routed_scale` multiplies
them (routed_scaling_factor).

Expert capacity (GShard, arXiv 2006.16668; Switch Transformer, arXiv 2101.03961): with
capacity_factor > 0 each expert takes at most C = ceil(capacity_factor * top_k * T / n_experts)
(token, expert) pairs, queued choice-major (every token's first choice before any second choice,
tokens in order); the pairs over capacity are dropped (their share of the output is 0, so a token
whose every choice overflowed passes through the block's residual unchanged). The experts then run
on an (n_experts * C, d_model) buffer, padding included: that is what they compute. capacity_factor
0 is dropless (each expert runs on exactly its routed rows).

Router losses, added to the training loss (build.runtime.router_loss): the load-balancing loss
aux_loss_coef * n_experts * sum_i f_i P_i (Switch eq. 4; f_i the share of tokens routed to expert i
before capacity, counting each of a token's top_k choices, P_i the mean router probability, as
transformers' load_balancing_loss_func) and the router z-loss z_loss_coef * mean_t logsumexp(logits_t)^2
(ST-MoE, arXiv 2202.08906 eq. 5). Router logits are computed in fp32 under autocast (ST-MoE sec. 2.2:
the gating's exponentials are precision-sensitive).

params() counts every expert; active_params() counts what one token uses: router + top_k experts +
the shared expert.

FLOPs: every token makes exactly top_k assignments, and an ffn's FLOPs are linear in its rows, so
the experts' total is one expert's FLOPs on top_k * T rows whatever the routing (the experts are
assumed alike: expert 0 stands for all). Other, stated per element: routing softmax 5 (or as `_score_other`) and
top-k 1 per (token, expert), renormalising 2 per (token, k) (`_weights_other`); combining 2 per (token, k, d_model); backward:
softmax 4 per (token, expert), combine 3 per (token, k, d_model); the shared expert's add 1 per
output element. With capacity, the experts' rows are n_experts * C, and the dispatch/combine
bookkeeping is counted per element too (`_capacity_other`); the router losses per `_loss_other`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

from layerwise.blocks.ffn import FFN, _check_linear
from layerwise.blocks.linear import Linear
from layerwise.spec.base import Block, Names, Shape, collapse, expect_last, register
from layerwise.spec.counts import FlopCtx, Flops, Params
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod


# Experts listed one by one (paths experts.0, experts.1, ... for LoRA, freezing and the built
# module). Beyond this they stay one derived spec that the cost reading counts n_experts times.
MAX_LISTED_EXPERTS = 4096
SCORINGS = ("softmax", "sigmoid")


@register("moe")
@dataclass(frozen=True, kw_only=True)
class MoE(Block):
    d_model: int
    d_ff: int  # each expert's hidden width
    n_experts: int
    top_k: int  # experts per token
    activation: str = "silu"
    gated: bool = True  # experts are SwiGLU by default (Mixtral)
    bias: bool = False
    shared_d_ff: int = 0  # > 0: a shared expert of this width sees every token (DeepSeek-MoE, Qwen-MoE)
    shared_gate: bool = False  # Qwen2-MoE: sigmoid(Linear(d_model, 1)(x)) scales the shared expert
    capacity_factor: float = 0.0  # > 0: each expert takes at most ceil(cf * top_k * T / n_experts) pairs (GShard)
    aux_loss_coef: float = 0.0  # Switch load-balancing loss weight (Switch used 0.01, Mixtral's HF config 0.02)
    z_loss_coef: float = 0.0  # ST-MoE router z-loss weight (ST-MoE used 0.001)
    scoring: str = "softmax"  # softmax | sigmoid (DeepSeek-V3: + a bias buffer steering the choice only)
    norm_topk: bool = True  # renormalise the top_k weights to sum 1 (Mixtral, DeepSeek-V3; not V2)
    routed_scale: float = 1.0  # the routed experts' weights times this (DeepSeek routed_scaling_factor)
    n_groups: int = 0  # > 1: group-limited routing over n_groups equal groups of experts (DeepSeek)
    topk_groups: int = 0  # ... choosing experts only in the best topk_groups groups
    # children, derived from the fields above when left out
    router: Block | None = None
    experts: tuple[Block, ...] = ()
    shared_expert: Block | None = None
    shared_expert_gate: Block | None = None

    def __post_init__(self):
        self._positive("d_model", "d_ff", "n_experts", "top_k")
        self._non_negative("shared_d_ff")
        for name in ("capacity_factor", "aux_loss_coef", "z_loss_coef"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise SpecError(f"moe.{name} must be a number >= 0, got {value!r}")
        if self.top_k > self.n_experts:
            raise SpecError(f"moe.top_k ({self.top_k}) must be <= n_experts ({self.n_experts})")
        self._check_routing()
        router = Linear(d_in=self.d_model, d_out=self.n_experts, bias=False)
        if self.router is None:
            object.__setattr__(self, "router", router)
        else:
            _check_linear("moe.router", self.router, router)
        expert = FFN(d_model=self.d_model, d_ff=self.d_ff, activation=self.activation, gated=self.gated, bias=self.bias)
        if isinstance(self.experts, list):
            object.__setattr__(self, "experts", tuple(self.experts))
        if not self.experts and self.n_experts <= MAX_LISTED_EXPERTS:
            object.__setattr__(self, "experts", (expert,) * self.n_experts)
        elif self.experts and len(self.experts) != self.n_experts:
            raise SpecError(f"moe.experts holds {len(self.experts)} experts, n_experts is {self.n_experts}")
        checked = set()
        for i, e in enumerate(self.experts):
            if id(e) not in checked:
                _check_ffn(f"moe.experts.{i}", e, expert)
                checked.add(id(e))
        shared = replace(expert, d_ff=self.shared_d_ff, up_proj=None, gate_proj=None, down_proj=None) if self.shared_d_ff else None
        if shared is None and self.shared_expert is not None:
            raise SpecError("moe.shared_expert is given but shared_d_ff is 0")
        if shared is not None:
            if self.shared_expert is None:
                object.__setattr__(self, "shared_expert", shared)
            else:
                _check_ffn("moe.shared_expert", self.shared_expert, shared)
        self._init_gate()

    def _check_routing(self) -> None:
        self._one_of("scoring", SCORINGS)
        self._non_negative("n_groups", "topk_groups")
        r = self.routed_scale
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < math.inf:
            raise SpecError(f"moe.routed_scale must be a number > 0, got {r!r}")
        if self.n_groups > 1:
            if self.n_experts % self.n_groups:
                raise SpecError(f"moe.n_experts ({self.n_experts}) must be divisible by n_groups ({self.n_groups})")
            if not 0 < self.topk_groups <= self.n_groups:
                raise SpecError(f"moe.topk_groups must be in [1, n_groups={self.n_groups}], got {self.topk_groups}")
            if self.top_k > self.topk_groups * (self.n_experts // self.n_groups):
                raise SpecError(f"moe.top_k ({self.top_k}) exceeds the experts of the topk_groups "
                                f"({self.topk_groups} x {self.n_experts // self.n_groups})")
            if self.scoring == "sigmoid" and self.n_experts // self.n_groups < 2:
                raise SpecError("moe: sigmoid group scores sum each group's best 2 experts; groups need >= 2")
        elif self.topk_groups > 1:
            raise SpecError(f"moe.topk_groups is {self.topk_groups} but n_groups is {self.n_groups}")

    def own_params(self) -> Params:
        """sigmoid scoring: DeepSeek-V3's e_score_correction_bias, a buffer of n_experts."""
        return Params(buffers=self.n_experts if self.scoring == "sigmoid" else 0)

    def _init_gate(self) -> None:
        if self.shared_gate and not self.shared_d_ff:
            raise SpecError("moe.shared_gate scales the shared expert; set shared_d_ff too")
        if not self.shared_gate:
            if self.shared_expert_gate is not None:
                raise SpecError("moe.shared_expert_gate is given but shared_gate is false")
            return
        gate = Linear(d_in=self.d_model, d_out=1, bias=False)
        if self.shared_expert_gate is None:
            object.__setattr__(self, "shared_expert_gate", gate)
        else:
            _check_linear("moe.shared_expert_gate", self.shared_expert_gate, gate)

    # ---- routing -----------------------------------------------------------------------------
    def capacity(self, tokens: int) -> int:
        """Pairs each expert takes: ceil(capacity_factor * top_k * tokens / n_experts), at least 1
        (rounded up, as DeepSpeed's top-k gating); 0 when dropless (capacity_factor 0)."""
        if not self.capacity_factor:
            return 0
        factor = Fraction(repr(float(self.capacity_factor)))  # the decimal as written: 0.6 is 3/5, exactly
        return max(1, math.ceil(factor * self.top_k * tokens / self.n_experts))

    def balanced_load(self, tokens: int) -> tuple[list[int], int]:
        """(pairs per expert, pairs dropped over capacity) under balanced routing (what the measure
        reading runs under fake tensors): pair t*top_k + j goes to expert (t*top_k + j) % n_experts."""
        pairs, n = tokens * self.top_k, self.n_experts
        counts = [pairs // n + (1 if e < pairs % n else 0) for e in range(n)]
        cap = self.capacity(tokens)
        return counts, (sum(max(0, c - cap) for c in counts) if cap else 0)

    @property
    def router_losses(self) -> bool:
        return bool(self.aux_loss_coef or self.z_loss_coef)

    # ---- children, shapes and params ---------------------------------------------------------
    def _derived_expert(self) -> Block:
        return FFN(d_model=self.d_model, d_ff=self.d_ff, activation=self.activation, gated=self.gated, bias=self.bias)

    def expert_groups(self) -> tuple[tuple, ...]:
        """(names, expert) with equal neighbours merged; one entry when the experts are derived."""
        if self.experts:
            return collapse((f"experts.{i}", e) for i, e in enumerate(self.experts))
        return ((Names("experts.", 0, self.n_experts), self._derived_expert()),)

    def children(self):
        if not self.experts:
            raise SpecError(f"moe: {self.n_experts} experts are too many to list one by one (at most "
                            f"{MAX_LISTED_EXPERTS}); the cost reading counts them, building or transforming "
                            f"them expert by expert is refused")
        return super().children()

    def child_groups(self):
        out = [(("router",), self.router), *self.expert_groups()]
        for name in ("shared_expert", "shared_expert_gate"):
            if getattr(self, name) is not None:
                out.append(((name,), getattr(self, name)))
        return tuple(out)

    def _rows(self, in_shape: Shape) -> int:
        return prod(in_shape[:-1])

    def runs(self, in_shape: Shape):
        t = self._rows(in_shape)
        out = [(("router",), self.router, (t, self.d_model))]
        # each expert sees about T * top_k / n_experts tokens (rounded up), or its capacity buffer
        share = self.capacity(t) or -(-t * self.top_k // self.n_experts)
        out += [(names, e, (share, self.d_model)) for names, e in self.expert_groups()]
        if self.shared_expert is not None:
            out.append((("shared_expert",), self.shared_expert, (t, self.d_model)))
        if self.shared_expert_gate is not None:
            out.append((("shared_expert_gate",), self.shared_expert_gate, (t, self.d_model)))
        return tuple(out)

    def trace(self, in_shape: Shape):
        self.children()  # refuses experts too many to list
        return tuple((name, child, shape) for names, child, shape in self.runs(in_shape) for name in names)

    def out_shape(self, in_shape: Shape) -> Shape:
        expect_last(self, in_shape, self.d_model)
        return tuple(in_shape)

    def active_params(self) -> Params:
        """Router + the top_k largest experts + the shared expert: the weights one token uses."""
        groups = sorted(((e.active_params(), len(names)) for names, e in self.expert_groups()),
                        key=lambda g: g[0].total, reverse=True)
        total, left = self.router.active_params(), self.top_k
        for p, count in groups:
            take = min(count, left)
            total, left = total + p * take, left - take
        for extra in (self.shared_expert, self.shared_expert_gate):
            if extra is not None:
                total = total + extra.active_params()
        return total

    def depth(self) -> int:
        shared = self.shared_expert.depth() if self.shared_expert is not None else 0
        return max(self.expert_groups()[0][1].depth(), shared)

    # ---- FLOPs -------------------------------------------------------------------------------
    def flops(self, in_shape: Shape, ctx: FlopCtx = FlopCtx()) -> Flops:
        self.out_shape(in_shape)
        t, e, k, d = self._rows(in_shape), self.n_experts, self.top_k, self.d_model
        total = self.router.flops((t, d), ctx)
        cap = self.capacity(t)
        # dropless: top_k * T rows over all experts; with capacity: every expert's C-row buffer
        total = total + self.expert_groups()[0][1].flops((e * cap if cap else t * k, d), ctx)
        router_grad = ctx.input_grad or self.router.params().trainable > 0
        fwd = t * e * (self._score_other() + 1) + self._weights_other(t) + 2 * t * k * d
        bwd = ((4 if self.scoring == "softmax" else 3) * t * e if router_grad else 0) + 3 * t * k * d
        total = total + Flops(fwd_other=fwd, bwd_other=bwd) + self._capacity_other(t) + self._loss_other(t)
        if self.shared_expert is not None:
            total = total + self.shared_expert.flops((t, d), ctx) + Flops(fwd_other=t * d)
        if self.shared_expert_gate is not None:
            # sigmoid 4 per token, the scaling 1 per (token, d_model); backward: 3 per token, 2 per element
            total = total + self.shared_expert_gate.flops((t, d), ctx) + Flops(fwd_other=4 * t + t * d,
                                                                                bwd_other=3 * t + 2 * t * d)
        return total

    def _score_other(self) -> int:
        """Per (token, expert): softmax 5, or sigmoid 4 + the correction bias 1; group-limited
        routing: the group score and the mask 2 more."""
        score = 5 if self.scoring == "softmax" else 4 + 1
        return score + (2 if self.n_groups > 1 else 0)

    def _weights_other(self, t: int) -> int:
        """Per (token, choice): renormalising 2 (sum, divide), the routed scale 1."""
        k = self.top_k
        return (2 * t * k if self.norm_topk else 0) + (t * k if self.routed_scale != 1 else 0)

    def _capacity_other(self, t: int) -> Flops:
        """Dispatch bookkeeping per (token, choice) pair and expert: one-hot 1 and cumsum 1 per
        (pair, expert); position, compare, destination 3 per pair; the gather into the buffer and
        back out 0 (copies). Backward: the buffer's and the combine's scatter-adds 1 per (pair, d_model)."""
        if not self.capacity_factor:
            return Flops()
        pairs = t * self.top_k
        return Flops(fwd_other=2 * pairs * self.n_experts + 3 * pairs, bwd_other=pairs * self.d_model)

    def _loss_other(self, t: int) -> Flops:
        """aux: one-hot count 1 per (pair, expert), mean 1 per (token, expert), f*P and sum 2 per
        expert; z: logsumexp 4 per (token, expert), square and mean 2 per token. Backward: mean 1 per
        (token, expert); logsumexp 3 per (token, expert)."""
        fwd = bwd = 0
        if self.aux_loss_coef:
            fwd += t * self.top_k * self.n_experts + t * self.n_experts + 2 * self.n_experts
            bwd += t * self.n_experts
        if self.z_loss_coef:
            fwd += 4 * t * self.n_experts + 2 * t
            bwd += 3 * t * self.n_experts + 2 * t
        return Flops(fwd_other=fwd, bwd_other=bwd)

    def build(self):
        from layerwise.build.moe import MoEModule

        return MoEModule(self)


def _check_ffn(where: str, got: Block, want: FFN) -> None:
    keys = ("d_model", "d_ff", "activation", "gated", "bias")
    if not isinstance(got, FFN) or any(getattr(got, a) != getattr(want, a) for a in keys):
        have = {a: getattr(got, a, None) for a in keys}
        raise SpecError(f"{where} must be an ffn with {({a: getattr(want, a) for a in keys})} "
                        f"(from the moe's fields), got {got.type_name} {have}")
