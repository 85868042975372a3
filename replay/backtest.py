"""Backtests are replays: a bar file or a recorded event log is fed through the very same
engine (validator, strategies, risk gate, execution, projections, an on-disk log) with a
simulated clock advanced by event time and the SimulatedBroker. There is no backtest-only
path for orders, risk or fills; the output is an ordinary event log.

Two runs of the same input and settings write byte-identical event payloads: ids derive from
the input (run id, intent ids, client order ids, broker ids), time comes from the bars, and
the engine runs in step mode (broker updates handled inline after each step).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from engine.app import open_engine
from engine.clock import SimClock
from engine.config import Settings
from engine.marketdata.csv_io import CsvBarProvider
from engine.marketdata.parquet_io import ParquetBarProvider
from engine.marketdata.recorded import RecordedLogProvider
from engine.marketdata.types import BarProvider, MarketItem
from engine.strategies.base import Strategy
from events.market import Bar


@dataclass
class BacktestResult:
    log_path: Path
    run_id: str
    bars: int
    intents: int
    first_bar: datetime | None
    last_bar: datetime | None


def provider_for(path: Path, *, tz: str | None = None,
                 symbols: Sequence[str] | None = None) -> BarProvider:
    """A bar file (.csv, .parquet) or a recorded event log (.sqlite/.db), by extension."""
    suffix = path.suffix.lower()
    syms = list(symbols) if symbols else None
    if suffix in (".csv", ".txt"):
        return CsvBarProvider(path, tz=tz, symbols=syms)
    if suffix in (".parquet", ".pq"):
        return ParquetBarProvider(path, tz=tz, symbols=syms)
    if suffix in (".sqlite", ".db", ".log"):
        return RecordedLogProvider(path, symbols=syms)
    raise ValueError(f"{path}: unknown data file type {suffix!r} (use .csv, .parquet or an "
                     "event log .sqlite)")


def input_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


async def _window(items: AsyncIterator[MarketItem], start: datetime | None,
                  end: datetime | None) -> AsyncGenerator[MarketItem, None]:
    async for item in items:
        if isinstance(item, Bar):
            if start is not None and item.start < start:
                continue
            if end is not None and item.start >= end:
                continue
        yield item


async def run_backtest(settings: Settings, data: Path, out_log: Path, *,
                       start: datetime | None = None, end: datetime | None = None,
                       strategies: Sequence[Strategy] | None = None,
                       symbols: Sequence[str] | None = None,
                       progress: Callable[[int], None] | None = None) -> BacktestResult:
    """Run one backtest, writing a new event log at `out_log` (which must not exist)."""
    if out_log.exists():
        raise FileExistsError(f"{out_log} exists; a backtest writes a new log")
    provider = provider_for(data, tz=settings.data.timezone, symbols=symbols)
    run_id = "bt-" + hashlib.sha256(
        f"{input_digest(data)}|{settings.fingerprint()}|{start}|{end}|{symbols}".encode()
    ).hexdigest()[:16]
    clock: SimClock | None = None
    first: datetime | None = None
    last: datetime | None = None
    bars = 0
    async with provider, aclosing(_window(provider.stream(), start, end)) as items:
        pending: list[MarketItem] = []
        async for item in items:  # the clock starts at the first bar's open
            pending.append(item)
            if isinstance(item, Bar):
                clock = SimClock(item.start)
                break
        if clock is None:
            raise ValueError(f"{data}: no bars in the requested range")
        async with open_engine(settings, clock=clock, strategies=strategies, run_id=run_id,
                               log_path=out_log, step_mode=True) as engine:
            seen = sorted({i.symbol for i in pending if isinstance(i, Bar)} |
                          set(symbols or ()) | set(settings.data.symbols))
            if engine.sim is not None:
                seen = sorted(set(seen) | set(engine.sim.assets))
            await engine.recover(seen)

            async def feed(item: MarketItem) -> None:
                nonlocal first, last, bars
                if isinstance(item, Bar):
                    first = first or item.start
                    last = item.start
                    bars += 1
                    if progress is not None and bars % 10_000 == 0:
                        progress(bars)
                await engine.on_item(item)

            for item in pending:
                await feed(item)
            async for item in items:
                await feed(item)
            await engine.stop("backtest complete")
            intents = engine.intents_sent
    return BacktestResult(log_path=out_log, run_id=run_id, bars=bars, intents=intents,
                          first_bar=first, last_bar=last)


def stderr_progress(total: int | None) -> Callable[[int], None]:
    """A one-line progress bar on stderr (only when it is a terminal)."""
    tty = sys.stderr.isatty()

    def show(n: int) -> None:
        if not tty:
            return
        if total:
            width = 30
            done = int(width * n / total)
            sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {n:,}/{total:,} bars")
        else:
            sys.stderr.write(f"\r{n:,} bars")
        sys.stderr.flush()

    return show


def count_rows(path: Path) -> int | None:
    if path.suffix.lower() != ".csv":
        return None
    with open(path, "rb") as f:
        return max(sum(1 for _ in f) - 1, 0)
