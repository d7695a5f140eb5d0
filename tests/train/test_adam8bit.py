"""layerwise.train.adam8bit: an 8-bit blockwise Adam that optimizes like torch's Adam and keeps
bitsandbytes' state layout (uint8 moments, fp32 absmax per 256-block, fp32 below 4096 elements)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from layerwise.train import adam8bit  # noqa: E402
from layerwise.train.adam8bit import BLOCKSIZE, Adam8bit, dynamic_map  # noqa: E402


def test_state_layout_follows_bitsandbytes():
    big, small = torch.nn.Parameter(torch.zeros(70, 100)), torch.nn.Parameter(torch.zeros(10, 10))
    big.grad, small.grad = torch.ones_like(big), torch.ones_like(small)
    opt = Adam8bit([big, small])
    opt.step()
    st = opt.state[big]
    assert st["state1"].dtype == st["state2"].dtype == torch.uint8 and st["state1"].shape == big.shape
    assert st["absmax1"].shape == st["absmax2"].shape == (-(-7000 // BLOCKSIZE),)
    assert st["qmap1"].numel() == st["qmap2"].numel() == 256 and st["step"] == 1
    assert opt.state[small]["state1"].dtype == torch.float32  # under min_8bit_size: 32-bit
    assert "qmap1" not in opt.state[small] and "absmax1" not in opt.state[small]


def test_maps_are_sorted_256_codes_with_zero_and_one():
    for signed in (True, False):
        m = dynamic_map(signed)
        assert m.numel() == 256 and torch.all(m[1:] >= m[:-1])
        assert 0.0 in m.tolist() and m.max() == 1.0 and (m.min() == -m.max() if signed else m.min() == 0)


@pytest.mark.parametrize("shape", [(64, 80), (3 * 1024 + 300,)])  # one chunk; 4 chunks, a partial block
def test_it_optimizes_like_adam(shape, monkeypatch):
    """A least-squares fit: after 40 steps the 8-bit run is close to torch.optim.Adam's."""
    monkeypatch.setattr(adam8bit, "CHUNK", 4 * BLOCKSIZE)  # several chunks without a big tensor
    torch.manual_seed(0)
    target = torch.randn(shape)
    runs = {}
    for name, cls in (("adam", torch.optim.Adam), ("adam8bit", Adam8bit)):
        p = torch.nn.Parameter(torch.zeros(shape))
        opt = cls([p], lr=0.05, **({"min_8bit_size": 1024} if cls is Adam8bit else {}))
        for _ in range(40):
            opt.zero_grad()
            ((p - target) ** 2).sum().backward()
            opt.step()
        runs[name] = p.detach()
    start = (target ** 2).mean()
    err = ((runs["adam8bit"] - runs["adam"]) ** 2).mean()
    assert ((runs["adam8bit"] - target) ** 2).mean() < 0.5 * start  # it learns
    assert err < 0.01 * start  # and follows Adam
