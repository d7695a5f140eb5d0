"""Blockwise 8-bit Adam in plain torch, with the state layout of `bitsandbytes.optim.Adam8bit`.

Why not bitsandbytes itself: its 8-bit update is a CUDA kernel (the CPU wheels only quantize
weights), and its ops have no fake-tensor implementation, so the measure reading could not run it.
What the measure reading needs is bitsandbytes' *state allocation*, which this class reproduces
(bitsandbytes 0.45-0.48 `Optimizer2State.init_state`, optim_bits=8, block_wise=True):

  a parameter with numel >= min_8bit_size (4096):
    state1, state2   uint8, the parameter's shape      (exp_avg, exp_avg_sq; 1 byte per element)
    absmax1, absmax2 fp32, (ceil(numel / 256),)         (one scale per 256-element block each)
    qmap1, qmap2     fp32, (256,)                       (the signed / unsigned dynamic maps,
                                                         one pair shared by every parameter)
  a smaller parameter: state1, state2 fp32 like the parameter (bitsandbytes keeps those 32-bit);
  `step` is a Python int (no tensor).

The update is Adam's (Kingma & Ba; bias-corrected, decoupled weight decay when asked), computed in
fp32 on chunks of CHUNK elements (whole 256-blocks): dequantize the chunk's two states, update, write
the parameter, re-quantize blockwise (absmax per block, nearest code of the dynamic map). Working
on chunks bounds the step's temporaries as bitsandbytes' kernel bounds them (it holds a block in
registers); ours are a few fp32 copies of one chunk, which the cost reading counts
(layerwise/cost/optimizers.py `ADAM8BIT_TEMP_COPIES`).

The maps are ours (256 codes: 0 and log-spaced magnitudes from 1e-7 to 1, signed or on [0, 1]);
bitsandbytes' dynamic tree map has the same size and range.
"""
from __future__ import annotations

import math

import torch

BLOCKSIZE = 256  # bitsandbytes' blockwise optimizer block (Optimizer2State.init_state: blocksize = 256)
MIN_8BIT_SIZE = 4096  # bitsandbytes' min_8bit_size default: smaller tensors keep fp32 states
CHUNK = 4096 * BLOCKSIZE  # elements updated at once (1 Mi): bounds the step's temporaries
_TINY = 1e-12


def dynamic_map(signed: bool) -> torch.Tensor:
    """256 sorted codes: 0 and log-spaced magnitudes from 1e-7 to 1, both signs when `signed`
    (128 positive, 127 negative), else 255 positive."""
    if signed:
        mags = torch.logspace(-7, 0, 128, dtype=torch.float64)
        codes = torch.cat([torch.zeros(1, dtype=torch.float64), mags, -mags[1:]])
    else:
        codes = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-7, 0, 255, dtype=torch.float64)])
    return torch.sort(codes).values.float()


class Adam8bit(torch.optim.Optimizer):
    """Adam with 8-bit blockwise states (bitsandbytes' layout, see the module docstring)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, min_8bit_size: int = MIN_8BIT_SIZE):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, min_8bit_size=min_8bit_size)
        super().__init__(params, defaults)
        self._maps: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _qmaps(self, device):
        """(signed map, unsigned map) on `device`, made once and shared by every parameter."""
        if device not in self._maps:
            self._maps[device] = (dynamic_map(True).to(device), dynamic_map(False).to(device))
        return self._maps[device]

    def _init_state(self, p: torch.Tensor, min_8bit_size: int) -> dict:
        if p.numel() < min_8bit_size:
            return {"step": 0, "state1": torch.zeros_like(p, dtype=torch.float32),
                    "state2": torch.zeros_like(p, dtype=torch.float32)}
        blocks = -(-p.numel() // BLOCKSIZE)
        signed, unsigned = self._qmaps(p.device)
        return {"step": 0, "state1": torch.zeros_like(p, dtype=torch.uint8), "qmap1": signed,
                "state2": torch.zeros_like(p, dtype=torch.uint8), "qmap2": unsigned,
                "absmax1": torch.zeros(blocks, dtype=torch.float32, device=p.device),
                "absmax2": torch.zeros(blocks, dtype=torch.float32, device=p.device)}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(self._init_state(p, group["min_8bit_size"]))
                state["step"] += 1
                self._update(p, state, group)
        return loss

    def _update(self, p: torch.Tensor, state: dict, group: dict) -> None:
        b1, b2 = group["betas"]
        t = state["step"]
        step_size = group["lr"] / (1 - b1 ** t)
        bc2_sqrt = math.sqrt(1 - b2 ** t)
        flat_p, flat_g = p.view(-1), p.grad.view(-1)
        eight = state["state1"].dtype == torch.uint8
        s1, s2 = state["state1"].view(-1), state["state2"].view(-1)
        for start in range(0, flat_p.numel(), CHUNK):
            end = min(start + CHUNK, flat_p.numel())
            g = flat_g[start:end].float()
            if eight:
                blocks = slice(start // BLOCKSIZE, -(-end // BLOCKSIZE))
                m = self._dequant(s1[start:end], state["absmax1"][blocks], state["qmap1"])
                v = self._dequant(s2[start:end], state["absmax2"][blocks], state["qmap2"])
            else:
                m, v = s1[start:end], s2[start:end]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            del g
            if group["weight_decay"]:
                flat_p[start:end].mul_(1 - group["lr"] * group["weight_decay"])
            denom = v.sqrt().div_(bc2_sqrt).add_(group["eps"])
            flat_p[start:end].addcdiv_(m, denom, value=-step_size)
            del denom
            if eight:
                self._quant(m, s1[start:end], state["absmax1"][blocks], state["qmap1"])
                self._quant(v, s2[start:end], state["absmax2"][blocks], state["qmap2"])
            del m, v  # before the next chunk's are made

    @staticmethod
    def _dequant(codes: torch.Tensor, absmax: torch.Tensor, qmap: torch.Tensor) -> torch.Tensor:
        """fp32 values of a chunk: qmap[code] * its block's absmax (scaled in place)."""
        vals = qmap.index_select(0, codes.int())
        for part, scale in _blocks(vals, absmax):
            part.mul_(scale)
        return vals

    @staticmethod
    def _quant(vals: torch.Tensor, codes: torch.Tensor, absmax: torch.Tensor, qmap: torch.Tensor) -> None:
        """Blockwise: absmax per block, then the nearest code of vals / absmax. Consumes vals."""
        for part, scale in _blocks(vals, absmax):
            scale.copy_(part.abs().amax(-1, keepdim=True).view(scale.shape))
            part.div_(scale.clamp(min=_TINY))
        mids = (qmap[1:] + qmap[:-1]) / 2  # nearest code = the bucket between midpoints
        codes.copy_(torch.searchsorted(mids, vals, out_int32=True))


def _blocks(vals: torch.Tensor, absmax: torch.Tensor):
    """(values, their scales) as broadcastable views: the whole blocks, then a partial last one."""
    whole = vals.numel() // BLOCKSIZE
    if whole:
        yield vals[: whole * BLOCKSIZE].view(whole, BLOCKSIZE), absmax[:whole].view(whole, 1)
    if vals.numel() > whole * BLOCKSIZE:
        yield vals[whole * BLOCKSIZE:], absmax[whole:whole + 1]
