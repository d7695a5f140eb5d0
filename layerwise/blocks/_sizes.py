"""Int-or-tuple size fields (kernel, stride, padding, ...) of conv and pool blocks, checked where
they enter, and the output-size arithmetic torch uses for them."""
from __future__ import annotations

from layerwise.spec.errors import SpecError


def normalize_lists(block, *names: str) -> None:
    """Lists (from Python callers) become tuples, so the frozen spec stays hashable and equal to
    what a spec file loads (io turns YAML lists into tuples)."""
    for name in names:
        value = getattr(block, name)
        if isinstance(value, list):
            object.__setattr__(block, name, tuple(value))


def sizes(block, name: str, n: int, minimum: int = 1) -> tuple[int, ...]:
    """Field `name` as `n` ints >= minimum: an int is repeated, a tuple must have n items."""
    value = getattr(block, name)
    items = value if isinstance(value, tuple) else (value,) * n
    ok = len(items) == n and all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in items)
    if not ok:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        form = what if n == 1 else f"{what} or a list of {n} of them"
        raise SpecError(f"{block.type_name}.{name} must be {form}, got {value!r}")
    return tuple(items)


def window_out(length: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output length of a sliding window (conv, pool; floor mode), as torch computes it.
    Callers check `length + 2 * padding >= dilation * (kernel - 1) + 1` first."""
    return (length + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def check_window(block, in_shape, spatial, kernel, padding, dilation) -> None:
    """The (dilated) window must fit in the padded input along every spatial dim."""
    for i, (length, k, p, d) in enumerate(zip(spatial, kernel, padding, dilation)):
        span = d * (k - 1) + 1
        if length + 2 * p < span:
            dil = f" (dilated to {span})" if d > 1 else ""
            raise SpecError(
                f"{block.type_name}: kernel {k}{dil} is larger than the padded input along spatial dim {i}: "
                f"{length} + 2*{p} < {span} (input shape {tuple(in_shape)})"
            )


def adaptive_bins(length: int, out: int) -> int:
    """Sum of the bin sizes adaptive pooling uses to map `length` to `out` (torch's
    start = floor(i*L/O), end = ceil((i+1)*L/O)); = length when out divides length."""
    return sum(-(-(i + 1) * length // out) - (i * length // out) for i in range(out))
