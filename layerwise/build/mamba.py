"""Torch modules of the Mamba specs (layerwise.blocks.mamba): the selective scan written with
elementwise ops and a loop over positions (HF MambaMixer.slow_forward's arithmetic), so it runs on
any device and under fake tensors; no fused kernel."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def selective_scan(x, dt, a, bm, cm, d):
    """x, dt (B, S, Di); a (Di, N); bm, cm (B, S, N); d (Di,) -> y (B, S, Di)."""
    da = torch.exp(dt.unsqueeze(-1) * a)  # (B, S, Di, N)
    dbx = (dt * x).unsqueeze(-1) * bm.unsqueeze(2)  # (B, S, Di, N)
    h = torch.zeros_like(da[:, 0])  # (B, Di, N)
    ys = []
    for t in range(x.shape[1]):
        h = da[:, t] * h + dbx[:, t]
        ys.append((h * cm[:, t].unsqueeze(1)).sum(-1))  # (B, Di): elementwise, not a matmul
    return torch.stack(ys, dim=1) + x * d


class SelectiveScanModule(nn.Module):
    def __init__(self, d_inner: int, d_state: int):
        super().__init__()
        # S4D-real initialisation (A = -(1..N) per channel), D = 1, as HF MambaMixer
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(d_inner))

    def forward(self, x, dt, bm, cm):
        return selective_scan(x, dt, -torch.exp(self.A_log), bm, cm, self.D)


class MambaMixerModule(nn.Module):
    def __init__(self, spec):
        super().__init__()
        for name, child in spec.children():
            self.add_module(name, child.build())
        self.n_state, self.dt_rank = spec.d_state, spec.dt_rank

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, S, D) -> (B, S, D)
        s = h.shape[1]
        x, z = self.in_proj(h).chunk(2, dim=-1)  # (B, S, Di) each
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :s].transpose(1, 2))  # causal depthwise conv
        dt, bm, cm = self.x_proj(x).split([self.dt_rank, self.n_state, self.n_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))
        y = self.scan(x, dt, bm, cm)
        return self.out_proj(y * F.silu(z))


class MambaBlockModule(nn.Module):
    def __init__(self, children: dict[str, nn.Module]):
        super().__init__()
        for name, module in children.items():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x))
