"""What every market-data provider yields, and the base class providers share.

A provider turns some source (a file, a recorded log, Alpaca) into ONE async iterator of
`Bar | BadInput`. `Bar` is the validated contract from `events.market`; `BadInput` is whatever
could not even become a `Bar` (an unparsable number, a naive timestamp, an OHLC range the
contract refuses...). Providers never drop bad input silently and never raise for one bad
row: they hand it on so `BarValidator` can record it as a `DataRejected` event and carry on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Iterator, Mapping
from contextlib import aclosing
from datetime import datetime
from types import TracebackType
from typing import Self, TypeAlias

import anyio
import msgspec

from events.market import BAR_REJECT_CODES, Bar

# Reasons a provider gives for input that never became a Bar. The contract's own codes
# (`BAR_REJECT_CODES`) are passed through unchanged when `Bar(...)` refuses a row.
INPUT_REJECT_CODES = (
    "MISSING_FIELD",
    "BAD_NUMBER",
    "BAD_TIMESTAMP",
    "NOT_A_TRADING_DAY",
    "AMBIGUOUS_TIMESTAMP",
    "NONEXISTENT_TIMESTAMP",
    "BAD_ROW",
    "UNSUPPORTED_MESSAGE",
    "BACKFILL_FAILED",
    *BAR_REJECT_CODES,
)


class BadInput(msgspec.Struct, frozen=True, kw_only=True):
    """Provider output that could not become a `Bar`.

    `reason` is a stable code (see `INPUT_REJECT_CODES`), `detail` a sentence for humans, `raw`
    the input as it arrived (a CSV line, a JSON rendering of a message) so it can be inspected.
    """

    reason: str
    detail: str
    raw: str = ""
    symbol: str | None = None
    provider: str = ""


MarketItem: TypeAlias = Bar | BadInput


class DataFileError(ValueError):
    """A data file that cannot be read at all (missing columns, unsupported column types).

    Unlike a bad row, this is a configuration problem, so it is raised rather than yielded.
    """


class ProviderError(RuntimeError):
    """A provider that cannot go on (e.g. its upstream refused every request)."""


class BarProvider(ABC):
    """One source of bars.

    Use it as `async with provider: async for item in provider.stream(): ...`. File and log
    providers need no setup, so `async with` is a no-op for them; live providers own background
    tasks (a websocket, a watchdog) that live exactly as long as the `async with` block.
    Iterate `stream()` once per `async with` (wrap it in `contextlib.aclosing` if you may stop
    early, so files and cursors are closed promptly).
    """

    name: str = "provider"

    def resume_from(self, last_bars: Mapping[str, datetime]) -> None:
        """A previous run's last bar start per symbol (from the log). Live providers fill
        what was published since; files and replays have nothing to fill."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    @abstractmethod
    def stream(self) -> AsyncGenerator[MarketItem, None]:
        """Bars (and bad input) in the order the source has them."""


async def batches_from_thread(batches: Iterator[list[MarketItem]]
                              ) -> AsyncGenerator[list[MarketItem], None]:
    """The batches of a blocking batch generator (a file reader), each pulled in a worker
    thread so the event loop never waits on disk or parsing; closes it on the way out."""
    try:
        while True:
            batch = await anyio.to_thread.run_sync(next, batches, None)
            if batch is None:
                return
            yield batch
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(batches.close)  # type: ignore[attr-defined]


async def items_from_thread(batches: Iterator[list[MarketItem]]) -> AsyncGenerator[MarketItem, None]:
    """`batches_from_thread`, an item at a time."""
    async with aclosing(batches_from_thread(batches)) as each:
        async for batch in each:
            for item in batch:
                yield item
