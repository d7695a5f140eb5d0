"""The mixture-of-experts module built from a `moe` spec: real token-choice top-k routing.

Routing is a run-time setting (`build.runtime.set_moe_routing`), never part of the spec:
  learned   softmax(router logits), top_k, renormalised (Mixtral); or the spec's DeepSeek routing
            (sigmoid scores, correction bias, group-limited choice, norm_topk, routed_scale)
  balanced  token t goes to experts (t*top_k + j) % n_experts, j < top_k, weighted by the same
            renormalised router probabilities at those experts. Data-independent shapes, so it runs
            under FakeTensorMode / on the meta device, and every expert gets an equal share.
Dropless (capacity_factor 0): exactly top_k * T (token, expert) pairs are computed, so FLOPs do not
depend on the routing. With capacity (build/moe_dispatch.py) every expert runs on its C-row buffer.

Router logits are fp32 under autocast (the router runs with autocast off on the fp32 input). After
each forward `router_loss` holds the weighted aux + z losses (None when both coefficients are 0),
which the training loss adds (`build.runtime.router_loss`); with `record_stats` set, `stats` holds
the last forward's per-expert pair counts and dropped pairs (`build.runtime.routing_stats`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from layerwise.build.ffn import build_linear
from layerwise.build.moe_dispatch import capacity_combine

ROUTINGS = ("learned", "balanced")


class MoEModule(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        self.top_k, self.n_experts = spec.top_k, spec.n_experts
        self.routing = "learned"
        self.router = build_linear(spec.router, None)
        self.experts = nn.ModuleList(e.build() for e in spec.experts)
        self.shared_expert = spec.shared_expert.build() if spec.shared_expert is not None else None
        gate = spec.shared_expert_gate
        self.shared_expert_gate = build_linear(gate, None) if gate is not None else None
        if spec.scoring == "sigmoid":  # DeepSeek-V3: steers the choice (trained by a bias update, not SGD)
            self.e_score_correction_bias = nn.Buffer(torch.zeros(spec.n_experts))
        self.router_loss = None  # the last forward's weighted aux + z loss (0-dim fp32), or None
        self.record_stats = False
        self.stats = None  # (counts (E,) int64, dropped pairs 0-dim int64) of the last forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., d_model)
        flat = x.reshape(-1, x.shape[-1])  # (T, d)
        logits = self._logits(flat)  # (T, E) fp32
        spec = self.spec
        probs = logits.softmax(dim=-1) if spec.scoring == "softmax" else logits.sigmoid()
        balanced = self.routing == "balanced"
        if balanced:
            idx = _balanced(flat.shape[0], self.top_k, self.n_experts, x.device)
            weights = probs.gather(1, idx)
        elif spec.scoring == "softmax" and spec.n_groups <= 1:
            weights, idx = probs.topk(self.top_k, dim=-1)  # (T, k)
        else:
            idx = self._choose(probs.detach())
            weights = probs.gather(1, idx)
        if spec.norm_topk:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        if spec.routed_scale != 1:
            weights = weights * spec.routed_scale
        weights = weights.to(x.dtype)
        loss = self._router_loss(logits, probs, idx)
        # a checkpointed forward recomputed inside backward must not keep its loss: that graph would
        # hold the whole recomputed layer until the next forward (-1: not inside a backward pass)
        self.router_loss = loss if torch._C._current_graph_task_id() == -1 else None
        del logits, loss
        cap = self.spec.capacity(flat.shape[0])
        if cap:
            out, dropped = capacity_combine(self.experts, flat, idx, weights, cap, self.record_stats)
        else:
            out, dropped = self._dropless(flat, idx, weights, balanced), None
        if self.record_stats:
            counts = torch.bincount(idx.detach().reshape(-1), minlength=self.n_experts)
            self.stats = (counts, dropped if dropped is not None else torch.zeros((), dtype=torch.long))
        if self.shared_expert is not None:
            shared = self.shared_expert(flat)
            if self.shared_expert_gate is not None:  # Qwen2-MoE: (T, 1) sigmoid gate
                shared = torch.sigmoid(self.shared_expert_gate(flat)) * shared
            out = out + shared
        return out.view_as(x)

    def _choose(self, scores: torch.Tensor) -> torch.Tensor:
        """(T, k) expert ids: top_k of the scores (+ the correction bias under sigmoid scoring),
        within the best topk_groups groups when n_groups > 1 (transformers' DeepSeek routers)."""
        spec = self.spec
        if spec.scoring == "sigmoid":
            scores = scores + self.e_score_correction_bias
        if spec.n_groups > 1:
            t, g = scores.shape[0], spec.n_groups
            grouped = scores.view(t, g, -1)  # (T, G, E/G)
            best = grouped.max(dim=-1).values if spec.scoring == "softmax" else grouped.topk(2, dim=-1)[0].sum(-1)
            keep = torch.zeros_like(best).scatter_(1, best.topk(spec.topk_groups, dim=-1)[1], 1.0).bool()
            keep = keep[:, :, None].expand_as(grouped).reshape(t, -1)
            scores = scores.masked_fill(~keep, 0.0 if spec.scoring == "softmax" else float("-inf"))
        return scores.topk(self.top_k, dim=-1)[1]

    def _logits(self, flat: torch.Tensor) -> torch.Tensor:
        """(T, E) fp32. Under autocast the router runs in fp32 (autocast off, fp32 input)."""
        device = flat.device.type
        if torch.is_autocast_enabled(device):
            with torch.autocast(device_type=device, enabled=False):
                return self.router(flat.float())
        return self.router(flat).float()

    def _router_loss(self, logits, probs, idx):
        """Switch aux loss n_experts * sum_i f_i P_i (f_i: share of tokens routed to i, each of a
        token's top_k choices counted, as transformers' load_balancing_loss_func) and the ST-MoE
        z-loss mean_t logsumexp(logits_t)^2, each times its coefficient."""
        spec, loss = self.spec, None
        if spec.aux_loss_coef:
            with torch.no_grad():
                share = F.one_hot(idx.reshape(-1), self.n_experts).sum(0) / idx.shape[0]  # (E,) fp32
            loss = (share * probs.mean(0)).sum() * (self.n_experts * spec.aux_loss_coef)
        if spec.z_loss_coef:
            z = logits.logsumexp(dim=-1).pow(2).mean() * spec.z_loss_coef
            loss = z if loss is None else loss + z
        return loss

    def _dropless(self, flat, idx, weights, balanced: bool):
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            if balanced:
                tok, slot = _rows_of(flat.shape[0], e, self.top_k, self.n_experts, flat.device)
            else:
                tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            y = expert(flat[tok]) * weights[tok, slot, None]  # (n_e, d)
            out = out.index_add(0, tok, y)
        return out


def _balanced(tokens: int, k: int, n: int, device) -> torch.Tensor:
    """(T, k) expert ids: pair t*k + j goes to expert (t*k + j) % n, distinct within a token because
    k <= n. Made by tensor ops (not from a Python list), so the measure reading's tracker sees them
    born and freed like any activation."""
    return (torch.arange(tokens * k, device=device) % n).view(tokens, k)


def _rows_of(tokens: int, expert: int, k: int, n: int, device):
    """(token, slot) index tensors of the pairs routed to `expert` under balanced routing: the pairs
    p = expert, expert + n, ... below T*k, i.e. token p // k, slot p % k."""
    pair = torch.arange(expert, max(expert, tokens * k), n, device=device)  # empty if no pair reaches it
    return pair // k, pair % k
