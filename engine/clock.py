"""Time, injected. Engine code asks a `Clock`; it never reads the wall clock itself.

`LiveClock` reads `datetime.now(UTC)` (so freezegun controls it in tests); `SimClock` is set
by backtests and replays from event time, which makes their runs deterministic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

import anyio


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class LiveClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class SimClock:
    """A clock that only moves when told to (by event time in backtests)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("SimClock needs a timezone-aware start time")
        self._now = start.astimezone(UTC)
        # Created only while someone sleeps: a backtest sets the clock once per bar.
        self._changed: anyio.Event | None = None

    def now(self) -> datetime:
        return self._now

    def set(self, ts: datetime) -> None:
        """Move to `ts`; time never goes backwards."""
        if ts.tzinfo is None:
            raise ValueError("SimClock.set needs a timezone-aware time")
        if ts > self._now:
            self._now = ts if ts.tzinfo is UTC else ts.astimezone(UTC)
            if self._changed is not None:
                self._changed.set()
                self._changed = None

    def advance(self, delta: timedelta) -> None:
        self.set(self._now + delta)

    async def sleep(self, seconds: float) -> None:
        """Wait until simulated time has moved `seconds` on."""
        until = self._now + timedelta(seconds=seconds)
        while self._now < until:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()
