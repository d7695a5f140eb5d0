"""Torch modules of the Mamba specs (layerwise.blocks.mamba): the selective scan written with
elementwise ops and a loop over positions (HF MambaMixer.slow_forward's arithmetic), so it runs on
any device and under fake tensors; no fused kernel.

Decoding (inference): the mixer's cache is two tensors per layer, as HF's MambaCache: the conv
state (B, Di, K), the last K inputs of the causal conv, and the scan state h (B, Di, N). A prefill
(start 0) runs the full forward and keeps both; a step (one token) rolls the conv state, runs the
conv as one output position, and advances h once: the same arithmetic as the full forward."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def selective_scan(x, dt, a, bm, cm, d, state=None):
    """x, dt (B, S, Di); a (Di, N); bm, cm (B, S, N); d (Di,) -> y (B, S, Di). `state`: a (B, Di, N)
    tensor to start from (a decode step's cached h) and to receive the last h, in place."""
    da = torch.exp(dt.unsqueeze(-1) * a)  # (B, S, Di, N)
    dbx = (dt * x).unsqueeze(-1) * bm.unsqueeze(2)  # (B, S, Di, N)
    h = torch.zeros_like(da[:, 0]) if state is None or state.pos == 0 else state.h  # (B, Di, N)
    ys = []
    for t in range(x.shape[1]):
        h = da[:, t] * h + dbx[:, t]
        ys.append((h * cm[:, t].unsqueeze(1)).sum(-1))  # (B, Di): elementwise, not a matmul
    if state is not None:
        state.h.copy_(h)
    return torch.stack(ys, dim=1) + x * d


class _State:
    """A layer's decode state while the LM runs it: h (B, Di, N) and the position."""

    def __init__(self, h, pos: int):
        self.h, self.pos = h, pos


class SelectiveScanModule(nn.Module):
    def __init__(self, d_inner: int, d_state: int):
        super().__init__()
        # S4D-real initialisation (A = -(1..N) per channel), D = 1, as HF MambaMixer
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(d_inner))

    def forward(self, x, dt, bm, cm, state=None):
        return selective_scan(x, dt, -torch.exp(self.A_log), bm, cm, self.D, state)


class MambaMixerModule(nn.Module):
    def __init__(self, spec):
        super().__init__()
        for name, child in spec.children():
            self.add_module(name, child.build())
        self.n_state, self.dt_rank = spec.d_state, spec.dt_rank
        self.d_inner, self.d_conv = spec.d_inner, spec.d_conv
        self.kv = None  # (conv state, scan state, position) while a cached decode runs; set by the LM

    def init_state(self, batch: int, dtype: torch.dtype, device) -> list[torch.Tensor]:
        """The conv state (B, Di, K) and the scan state (B, Di, N), zeros."""
        return [torch.zeros(batch, self.d_inner, self.d_conv, dtype=dtype, device=device),
                torch.zeros(batch, self.d_inner, self.n_state, dtype=dtype, device=device)]

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, S, D) -> (B, S, D)
        s = h.shape[1]
        x, z = self.in_proj(h).chunk(2, dim=-1)  # (B, S, Di) each
        state = None
        if self.kv is not None:
            conv_state, ssm_state, pos = self.kv
            state = _State(ssm_state, pos)
            x = self._conv_cached(x, conv_state, pos)
        else:
            x = F.silu(self.conv1d(x.transpose(1, 2))[..., :s].transpose(1, 2))  # causal depthwise conv
        dt, bm, cm = self.x_proj(x).split([self.dt_rank, self.n_state, self.n_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))
        y = self.scan(x, dt, bm, cm, state)
        return self.out_proj(y * F.silu(z))

    def _conv_cached(self, x, conv_state, pos: int):
        """x (B, S, Di) -> silu(conv(x)); keeps the last K inputs in conv_state (B, Di, K). A prefill
        (pos 0) convolves as the full forward; a step convolves its one position over the state."""
        s, k = x.shape[1], self.d_conv
        xt = x.transpose(1, 2)  # (B, Di, S)
        if pos == 0:
            conv_state.zero_()
            keep = min(s, k)
            conv_state[:, :, k - keep:] = xt[:, :, s - keep:]
            return F.silu(self.conv1d(xt)[..., :s].transpose(1, 2))
        if s != 1:
            raise ValueError(f"a Mamba decode takes a prefill at position 0 or one token at a time, got {s} "
                             f"tokens at position {pos}")
        conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
        conv_state[:, :, -1:] = xt
        out = F.conv1d(conv_state, self.conv1d.weight, self.conv1d.bias, groups=self.d_inner)  # (B, Di, 1)
        return F.silu(out.transpose(1, 2))


class MambaBlockModule(nn.Module):
    def __init__(self, children: dict[str, nn.Module]):
        super().__init__()
        for name, module in children.items():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x))
