"""Market-data sources by settings: the shipped sample, bar files, a recorded log, Alpaca's
live stream (with history backfill), or a synthetic live feed."""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import datetime, timedelta
from decimal import Decimal

from engine.clock import Clock
from engine.config import Settings
from engine.marketdata.assets import sample_bars_path
from engine.marketdata.csv_io import CsvBarProvider
from engine.marketdata.ordered import OrderedFileProvider
from engine.marketdata.parquet_io import ParquetBarProvider
from engine.marketdata.parse import parse_timeframe
from engine.marketdata.recorded import RecordedLogProvider
from engine.marketdata.types import BarProvider, MarketItem
from events.market import Bar

FILE_SOURCES = ("sample", "csv", "parquet", "log")
SAMPLE_SYMBOLS = ("AAPL", "AMD", "F", "MSFT", "SPY")


def data_symbols(settings: Settings) -> list[str]:
    if settings.data.symbols:
        return list(settings.data.symbols)
    syms: set[str] = set()
    for s in settings.strategies:
        syms.update(s.params.get("symbols", ()))
    if not syms and settings.data.source == "sample":
        syms.update(SAMPLE_SYMBOLS)
    return sorted(syms)


def make_provider(settings: Settings, clock: Clock | None) -> BarProvider:
    d = settings.data
    symbols = list(d.symbols) or None
    if d.source == "sample":
        return CsvBarProvider(sample_bars_path(), symbols=symbols, provider="sample")
    if d.source in ("csv", "parquet"):
        # Files in any row order, delivered in (time, symbol) order (engine.marketdata.ordered).
        assert d.path is not None
        interval_s, sessions = parse_timeframe(d.timeframe) if d.timeframe else (None, False)
        cls = CsvBarProvider if d.source == "csv" else ParquetBarProvider
        return OrderedFileProvider([cls(d.path, tz=d.timezone, symbols=symbols,
                                        interval_s=interval_s, sessions=sessions)])
    if d.source == "log":
        assert d.path is not None
        return RecordedLogProvider(d.path, symbols=symbols)
    if clock is None:
        raise ValueError(f"data source {d.source} needs a clock")
    if d.source == "synthetic":
        return SyntheticProvider(data_symbols(settings) or list(SAMPLE_SYMBOLS), clock,
                                 interval_s=d.interval_s, seed=d.seed)
    return _alpaca_live(settings, clock)


def _alpaca_live(settings: Settings, clock: Clock) -> BarProvider:
    from alpaca.data.historical import StockHistoricalDataClient

    from engine.marketdata.alpaca_history import AlpacaHistory
    from engine.marketdata.alpaca_live import AlpacaLiveProvider

    a = settings.alpaca
    if a.key_id is None or a.secret_key is None:
        raise ValueError("data.source=alpaca needs alpaca.key_id and alpaca.secret_key")
    key, secret = a.key_id.get_secret_value(), a.secret_key.get_secret_value()
    client = StockHistoricalDataClient(key, secret, url_override=a.data_rest_url)
    return AlpacaLiveProvider(data_symbols(settings), api_key=key, secret_key=secret, clock=clock,
                              history=AlpacaHistory(client, feed=a.data_feed), feed=a.data_feed,
                              url_override=a.data_stream_url)


async def first_bar_start(settings: Settings) -> datetime:
    """Where a replay of a file source begins (the simulated clock starts there)."""
    return (await file_preview(settings))[0]


async def file_preview(settings: Settings) -> tuple[datetime, set[str]]:
    """A file source's first bar start and (for bar files, which are read whole to be
    sorted) every symbol it holds; for a recorded log only the first bar's symbol."""
    source = make_provider(settings, None)
    async with source, aclosing(source.stream()) as items:
        async for item in items:
            if isinstance(item, Bar):
                stats = source.stats if isinstance(source, OrderedFileProvider) else None
                return item.start, set(stats.symbols) if stats is not None else {item.symbol}
    raise ValueError("the data source has no bars")


class SyntheticProvider(BarProvider):
    """A seeded random walk, one bar per symbol every `interval_s` of the (live) clock, each
    delivered once it has closed. For demos and tests of the live path without a market."""

    def __init__(self, symbols: list[str], clock: Clock, *, interval_s: int = 60,
                 seed: int = 7, start_price: Decimal = Decimal(100)) -> None:
        self.name = "synthetic"
        self._symbols = sorted(symbols)
        self._clock = clock
        self._interval = interval_s
        self._rng = random.Random(seed)
        self._price = {s: start_price for s in self._symbols}

    async def stream(self) -> AsyncGenerator[MarketItem, None]:
        step = timedelta(seconds=self._interval)
        now = self._clock.now()
        boundary = now.replace(microsecond=0) - timedelta(seconds=now.second % self._interval)
        while True:
            boundary += step
            wait = (boundary - self._clock.now()).total_seconds()
            if wait > 0:
                await self._clock.sleep(wait)
            for sym in self._symbols:
                yield self._bar(sym, boundary - step)

    def _bar(self, symbol: str, start: datetime) -> Bar:
        rng = self._rng
        o = self._price[symbol]
        c = max(Decimal("1.00"), o + Decimal(rng.randint(-30, 30)) / 100)
        hi = max(o, c) + Decimal(rng.randint(0, 10)) / 100
        lo = max(Decimal("0.50"), min(o, c) - Decimal(rng.randint(0, 10)) / 100)
        self._price[symbol] = c
        return Bar(symbol=symbol, start=start, interval_s=self._interval, open=o, high=hi, low=lo,
                   close=c, volume=Decimal(rng.randint(500, 5000)), provider="synthetic")
