"""Interpreter-wide settings a simulation changes while it runs (the GIL switch interval,
automatic garbage collection), counted so that overlapping runs in one process compose.

Each run saving the value it found and restoring it at its end breaks as soon as two runs
overlap without nesting: the first to finish restores the original while the other still
runs, and the last to finish then "restores" the value the first one set, for good. Here
the first run in applies the change, later ones only count themselves, and the last run out
restores what the first found. The count is module state because what it guards is the
interpreter's own state: one per process either way."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Restore = Callable[[], None]


class Override:
    """One interpreter setting, held by however many runs need it at once."""

    def __init__(self) -> None:
        self._holders = 0
        self._restore: Restore | None = None

    @property
    def held(self) -> bool:
        return self._holders > 0

    @contextmanager
    def hold(self, apply: Callable[[], Restore]) -> Iterator[None]:
        """`apply()` changes the setting and returns how to undo it; it runs only if no
        other run holds the setting already (their change stands)."""
        if self._holders == 0:
            self._restore = apply()
        self._holders += 1
        try:
            yield
        finally:
            self._holders -= 1
            if self._holders == 0 and self._restore is not None:
                restore, self._restore = self._restore, None
                restore()
