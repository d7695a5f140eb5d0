"""Progress of long commands, on stderr: a rich bar on a terminal; off a terminal (a pipe, a file,
CI) plain lines every few seconds with the count, the elapsed time and the ETA, which read well in a
log. `quiet` silences both.

    with counted("evaluate", total=len(loader), unit="batches") as bar:
        evaluate(..., on_batch=bar.advance)
    with phases("measure llama-2-7b") as ph:   # work without a count: elapsed time, phase names
        ph.phase("building"); ...
"""
from __future__ import annotations

import threading
import time

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from layerwise.report.console import err

EVERY_S = 5.0  # seconds between plain lines when piped
QUICK_S = 2.0  # piped: a command done sooner than this prints no closing line


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class Counted:
    """A known amount of work: advance(n, info) as it is done."""

    def __init__(self, label: str, total: int | None, unit: str = "", quiet: bool = False, every: float | None = None):
        self.label, self.total, self.unit, self.quiet = label, total, unit, quiet
        self.every = EVERY_S if every is None else every
        self.done, self.base, self.info, self.bar, self.task = 0, 0, "", None, None
        self.t0 = self.last = 0.0

    def __enter__(self) -> "Counted":
        self.t0 = self.last = time.perf_counter()
        if not self.quiet and err.is_terminal:
            self.bar = Progress(TextColumn(f"[bold]{escape(self.label)}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                TimeRemainingColumn(), console=err, transient=False)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total, info="")
        return self

    def start_at(self, done: int) -> None:
        """Work already done before this process (a resumed run): not counted in the rate."""
        self.done = self.base = done
        if self.bar is not None:
            self.bar.update(self.task, completed=done)

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.update(self.done + n, info)

    def update(self, done: int, info: str | None = None) -> None:
        self.done = done
        if info is not None:
            self.info = info
        if self.bar is not None:
            self.bar.update(self.task, completed=done, info=self.info)
        elif not self.quiet and time.perf_counter() - self.last >= self.every:
            self.last = time.perf_counter()
            self._line()

    def print(self, text: str) -> None:
        """A line that stays above the bar (or between the plain lines)."""
        if not self.quiet:
            (self.bar.console if self.bar else err).print(text, highlight=False)

    def _line(self, final: bool = False) -> None:
        elapsed = time.perf_counter() - self.t0
        count = f"{self.done:,}" + (f"/{self.total:,}" if self.total else "") + (f" {self.unit}" if self.unit else "")
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = ""
        rate_done = self.done - self.base
        if not final and self.total and rate_done > 0:
            eta = f", ETA {_clock(elapsed / rate_done * (self.total - self.done))}"
        info = f", {self.info}" if self.info else ""
        err.print(f"{self.label}: {'done ' if final else ''}{count}{pct}, {_clock(elapsed)} elapsed{eta}{info}",
                  highlight=False, markup=False)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
        elif not self.quiet and exc[0] is None and time.perf_counter() - self.t0 >= QUICK_S:
            self._line(final=True)


def counted(label: str, total: int | None, unit: str = "", quiet: bool = False) -> Counted:
    return Counted(label, total, unit, quiet)


class Phases:
    """Work without a count: a spinner with the current phase on a terminal; piped, a line when a
    phase starts and a still-running line every EVERY_S seconds."""

    def __init__(self, label: str, quiet: bool = False, every: float | None = None):
        self.label, self.quiet = label, quiet
        self.every = EVERY_S if every is None else every
        self.current, self.status, self.stop = "", None, threading.Event()
        self.t0 = 0.0

    def phase(self, name: str) -> None:
        self.current = name
        if self.quiet:
            return
        if self.status is not None:
            self.status.update(f"{escape(self.label)}: {escape(name)}...")
        else:
            err.print(f"{self.label}: {name} ({_clock(time.perf_counter() - self.t0)} elapsed)", highlight=False,
                      markup=False)

    def _tick(self) -> None:
        while not self.stop.wait(self.every):
            what = f" ({self.current})" if self.current else ""
            err.print(f"{self.label}: still running{what}, {_clock(time.perf_counter() - self.t0)} elapsed",
                      highlight=False, markup=False)

    def __enter__(self) -> "Phases":
        self.t0 = time.perf_counter()
        if self.quiet:
            return self
        if err.is_terminal:
            self.status = err.status(f"{escape(self.label)}...")
            self.status.__enter__()
        else:
            threading.Thread(target=self._tick, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.status is not None:
            self.status.__exit__(*exc)
        if not self.quiet and exc[0] is None and time.perf_counter() - self.t0 >= QUICK_S:
            err.print(f"{self.label}: done in {_clock(time.perf_counter() - self.t0)}", highlight=False, markup=False)


def phases(label: str, quiet: bool = False) -> Phases:
    return Phases(label, quiet)

