"""Market-data sources by settings: the shipped sample, bar files, a recorded log, Alpaca's
live stream (with history backfill), or a synthetic live feed."""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Literal

from engine.clock import Clock
from engine.config import Settings
from engine.marketdata.assets import sample_bars_path
from engine.marketdata.csv_io import CsvBarProvider
from engine.marketdata.ordered import RUN_ROWS, OrderedFileProvider
from engine.marketdata.parquet_io import ParquetBarProvider
from engine.marketdata.parse import parse_timeframe
from engine.marketdata.recorded import RecordedLogProvider
from engine.marketdata.types import BarProvider, DataFileError, MarketItem
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


BAR_FILE_SUFFIXES = {".csv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
LOG_SUFFIXES = (".sqlite", ".db", ".log")
FileKind = Literal["csv", "parquet", "log"]


def data_paths(data: Path | Sequence[Path]) -> list[Path]:
    """The files a --data argument names: files as given, a directory's bar files by name."""
    paths = [data] if isinstance(data, Path) else list(data)
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in BAR_FILE_SUFFIXES)
            if not found:
                raise DataFileError(f"{p}: no .csv or .parquet files in this directory")
            out.extend(found)
        else:
            out.append(p)
    return out


def file_provider(data: Path | Sequence[Path], *, kind: FileKind | None = None,
                  tz: str | None = None, symbols: Sequence[str] | None = None,
                  timeframe: str | None = None, symbol: str | None = None,
                  run_rows: int = RUN_ROWS) -> BarProvider:
    """Bar files (.csv, .parquet; several, or a directory) in (time, symbol) order whatever
    their row order (`engine.marketdata.ordered`), or a recorded event log (.sqlite/.db): of
    `kind`, or by extension. `timeframe` declares the interval (`parse_timeframe`), else it
    is inferred; `symbol` names a file without a symbol column."""
    syms = list(symbols) if symbols else None
    if kind == "log":
        return RecordedLogProvider(data if isinstance(data, Path) else data[0], symbols=syms)
    paths = data_paths(data)
    if kind is None and len(paths) == 1 and paths[0].suffix.lower() in LOG_SUFFIXES:
        return RecordedLogProvider(paths[0], symbols=syms)
    interval_s, sessions = parse_timeframe(timeframe) if timeframe else (None, False)
    providers: list[CsvBarProvider | ParquetBarProvider] = []
    for path in paths:
        of = kind or BAR_FILE_SUFFIXES.get(path.suffix.lower())
        if of is None:
            raise DataFileError(f"{path}: unknown data file type {path.suffix!r} (use .csv, "
                                ".parquet, a directory of them, or an event log .sqlite)")
        cls = CsvBarProvider if of == "csv" else ParquetBarProvider
        providers.append(cls(path, tz=tz, symbols=syms, interval_s=interval_s,
                             sessions=sessions, symbol=symbol))
    return OrderedFileProvider(providers, run_rows=run_rows)


def make_provider(settings: Settings, clock: Clock | None) -> BarProvider:
    d = settings.data
    symbols = list(d.symbols) or None
    if d.source == "sample":
        return CsvBarProvider(sample_bars_path(), symbols=symbols, provider="sample")
    if d.source in ("csv", "parquet", "log"):
        assert d.path is not None
        return file_provider(d.path, kind=d.source, tz=d.timezone,
                             symbols=symbols, timeframe=d.timeframe)
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
    async with await StartedSource.open(settings) as started:
        return started.first_start, started.symbols


class StartedSource(BarProvider):
    """A file source whose stream has been started to learn, before the engine exists,
    where it begins (its first bar's start, the clock's start) and which symbols it holds;
    the same stream is then consumed, so bar files are read and sorted once, not twice.

    `stream()` once; leaving `async with` (or `aclose()`) ends the stream wherever it is."""

    def __init__(self, items: AsyncGenerator[MarketItem, None], head: list[MarketItem],
                 first_start: datetime, symbols: set[str], name: str) -> None:
        self.name = name
        self.first_start = first_start
        self.symbols = symbols
        self._items = items
        self._head = head
        self._taken = False

    @classmethod
    async def open(cls, settings: Settings) -> StartedSource:
        source = make_provider(settings, None)
        items = source.stream()
        head: list[MarketItem] = []
        try:
            async for item in items:
                head.append(item)
                if isinstance(item, Bar):
                    stats = source.stats if isinstance(source, OrderedFileProvider) else None
                    symbols = set(stats.symbols) if stats is not None else {item.symbol}
                    return cls(items, head, item.start, symbols, source.name)
        except BaseException:
            await items.aclose()
            raise
        await items.aclose()
        raise ValueError("the data source has no bars")

    async def aclose(self) -> None:
        await self._items.aclose()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def stream(self) -> AsyncGenerator[MarketItem, None]:
        if self._taken:
            raise RuntimeError("a started source streams once")
        self._taken = True
        head, self._head = self._head, []
        try:
            for item in head:
                yield item
            async for item in self._items:
                yield item
        finally:
            await self._items.aclose()


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
