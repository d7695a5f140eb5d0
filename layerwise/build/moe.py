"""The mixture-of-experts module built from a `moe` spec: real token-choice top-k routing.

Routing is a run-time setting (`build.runtime.set_moe_routing`), never part of the spec:
  learned   softmax(router logits), top_k, renormalised (Mixtral)
  balanced  token t goes to experts (t*top_k + j) % n_experts, j < top_k, weighted by the same
            renormalised router probabilities at those experts. Data-independent shapes, so it runs
            under FakeTensorMode / on the meta device, and every expert gets an equal share.
Either way exactly top_k * T (token, expert) pairs are computed, so FLOPs do not depend on it.
"""
from __future__ import annotations

import torch
from torch import nn

from layerwise.build.ffn import build_linear

ROUTINGS = ("learned", "balanced")


class MoEModule(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.top_k, self.n_experts = spec.top_k, spec.n_experts
        self.routing = "learned"
        self.router = build_linear(spec.router, None)
        self.experts = nn.ModuleList(e.build() for e in spec.experts)
        self.shared_expert = spec.shared_expert.build() if spec.shared_expert is not None else None
        gate = spec.shared_expert_gate
        self.shared_expert_gate = build_linear(gate, None) if gate is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., d_model)
        flat = x.reshape(-1, x.shape[-1])  # (T, d)
        probs = self.router(flat).float().softmax(dim=-1)  # (T, E), fp32 as Mixtral
        if self.routing == "balanced":
            slots = _balanced(flat.shape[0], self.top_k, self.n_experts)
            idx = torch.tensor(slots, dtype=torch.long, device=x.device).view(-1, self.top_k)
            weights = probs.gather(1, idx)
        else:
            weights, idx = probs.topk(self.top_k, dim=-1)  # (T, k)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            if self.routing == "balanced":
                tok, slot = _rows_of(slots, e, self.top_k, x.device)
            else:
                tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            y = expert(flat[tok]) * weights[tok, slot, None]  # (n_e, d)
            out = out.index_add(0, tok, y)
        if self.shared_expert is not None:
            shared = self.shared_expert(flat)
            if self.shared_expert_gate is not None:  # Qwen2-MoE: (T, 1) sigmoid gate
                shared = torch.sigmoid(self.shared_expert_gate(flat)) * shared
            out = out + shared
        return out.view_as(x)


def _balanced(tokens: int, k: int, n: int) -> list[int]:
    """Expert ids, token-major (T*k,): distinct within a token because k <= n."""
    return [(t * k + j) % n for t in range(tokens) for j in range(k)]


def _rows_of(slots: list[int], expert: int, k: int, device):
    """(token, slot) index tensors of the pairs routed to `expert`, computed in Python."""
    pairs = [divmod(i, k) for i, e in enumerate(slots) if e == expert]
    tok = torch.tensor([p[0] for p in pairs], dtype=torch.long, device=device)
    slot = torch.tensor([p[1] for p in pairs], dtype=torch.long, device=device)
    return tok, slot
