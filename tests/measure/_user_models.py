"""Small user modules for the FILE.py:factory tests: each is what a user's file might hold."""
import torch
from torch import nn


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 100, d_model: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, ids):  # (B, S) -> (B, S, vocab)
        h = self.embed(ids)
        return self.head(h + self.mlp(h))


class Picky(nn.Module):
    """Keeps only the positive entries: an output shape that depends on the values."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        h = self.proj(x)
        return h[h > 0].sum() + h.sum()


class Stack(nn.Module):
    def __init__(self, d: int = 64, n: int = 4):
        super().__init__()
        self.first = nn.Linear(d, d)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(d, d), nn.ReLU()) for _ in range(n))

    def forward(self, x):
        x = self.first(x)
        for block in self.blocks:
            x = x + block(x)
        return x


def tiny_lm():
    return TinyLM()


def picky():
    return Picky()


def stack():
    return Stack()


def broken():
    raise ValueError("n_layers must be even\nsecond line")


def not_a_module():
    return torch.zeros(3)


def billion():
    """60 x Linear(4096, 4096): 1.0B parameters, 4 GB of fp32 weights if it were ever allocated."""
    return nn.Sequential(*[nn.Linear(4096, 4096) for _ in range(60)])
