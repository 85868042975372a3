"""Backtests are replays: a bar file or a recorded event log is fed through the very same
engine (validator, strategies, risk gate, execution, projections, an on-disk log) with a
simulated clock advanced by event time and the SimulatedBroker. There is no backtest-only
path for orders, risk or fills; the output is an ordinary event log.

Two runs of the same input and settings write byte-identical event payloads: ids derive from
the input (run id, intent ids, client order ids, broker ids), time comes from the bars, and
`replay.backtest.stepper.StepDriver` runs the loop (clock, bar, simulated fills, strategies, gate,
execution, in that order; broker updates handled inline after each step).

Bar files (one or several, CSV or Parquet) are delivered in (time, symbol) order whatever
their row order (`engine.marketdata.ordered`), and the run id hashes their rows, not their
order: the same rows grouped by symbol, interleaved or split over files give the same log.
Symbols the assets file does not list are traded as whole-share, tradable, not shortable
(`notice` says so once); an assets file that lists a symbol always wins.
"""

from __future__ import annotations

import gc
import hashlib
import math
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, aclosing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import cast

from engine.app import make_broker, open_engine
from engine.brokers.simulated import SimulatedBroker, default_assets_line
from engine.clock import SimClock
from engine.config import Settings
from engine.marketdata.ordered import RUN_ROWS, OrderedFileProvider, OrderStats
from engine.marketdata.types import BarProvider, DataFileError, MarketItem
from engine.sources import BAR_FILE_SUFFIXES, data_paths, file_provider
from engine.strategies.base import Strategy
from events.errors import CorruptLogError
from events.follow import ChainFollower
from events.market import Bar
from events.sink import ProcessSink
from projections.state import Projections
from replay.backtest.overrides import Override
from replay.backtest.stepper import StepDriver, with_quick_thread_handoffs


class NoBarsError(DataFileError):
    """The input gave no bar to replay (every row refused, or none in the window)."""


@dataclass(frozen=True)
class StuckOrder:
    """An order still working when the data ended: no later bar could fill or expire it."""

    client_order_id: str
    symbol: str
    side: str
    qty: Decimal | None
    notional: Decimal | None
    status: str
    last_bar: datetime | None  # the symbol's last bar (None: it never had one)


@dataclass
class BacktestResult:
    log_path: Path
    run_id: str
    bars: int
    intents: int
    first_bar: datetime | None
    last_bar: datetime | None
    open_orders: list[StuckOrder] = field(default_factory=list)
    default_assets: list[str] = field(default_factory=list)  # symbols traded by default
    interval: str | None = None  # the bars' interval as read ("1m", "1d sessions", ...)
    refused_rows: dict[str, int] = field(default_factory=dict)  # input rows refused, by reason
    first_refusal: str | None = None  # the first refused row's detail (file and line)
    log_rows: int = 0  # rows in the log, every one verified on disk (hash chain, no gaps)

    def refused_rows_line(self) -> str | None:
        """One line on the input rows that never became bars (None when all did)."""
        if not self.refused_rows:
            return None
        ranked = sorted(self.refused_rows.items(), key=lambda kv: (-kv[1], kv[0]))
        total = sum(self.refused_rows.values())
        fix = _FIXES.get(ranked[0][0])
        return (f"{total:,} input row(s) refused: "
                + ", ".join(f"{k} {v:,}" for k, v in ranked)
                + f"; first: {self.first_refusal}" + (f"; fix: {fix}" if fix else ""))


def input_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


_FIXES = {
    "NAIVE_TIMESTAMP": "declare the file's time zone (--tz America/New_York) or write "
                       "timestamps with an offset",
    "BAD_TIMESTAMP": "write timestamps as ISO-8601 (2024-03-01, 2024-03-01T14:30:00Z) or "
                     "epoch seconds",
    "MISSING_FIELD": "fill the empty cells or drop those rows",
    "BAD_NUMBER": "prices and volume must be plain numbers (no 'null', no thousands "
                  "separators)",
    "NOT_A_TRADING_DAY": "remove rows for weekends and NYSE holidays",
    "BAD_ROW": "every row needs as many cells as the header",
}


def no_bars_message(data: Sequence[Path], stats: OrderStats | None,
                    start: datetime | None, end: datetime | None) -> str:
    names = ", ".join(str(p) for p in data)
    if stats is not None and stats.bars == 0 and stats.refused:
        total = sum(stats.refused.values())
        reason, n = stats.refused.most_common(1)[0]
        fix = _FIXES.get(reason, "see the reason codes in engine/marketdata/types.py")
        return (f"{names}: all {total:,} rows were refused, most for {reason} ({n:,}), e.g. "
                f"{stats.first_refusal}; fix: {fix}")
    if stats is not None and stats.bars == 0:
        return f"{names}: the file has no rows"
    window = f" from {start.isoformat() if start else 'the start'} to " \
             f"{end.isoformat() if end else 'the end'}"
    return f"{names}: no bars{window}" + (
        f" (the file has {stats.bars:,} bars; check --from/--to/--symbols)" if stats else "")


def describe_interval(stats: OrderStats) -> str | None:
    if not stats.intervals:
        return None
    top = stats.intervals.most_common(1)[0][0]
    if top >= 6 * 3600:
        return "1d (one bar per session)"
    for s, name in ((3600, "h"), (60, "m")):
        if top % s == 0:
            return f"{top // s}{name}"
    return f"{top}s"


def _batches(provider: BarProvider) -> AsyncGenerator[list[MarketItem], None]:
    """The provider's items a batch at a time: the loop then takes one async step per batch
    instead of several per bar (bar files come in batches; any other source in batches of
    one)."""
    if isinstance(provider, OrderedFileProvider):
        return provider.stream_batches()
    return _singles(provider.stream())


async def _singles(items: AsyncGenerator[MarketItem, None]
                   ) -> AsyncGenerator[list[MarketItem], None]:
    async with aclosing(items) as each:
        async for item in each:
            yield [item]


async def _window(batches: AsyncGenerator[list[MarketItem], None], start: datetime | None,
                  end: datetime | None) -> AsyncGenerator[list[MarketItem], None]:
    async with aclosing(batches) as each:
        async for batch in each:
            if start is None and end is None:
                yield batch
                continue
            kept = [i for i in batch if type(i) is not Bar or (
                (start is None or i.start >= start) and (end is None or i.start < end))]
            if kept:
                yield kept


# Young generations are collected every this many bars while automatic collection is off.
YOUNG_GC_EVERY = 50_000
AUTOMATIC_GC = Override()  # the interpreter's automatic collection, held off by running backtests
# The log follower is told about new commits every this many bars.
FOLLOW_WAKE_EVERY = 4096


@contextmanager
def young_collections_only() -> Iterator[None]:
    """Automatic garbage collection off for a run, restored after.

    A run keeps what it builds (the sort's runs, orders, fills, the strategies' windows), so
    the collector's full passes over an ever larger heap are pure cost: they find almost
    nothing (the cycles a run makes are its own structures, released at its end). The
    driver collects the young generations itself every `YOUNG_GC_EVERY` bars, which frees
    short-lived cycles as before; only a cycle that lived long and died during the run waits
    for the first collection after it. Overlapping runs in one process share the setting
    (`Override`): collection comes back when the last of them ends.

    What a run built before its first bar (the sorted input, among the rest) is frozen there
    (`freeze_setup`): the first young collection otherwise traversed all of it (~0.7 of
    that collection's time at 100k bars) to find nothing, since it lives for the whole run.
    Frozen objects are still freed by reference counting; only their cycles wait, and they
    go back to the oldest generation when collection comes back. A process that froze
    objects itself before the first run is left as it was (nothing frozen, nothing thawed)."""
    def apply() -> Callable[[], None]:
        was = gc.isenabled()
        gc.disable()
        _FREEZE[0] = gc.get_freeze_count() == 0
        _FREEZE[1] = False

        def restore() -> None:
            if _FREEZE[1]:  # only what a run froze (not when none reached its first bar)
                gc.unfreeze()
            _FREEZE[0] = _FREEZE[1] = False
            if was:
                gc.enable()
        return restore

    with AUTOMATIC_GC.hold(apply):
        yield


# Whether runs may freeze their setup, and whether one did (see `young_collections_only`).
_FREEZE = [False, False]


def freeze_setup() -> None:
    """Freeze everything alive now (a run's setup, at its first bar), unless the process
    had frozen objects of its own when collection was turned off."""
    if _FREEZE[0]:
        gc.freeze()
        _FREEZE[1] = True


@with_quick_thread_handoffs  # the log's writer keeps pace with the loop (see there)
async def run_backtest(settings: Settings, data: Path | Sequence[Path], out_log: Path, *,
                       start: datetime | None = None, end: datetime | None = None,
                       strategies: Sequence[Strategy] | None = None,
                       symbols: Sequence[str] | None = None,
                       progress: Callable[[int], None] | None = None,
                       notice: Callable[[str], None] | None = None,
                       symbol: str | None = None,
                       run_rows: int = RUN_ROWS,
                       progress_every: int = 10_000) -> BacktestResult:
    """Run one backtest, writing a new event log at `out_log` (which must not exist).

    `data`: a bar file, several, a directory of them, or a recorded event log. `notice`
    receives one-line messages for the user (symbols traded by default)."""
    with young_collections_only():
        return await _run_backtest(settings, data, out_log, start=start, end=end,
                                   strategies=strategies, symbols=symbols, progress=progress,
                                   notice=notice, symbol=symbol, run_rows=run_rows,
                                   progress_every=progress_every)


async def _run_backtest(settings: Settings, data: Path | Sequence[Path], out_log: Path, *,
                        start: datetime | None, end: datetime | None,
                        strategies: Sequence[Strategy] | None, symbols: Sequence[str] | None,
                        progress: Callable[[int], None] | None,
                        notice: Callable[[str], None] | None, symbol: str | None,
                        run_rows: int, progress_every: int) -> BacktestResult:
    if out_log.exists():
        raise FileExistsError(f"{out_log} exists; a backtest writes a new log")
    paths = data_paths(data)
    for p in paths:
        if not p.exists():
            raise DataFileError(f"{p}: no such file")
    provider = file_provider(paths, tz=settings.data.timezone, symbols=symbols,
                            timeframe=settings.data.timeframe, symbol=symbol,
                            run_rows=run_rows)
    stats = provider.stats if isinstance(provider, OrderedFileProvider) else None
    clock: SimClock | None = None
    first: datetime | None = None
    last: datetime | None = None
    bars = 0
    follower = ChainFollower(out_log)
    # The follower walks the log on disk while it is written, and outlives it: its verdict
    # is taken once the log is closed.
    async with AsyncExitStack() as follow:
        async with provider, aclosing(_window(_batches(provider), start, end)) as batches:
            pending: list[MarketItem] = []  # what comes before the first bar, and that bar
            rest: list[MarketItem] = []  # the rest of its batch
            async for batch in batches:  # the clock starts at the first bar's open
                at = next((n for n, i in enumerate(batch) if type(i) is Bar), None)
                if at is None:
                    pending += batch
                    continue
                pending += batch[:at + 1]
                rest = batch[at + 1:]
                clock = SimClock(cast(Bar, batch[at]).start)
                break
            if clock is None:
                raise NoBarsError(no_bars_message(paths, stats, start, end))
            freeze_setup()  # the sorted input lives for the whole run (see there)
            # The sort has read everything by now: its digest covers the rows, not their order.
            digest = stats.digest if stats is not None else input_digest(paths[0])
            run_id = "bt-" + hashlib.sha256(
                f"{digest}|{settings.fingerprint()}|{start}|{end}|{symbols}".encode()
            ).hexdigest()[:16]
            # The simulated broker is ours to shape (default assets); any other is open_engine's.
            broker = make_broker(settings, clock) if settings.broker == "simulated" else None
            defaulted: list[str] = []
            if isinstance(broker, SimulatedBroker):
                in_data = stats.symbols if stats is not None else {
                    i.symbol for i in pending if isinstance(i, Bar)}
                defaulted = broker.add_default_assets(in_data)
                if defaulted and notice is not None:
                    notice(default_assets_line(defaulted))
            async with open_engine(settings, clock=clock, broker=broker, strategies=strategies,
                                   run_id=run_id, log_path=out_log, step_mode=True) as engine:
                await follow.enter_async_context(follower)  # the log exists from here
                if engine.sim is not None:
                    # Nothing leaves the process: no decision needs to wait for its commit (the
                    # run is reproducible from its input). The log is flushed and verified below.
                    # Its commits run in a child process, off this one's GIL (events/sink.py).
                    engine.log.acknowledge_on_append(sink=ProcessSink.start)
                seen = sorted({i.symbol for i in pending if isinstance(i, Bar)} |
                              set(symbols or ()) | set(settings.data.symbols) |
                              set(stats.symbols if stats is not None else ()))
                if engine.sim is not None:
                    seen = sorted(set(seen) | set(engine.sim.assets))
                step = StepDriver(engine)  # before recovery: the strategies' start acts too
                await engine.recover(seen)

                step_item = step.step  # a coroutine only for an item that has to await
                # One test per bar for the periodic work, the rest only when one may be due.
                every = math.gcd(progress_every, YOUNG_GC_EVERY, FOLLOW_WAKE_EVERY)

                async def feed(items: list[MarketItem]) -> None:
                    nonlocal first, last, bars
                    for item in items:
                        if type(item) is Bar:
                            first = first or item.start
                            last = item.start
                            bars += 1
                            if bars % every == 0:
                                if progress is not None and bars % progress_every == 0:
                                    progress(bars)
                                if bars % YOUNG_GC_EVERY == 0:
                                    gc.collect(1)
                                if bars % FOLLOW_WAKE_EVERY == 0:
                                    await follower.wake()
                        work = step_item(item)
                        if work is not None:
                            await work

                await feed(pending)
                await feed(rest)
                async for batch in batches:
                    await feed(batch)
                if progress is not None:
                    progress(bars)
                stuck = stuck_orders(engine.proj)
                await engine.stop("backtest complete")
                intents = engine.intents_sent
                await engine.log.flush()  # the head is the sink's once everything is committed
                appended = engine.log.assigned_seq
                head = engine.log.last_hash
        # The log is closed, so every row is committed; the whole chain on disk must be
        # walked before the run is done (the rows were acknowledged before their commits).
        check = await follower.verdict(appended, head)
    if not check.ok or check.last_seq != appended:
        raise CorruptLogError(f"{out_log}: the backtest's log does not verify on disk "
                              f"({check.reason or f'{check.last_seq} of {appended} rows'})")
    return BacktestResult(log_path=out_log, run_id=run_id, bars=bars, intents=intents,
                          first_bar=first, last_bar=last, open_orders=stuck,
                          default_assets=defaulted,
                          interval=describe_interval(stats) if stats is not None else None,
                          refused_rows=dict(stats.refused) if stats is not None else {},
                          first_refusal=stats.first_refusal if stats is not None else None,
                          log_rows=check.rows_checked)


def stuck_orders(proj: Projections) -> list[StuckOrder]:
    """Orders still working in the log: at the end of a backtest no bar is left to fill
    them, which a report must say rather than let them look like positions not taken."""
    out = []
    for coid in sorted(proj.orders.open_ids):
        o = proj.orders.orders[coid]
        pos = proj.positions.positions.get(o.symbol)
        if o.protective and pos is not None and pos.qty:
            continue  # the stop of a position held at the end: protection, not a stuck order
        last = proj.market.last_bar.get(o.symbol)
        out.append(StuckOrder(client_order_id=coid, symbol=o.symbol, side=o.side, qty=o.qty,
                              notional=o.notional, status=o.status.value,
                              last_bar=last.start if last is not None else None))
    return out


def stuck_orders_line(orders: Sequence[StuckOrder]) -> str | None:
    """One line for the text report, or None when no order was left open."""
    if not orders:
        return None
    shown = "; ".join(
        f"{o.symbol} {o.side} {_plain(o.qty) if o.qty is not None else '$' + _plain(o.notional)}"
        f" ({o.status}, last bar {o.last_bar.isoformat() if o.last_bar else 'none'})"
        for o in orders[:5])
    more = f"; and {len(orders) - 5} more" if len(orders) > 5 else ""
    return (f"{len(orders)} order(s) still open when the data ended (no later bar to fill "
            f"them): {shown}{more}")


def _plain(d: Decimal | None) -> str:
    return "-" if d is None else format(d.normalize(), "f")


def count_rows(data: Path | Sequence[Path]) -> int | None:
    """Rows in the bar files (for a progress total), None when it is not cheap to know."""
    total = 0
    for path in data_paths(data):
        suffix = path.suffix.lower()
        if BAR_FILE_SUFFIXES.get(suffix) == "csv":
            with open(path, "rb") as f:
                total += max(sum(1 for _ in f) - 1, 0)
        elif BAR_FILE_SUFFIXES.get(suffix) == "parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(path).metadata.num_rows
        else:
            return None
    return total
