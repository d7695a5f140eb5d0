"""The shared rich consoles: results to stdout, errors and progress to stderr."""
from __future__ import annotations

import json
import sys

from rich.console import Console

# Piped output (files, CI logs, README examples) gets 120 columns instead of rich's 80, so exact
# byte counts are never cut; a terminal keeps its own width.
_PIPED_WIDTH = None if sys.stdout.isatty() else 120
out = Console(soft_wrap=True, width=_PIPED_WIDTH)
err = Console(stderr=True, soft_wrap=True)


def error(message: str) -> None:
    """A user-facing error: one or two lines on stderr, no traceback."""
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)  # "layerwise[hf]" stays


def print_json(data) -> None:
    """Stable JSON on stdout (integers stay integers)."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)
