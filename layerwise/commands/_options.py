"""Options every computing command shares: --threads and --quiet. No torch here."""
from __future__ import annotations

import typer

THREADS_HELP = ("torch threads (default: OMP_NUM_THREADS if set, else 1 for a small step, the idle cores for a "
                "large one; see README, Threads)")


def threads_option():
    return typer.Option(None, "--threads", help=THREADS_HELP)


def quiet_option():
    return typer.Option(False, "--quiet", help="no progress output")
