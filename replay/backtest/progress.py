"""Progress for long runs: `rich` bars on a terminal, one short summary line otherwise.

Progress goes to stderr, so stdout stays the report (and `--json` stays parseable)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class Progress:
    """Named tasks with a total (or None); `advance`/`update` them; `close` prints the summary
    when there was no bar to look at."""

    def __init__(self, *, stream: TextIO | None = None, force_terminal: bool | None = None,
                 label: str = "") -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if force_terminal is None else force_terminal
        self.label = label
        self._t0 = time.monotonic()  # for the summary's duration (a CLI, not engine code)
        self._rich: Any = None
        self._tasks: dict[str, Any] = {}
        self._done: dict[str, float] = {}
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(file=self.stream, force_terminal=True), transient=False)
            self._rich.start()

    def add(self, key: str, description: str, total: float | None) -> None:
        self._done[key] = 0
        if self._rich is not None:
            self._tasks[key] = self._rich.add_task(description, total=total)

    def update(self, key: str, completed: float, total: float | None = None) -> None:
        self._done[key] = completed
        if self._rich is not None and key in self._tasks:
            kw = {"total": total} if total is not None else {}
            self._rich.update(self._tasks[key], completed=completed, **kw)

    def advance(self, key: str, n: float = 1) -> None:
        self.update(key, self._done.get(key, 0) + n)

    def close(self, summary: str | None = None) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif summary:
            took = time.monotonic() - self._t0
            self.stream.write(f"{summary} in {took:.1f} s\n")
            self.stream.flush()


@contextmanager
def progress(**kw: Any) -> Iterator[Progress]:
    p = Progress(**kw)
    try:
        yield p
    finally:
        p.close()
