"""Follow an event log by seq: fold every new committed row into the project's projections
and the dashboard's own fold, and wake whoever waits for changes.

It reads through `events.store.LogReader` on its own connection (a reader never blocks the
writer and sees only committed rows), so it works on any log: a running service's, a
finished demo's, a backtest's. It never writes.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from engine.dashboard.fold import DashboardFold
from events.store import LogReader
from projections.state import Projections

log = logging.getLogger(__name__)

BATCH = 5000


class LogFollower:
    def __init__(self, path: Path, *, poll_s: float = 0.25) -> None:
        self.path = path
        self.poll_s = poll_s
        self.proj = Projections()
        self.fold = DashboardFold()
        self.reader = LogReader(path)
        self._changed = anyio.Event()
        self._opened = False
        self.closing = False  # set when the server shuts down: streams end, not hang
        self.caught_up = False  # the log's head at start has been folded

    @property
    def last_seq(self) -> int:
        return self.proj.last_seq

    async def open(self) -> None:
        if not self._opened:
            await self.reader.open()
            self._opened = True

    async def close(self) -> None:
        await self.reader.close()
        self._opened = False

    async def catch_up(self, limit: int | None = None) -> int:
        """Fold the rows committed since the last call (at most `limit`); returns how many.
        Waiters are woken after each batch, so a long catch-up shows progress."""
        await self.open()
        decode = self.reader.codec.decode
        proj, fold = self.proj, self.fold
        n = 0
        to_seq = None if limit is None else proj.last_seq + limit
        rows = self.reader.rows(proj.last_seq + 1, to_seq, batch_size=BATCH)
        async with contextlib.aclosing(rows) as batches:
            async for batch in batches:
                for row in batch:
                    seq = row[0]
                    event = decode(row[2], row[3], row[7], seq)
                    proj.apply(seq, event)
                    fold.apply(seq, event, proj)
                n += len(batch)
                self._wake()
        return n

    def _wake(self) -> None:
        old, self._changed = self._changed, anyio.Event()
        old.set()

    def close_streams(self) -> None:
        self.closing = True
        self._wake()

    async def wait_caught_up(self) -> None:
        while not self.caught_up:
            await self.changed()

    async def changed(self) -> None:
        """Return once events beyond what was folded when called have been folded."""
        await self._changed.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Catch up, tell the caller, then keep following until cancelled. Polling the file
        (its committed head) is the only way a separate process learns of new rows."""
        try:
            # started at once: a long log is caught up in the background (the page shows it
            # arriving), so a service never waits for its dashboard before trading
            task_status.started()
            await self.catch_up()
            self.caught_up = True
            self._wake()
            while True:
                if not await self.catch_up(limit=50_000):
                    await anyio.sleep(self.poll_s)
        finally:
            with anyio.CancelScope(shield=True):
                await self.close()
