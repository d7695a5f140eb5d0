"""The one user-facing exception type, and its spec/workload flavours.

Every message names the place (file, line or block path) and what was expected; the CLI prints it
in one or two lines and exits 2.
"""
from __future__ import annotations


class LayerwiseError(Exception):
    """Base of every error a user can cause with bad input."""


class SpecError(LayerwiseError):
    """A block spec that is invalid, or two blocks whose shapes do not fit.

    `path` is the block path from the root ("blocks.3.ffn.up"); composites prepend their child's name
    as the error travels up, so the message always says where.
    """

    def __init__(self, message: str, path: tuple[str, ...] = ()):
        self.message = message
        self.path = tuple(path)
        super().__init__(self.__str__())

    def with_prefix(self, name: str) -> "SpecError":
        return SpecError(self.message, (name, *self.path))

    def __str__(self) -> str:
        where = ".".join(self.path)
        return f"{where}: {self.message}" if where else self.message


class WorkloadError(LayerwiseError):
    """A workload setting (batch, sequence, precision, parallelism...) that does not apply."""
