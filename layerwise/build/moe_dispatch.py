"""Capacity-bounded dispatch and combine of a MoE layer (GShard, arXiv 2006.16668, sec. 2.2;
Switch Transformer, arXiv 2101.03961, sec. 2.2), with data-independent shapes (so it runs under
FakeTensorMode and its memory is the same for every routing).

Legend: T tokens, k top_k, E experts, C capacity, d d_model; a "pair" is a (token, choice).
Pairs are queued choice-major (pair p = j*T + t: all first choices, in token order, then all second
choices...), so a token's first choice wins a slot before any token's second choice. A pair's slot is
its rank among the earlier pairs to the same expert; slots >= C overflow: the pair is dropped, i.e.
sent to a spare zero row, and adds nothing to the output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def positions(order: torch.Tensor, n_experts: int) -> torch.Tensor:
    """(P,) expert of each pair -> (P,) its rank among the earlier pairs to the same expert."""
    onehot = F.one_hot(order, n_experts)  # (P, E) int64
    ranks = onehot.cumsum(0)  # (P, E): pairs to each expert so far, this one included
    return ranks.gather(1, order[:, None]).squeeze(1) - 1


def capacity_combine(experts, flat: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor, cap: int,
                     count_dropped: bool = False):
    """out (T, d) = sum over kept pairs of weight * expert(token), and the dropped pair count.

    flat (T, d); idx, weights (T, k). Dispatch: the kept pairs' tokens are copied into a (E*C + 1, d)
    buffer (row e*C + slot; the last row is the dropped pairs' spare); expert e runs on its C rows,
    padding included. Combine: each pair reads its expert's output row (dropped: a zero row),
    times its weight, summed over the k choices. The count (0-dim int64) only if `count_dropped`."""
    t, d = flat.shape
    k, n = idx.shape[1], len(experts)
    order = idx.t().reshape(-1)  # (kT,) expert of each pair, choice-major
    pos = positions(order, n)
    dest = order * cap + pos  # (kT,) buffer row
    over = pos >= cap
    dest.masked_fill_(over, n * cap)  # dropped -> the spare row
    tok = torch.arange(t, device=flat.device).repeat(k)  # (kT,) token of each pair
    buf = flat.new_zeros(n * cap + 1, d)
    buf.index_copy_(0, dest, flat[tok])  # (E*C + 1, d): the capacity buffers
    ys = [expert(buf[e * cap:(e + 1) * cap]) for e, expert in enumerate(experts)]  # E x (C, d)
    out_rows = torch.cat([*ys, ys[0].new_zeros(1, d)])  # (E*C + 1, d)
    del ys
    gathered = out_rows[dest]  # (kT, d)
    del out_rows
    mixed = gathered * weights.t().reshape(-1, 1)  # (kT, d)
    return mixed.view(k, t, d).sum(0), (over.sum() if count_dropped else None)
