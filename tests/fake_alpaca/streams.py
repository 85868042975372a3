"""Helpers to run alpaca-py's websocket clients against the fake and collect what they get.

Two ways to run ``TradingStream`` / ``StockDataStream`` (both work, both are tested):

* ``StreamThread(stream, fake)``: ``stream.run()`` (which calls ``asyncio.run``) in a
  daemon thread. ``stop()`` calls ``stream.stop()`` and then drops the fake's sockets,
  because the SDK only notices a stop request between two ``recv()`` calls, which wait
  up to 5 s when nothing arrives.
* ``start_stream_task(stream)`` / ``stop_stream_task(stream, task)``: await the private
  ``stream._run_forever()`` as a task on *your* loop, then cancel it and ``close()`` the
  socket. Do not call ``stream.subscribe_*`` / ``stream.stop()`` from that loop while it
  runs: they block on ``run_coroutine_threadsafe(...).result()`` for the same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, Self


class Collector:
    """Thread-safe sink for stream callbacks: ``stream.subscribe_trade_updates(col.handler)``."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    async def handler(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Any]], Any], timeout: float = 5.0) -> Any:
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate(self.items), timeout)
            if not ok:
                raise TimeoutError(
                    f"collector: condition not met after {timeout}s; have {len(self.items)} item(s)"
                )
            return ok

    def wait_count(self, n: int, timeout: float = 5.0) -> list[Any]:
        self.wait_for(lambda items: len(items) >= n, timeout)
        return self.snapshot()

    async def async_wait_count(self, n: int, timeout: float = 5.0) -> list[Any]:
        return await asyncio.to_thread(self.wait_count, n, timeout)

    def snapshot(self) -> list[Any]:
        with self._cond:
            return list(self.items)


class StreamThread:
    """Run an alpaca-py stream's blocking ``run()`` in a daemon thread."""

    def __init__(self, stream: Any, fake: Any = None) -> None:
        self.stream = stream
        self.fake = fake
        self.thread = threading.Thread(target=stream.run, name="alpaca-stream", daemon=True)

    def start(self) -> StreamThread:
        self.thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        stream = self.stream
        deadline_loop = 0
        # the SDK sets _loop inside run(); wait until it is there so stop() can reach it
        while (
            getattr(stream, "_loop", None) is None
            and self.thread.is_alive()
            and deadline_loop < 200
        ):
            self.thread.join(0.01)
            deadline_loop += 1
        loop = getattr(stream, "_loop", None)
        if loop is not None and loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(stream.stop_ws(), loop).result(5)
        if self.fake is not None:
            kind = "trade" if type(stream).__name__ == "TradingStream" else "data"
            with contextlib.suppress(Exception):
                (self.fake.drop_trade_streams if kind == "trade" else self.fake.drop_data_streams)()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError("alpaca stream thread did not stop")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_stream_task(stream: Any) -> asyncio.Task:
    """Run ``stream._run_forever()`` on the current loop (subscribe handlers first)."""
    return asyncio.get_running_loop().create_task(stream._run_forever())


async def stop_stream_task(stream: Any, task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await stream.close()
