"""Bars from a recorded event log: the `BarReceived` events it holds, in log order.

This is how a live session is replayed: the bars it accepted come back exactly as recorded
(they were validated once already, but the replay's validator checks them again, which is
cheap and catches a log stitched from overlapping runs).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Iterable

from events.catalogue import BarReceived
from events.codec import Codec
from events.store import LogReader

from .types import BarProvider, MarketItem


class RecordedLogProvider(BarProvider):
    """`from_seq`/`to_seq` bound the rows read; `symbols` keeps only those symbols (using
    the log's indexed symbol column, so other rows are not even decoded)."""

    def __init__(self, path: str | os.PathLike[str], *, from_seq: int = 1,
                 to_seq: int | None = None, symbols: Iterable[str] | None = None,
                 codec: Codec | None = None, batch_size: int = 5000) -> None:
        self.path = path
        self.name = "recorded"
        self._from = from_seq
        self._to = to_seq
        self._symbols = sorted(set(symbols)) if symbols is not None else None
        self._codec = codec
        self._batch = batch_size

    async def stream(self) -> AsyncGenerator[MarketItem, None]:
        if self._symbols is not None and not self._symbols:
            return
        async with LogReader(self.path, self._codec) as reader:
            async for _seq, event in reader.read(self._from, self._to, types=("bar",),
                                                 symbols=self._symbols, batch_size=self._batch):
                if isinstance(event, BarReceived):
                    yield event.bar
