"""Historical bars from Alpaca (`StockHistoricalDataClient.get_stock_bars`, alpaca-py 0.44).

The SDK call is blocking (requests), so it runs in a worker thread. The SDK follows
`next_page_token` itself but collects every page before returning, so a long range is asked
for in time chunks (`chunk`, default one day): memory stays bounded and bars flow while later
chunks load. Within a chunk Alpaca groups bars by symbol; they are re-ordered by
(start, symbol) so a multi-symbol stream is in time order.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import anyio

from events.market import Bar

from .alpaca_convert import bar_from_alpaca, bar_from_model
from .types import BadInput, BarProvider, MarketItem

Feed = Literal["iex", "sip"]
_FIRST = datetime.min.replace(tzinfo=UTC)


def _key(item: MarketItem) -> tuple[datetime, str]:
    if isinstance(item, Bar):
        return item.start, item.symbol
    return _FIRST, item.symbol or ""


class AlpacaHistory:
    """Fetching one range of 1-minute (or `minutes`-minute) bars, as a plain async call.

    Shared by `AlpacaHistoryProvider` and the live provider's backfill.
    """

    def __init__(self, client: Any, *, feed: Feed = "iex", minutes: int = 1,
                 provider: str = "alpaca-history", adjustment: str | None = None,
                 request_timeout: float | None = 30.0) -> None:
        if feed not in ("iex", "sip"):
            raise ValueError(f"feed must be 'iex' or 'sip', got {feed!r}")
        if minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {minutes}")
        self.client = client
        self.feed = feed
        self.minutes = minutes
        self.interval_s = 60 * minutes
        self.provider = provider
        self.adjustment = adjustment
        session = getattr(client, "_session", None)
        if request_timeout is not None and session is not None:
            # alpaca-py sends requests without a timeout, so a hung answer would block its
            # worker thread forever; bind one into the client's session.
            session.request = functools.partial(session.request, timeout=request_timeout)

    def _request(self, symbols: Sequence[str], start: datetime, end: datetime) -> Any:
        from alpaca.data.enums import Adjustment, DataFeed
        from alpaca.data.requests import StockBarsRequest
        from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

        return StockBarsRequest(
            symbol_or_symbols=list(symbols),
            timeframe=TimeFrame(self.minutes, TimeFrameUnit.Minute),
            start=start, end=end, feed=DataFeed(self.feed),
            adjustment=Adjustment(self.adjustment) if self.adjustment else None,
        )

    def _fetch_sync(self, symbols: Sequence[str], start: datetime,
                    end: datetime) -> list[MarketItem]:
        result = self.client.get_stock_bars(self._request(symbols, start, end))
        out: list[MarketItem] = []
        data = getattr(result, "data", result)  # BarSet, or the raw map in raw_data mode
        if not isinstance(data, dict):
            return [BadInput(reason="UNSUPPORTED_MESSAGE",
                             detail=f"get_stock_bars returned {type(result).__name__}",
                             raw=repr(result)[:2000], provider=self.provider)]
        for sym, bars in data.items():
            for b in bars or ():
                if isinstance(b, dict):
                    out.append(bar_from_alpaca(b, provider=self.provider, symbol=sym,
                                               interval_s=self.interval_s))
                else:
                    out.append(bar_from_model(b, provider=self.provider,
                                              interval_s=self.interval_s))
        out.sort(key=_key)
        return out

    async def fetch(self, symbols: Sequence[str], start: datetime,
                    end: datetime) -> list[MarketItem]:
        """Bars of `symbols` with start in [start, end], sorted by (start, symbol).
        Errors from the SDK (APIError, requests exceptions) propagate."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("history ranges need aware datetimes")
        if not symbols or end < start:
            return []
        # abandon_on_cancel: a cancelled caller must not wait for a slow HTTP answer; the
        # worker finishes on its own (bounded by request_timeout) and its result is dropped.
        return await anyio.to_thread.run_sync(self._fetch_sync, list(symbols), start, end,
                                              abandon_on_cancel=True)


class AlpacaHistoryProvider(BarProvider):
    """Bars of `symbols` starting in [start, end), chunk by chunk."""

    def __init__(self, client: Any, symbols: Sequence[str], start: datetime, end: datetime, *,
                 feed: Feed = "iex", minutes: int = 1, chunk: timedelta = timedelta(days=1),
                 provider: str = "alpaca-history", adjustment: str | None = None,
                 request_timeout: float | None = 30.0) -> None:
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("AlpacaHistoryProvider needs aware start/end datetimes")
        if chunk <= timedelta(0):
            raise ValueError("chunk must be positive")
        self.name = provider
        self.history = AlpacaHistory(client, feed=feed, minutes=minutes, provider=provider,
                                     adjustment=adjustment, request_timeout=request_timeout)
        self.symbols = list(symbols)
        self.start = start
        self.end = end
        self.chunk = chunk

    async def stream(self) -> AsyncGenerator[MarketItem, None]:
        lo = self.start
        # Alpaca's `end` is inclusive; stop one microsecond short so chunks never overlap.
        tick = timedelta(microseconds=1)
        while lo < self.end:
            hi = min(lo + self.chunk, self.end)
            for item in await self.history.fetch(self.symbols, lo, hi - tick):
                yield item
            lo = hi
