"""Number and shape formatting shared by the renderers."""
from __future__ import annotations


def count(n: int | float) -> str:
    """1234567 -> '1.23M' (parameters, FLOPs)."""
    n = float(n)
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def nbytes(n: int | float) -> str:
    """Bytes in binary units: 1.50 GiB."""
    n = float(n)
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def shape(s) -> str:
    return "(" + ", ".join(str(d) for d in s) + ")"
