"""StrategyContext: no look-ahead (F13), read-only views, sizing, deterministic intents."""

from __future__ import annotations

from contextlib import aclosing
from datetime import timedelta
from decimal import Decimal

import pytest

from engine.clock import SimClock
from engine.marketdata import BarValidator, CsvBarProvider, sample_bars_path
from engine.strategies import (
    LookAheadError,
    Size,
    Strategy,
    StrategyContext,
    StrategyRunner,
    intent_id,
)
from engine.strategies.context import BarHistory
from events.catalogue import BarReceived, DataRejected, OrderIntent
from events.market import Bar

from .helpers import Book, mkbar, ny

D = Decimal


class Peeker(Strategy):
    """Tries every way the context offers to see more bars than it should."""

    name = "peeker"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[Bar, tuple[Bar, ...], object]] = []

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> None:
        now = ctx.now
        visible = ctx.bars(bar.symbol, 10_000)
        others = tuple(b for s in ("AAPL", "AMD", "F", "MSFT", "SPY")
                       for b in ctx.bars(s, 10_000))
        for b in visible + others:
            assert b.end <= now, f"saw {b.symbol} {b.start} at {now}"
        self.seen.append((bar, visible, ctx.last_price("SPY")))


def make(clock: SimClock, *strategies: Strategy, book: Book | None = None) -> StrategyRunner:
    book = book or Book(clock)
    return StrategyRunner(list(strategies), projections=book.proj, clock=clock)


def test_runner_refuses_a_bar_that_has_not_closed():
    clock = SimClock(ny(10, 0))
    peeker = Peeker()
    runner = make(clock, peeker)
    b = mkbar("AAPL", ny(10, 0), "100")  # closes 10:01
    with pytest.raises(LookAheadError, match="after the clock"):
        runner.on_bar(b)
    assert peeker.seen == [] and runner.bars("AAPL", 5) == ()
    clock.set(b.end)
    assert runner.on_bar(b) == [] and peeker.seen[0][1] == (b,)


async def test_strategies_only_ever_see_closed_bars_f13():
    """Over the whole sample day the clock follows the bars (as in a replay); a provider that
    delivers a bar early gets it rejected, and the strategy never sees it."""
    async with aclosing(CsvBarProvider(sample_bars_path()).stream()) as items:
        bars = [b async for b in items][:5 * 60]
    clock = SimClock(bars[0].start)
    validator = BarValidator(clock)
    peeker = Peeker()
    runner = make(clock, peeker)
    early = bars[-1]  # arrives one hour too early
    rejected = [e for e in validator.validate(early) if isinstance(e, DataRejected)]
    assert rejected and rejected[0].reason == "FUTURE_BAR"
    for b in bars:
        clock.set(b.end)
        for e in validator.validate(b):
            if isinstance(e, BarReceived):
                runner.on_bar(e.bar)
    assert len(peeker.seen) == len(bars)
    for bar, visible, _ in peeker.seen:
        assert visible[-1] is bar  # the newest visible bar is the current one, never later
        assert [b.start for b in visible] == sorted(b.start for b in visible)


def test_history_hides_bars_later_than_the_clock_even_if_stored():
    h = BarHistory(10)
    b0, b1 = mkbar("AAPL", ny(10, 0), "1"), mkbar("AAPL", ny(10, 1), "2")
    h.append(b0)
    h.append(b1)
    assert h.recent("AAPL", 5, b0.end) == (b0,)
    assert h.recent("AAPL", 5, b1.end) == (b0, b1)


def test_views_are_read_only_copies():
    clock = SimClock(ny(10, 1))
    book = Book(clock)
    book.account("1000")
    runner = make(clock, Peeker(), book=book)
    ctx = runner._slots[0].ctx
    b = mkbar("AAPL", ny(10, 0), "100")
    runner.on_bar(b)
    intent = ctx.order("buy", qty=D(2))
    book.fill(intent, "100")
    pos = ctx.position("AAPL")
    assert (pos.qty, pos.avg_cost) == (D(2), D(100))
    with pytest.raises(AttributeError):
        pos.qty = D(1000)  # type: ignore[misc]
    assert book.proj.positions.positions["AAPL"].qty == D(2)
    bars = ctx.bars("AAPL", 5)
    assert isinstance(bars, tuple)
    with pytest.raises(AttributeError):
        bars[0].close = D(1)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ctx.projections = None  # type: ignore[attr-defined]  # no new attributes (slots)
    acct = ctx.account()
    assert acct.known and acct.cash == D(800) and acct.equity == D(1000)


def test_intent_ids_are_deterministic_and_short():
    clock = SimClock(ny(10, 1))
    runner = make(clock, Peeker())
    ctx = runner._slots[0].ctx
    b = mkbar("AAPL", ny(10, 0), "100")
    runner.on_bar(b)
    first = [ctx.order("buy", qty=D(1)), ctx.order("sell", qty=D(1))]
    assert [i.intent_id for i in first] == ["peeker:AAPL:20261123T1500:0",
                                            "peeker:AAPL:20261123T1500:1"]
    assert first[0].signal_time == b.end and first[0].ts == clock.now()
    runner.on_bar(b)  # the same bar again (the runner does not dedupe; the validator does)
    again = ctx.order("buy", qty=D(1))
    assert again.intent_id == first[0].intent_id
    long_id = intent_id("a" * 32, "VERYLONGSYMBOL.WITH.SUFFIX", "20261123T150000123456", 12)
    assert len(long_id) == 80 and long_id == intent_id(
        "a" * 32, "VERYLONGSYMBOL.WITH.SUFFIX", "20261123T150000123456", 12)
    assert long_id != intent_id("a" * 32, "VERYLONGSYMBOL.WITH.SUFFIX", "20261123T150000123456", 13)
    sub_minute = Bar(symbol="AAPL", start=ny(10, 0) + timedelta(seconds=5), interval_s=5,
                     open=D(1), high=D(1), low=D(1), close=D(1), volume=D(1))
    clock.set(sub_minute.end)
    runner.on_bar(sub_minute)
    assert ctx.order("buy", qty=D(1)).intent_id == "peeker:AAPL:20261123T150005:0"


@pytest.mark.parametrize(("kw", "err"), [
    ({"qty": 1.5}, "qty must be a Decimal, got float"),
    ({"qty": D(1), "notional": D(5)}, "exactly one of qty and notional"),
    ({}, "exactly one of qty and notional"),
    ({"qty": D(0)}, "qty must be a finite number > 0"),
    ({"qty": D("NaN")}, "qty must be a finite number > 0"),
    ({"qty": D(1), "order_type": "limit"}, "limit order needs limit_price"),
    ({"qty": D(1), "order_type": "iceberg"}, "order_type"),
    ({"qty": D(1), "stop_loss_limit": D(90)}, "stop_loss_limit needs stop_loss"),
])
def test_bad_intents_are_refused_when_built(kw, err):
    clock = SimClock(ny(10, 1))
    runner = make(clock, Peeker())
    runner.on_bar(mkbar("AAPL", ny(10, 0), "100"))
    with pytest.raises((TypeError, ValueError), match=err):
        runner._slots[0].ctx.order("buy", **kw)


def test_sizing_by_notional_and_by_risk():
    clock = SimClock(ny(10, 1))
    book = Book(clock)
    book.account("200")
    book.asset("SPY", fractionable=True)
    book.asset("F", fractionable=False)
    runner = make(clock, Peeker(), book=book)
    ctx = runner._slots[0].ctx
    runner.on_bar(mkbar("SPY", ny(10, 0), "600"))
    # $200 cannot buy a $600 share, but SPY is fractionable: a notional order
    assert ctx.size_by_notional(D("150.999"), D(600)) == Size(notional=D("150.99"))
    assert ctx.size_by_notional(D("0.50"), D(600)) is None  # below Alpaca's $1 minimum
    assert ctx.size_by_notional(D(20), D("11.5"), "F").qty == D(1)  # whole shares only
    assert ctx.size_by_notional(D(10), D("11.5"), "F") is None
    assert ctx.size_by_notional(D(20), D("11.5"), "UNKNOWN").qty == D(1)  # unknown: whole
    assert ctx.size_by_risk(D(10), D(600), D(594)) == D("1.666666666")
    assert ctx.size_by_risk(D(10), D("11.5"), D(11), "F") == D(20)
    assert ctx.size_by_risk(D(10), D("11.5"), D(11), "F", max_notional=D(100)) == D(8)
    assert ctx.size_by_risk(D(10), D(5), D(5)) is None
    with pytest.raises(TypeError):
        ctx.size_by_risk(10, D(5), D(4))  # type: ignore[arg-type]
    intent = ctx.order("buy", size=ctx.size_by_notional(D(150), D(600)), allow_notional=True)
    assert isinstance(intent, OrderIntent)
    assert (intent.qty, intent.notional, intent.allow_notional) == (None, D(150), True)


def test_intent_status_follows_the_projections():
    clock = SimClock(ny(10, 1))
    book = Book(clock)
    runner = make(clock, Peeker(), book=book)
    ctx = runner._slots[0].ctx
    runner.on_bar(mkbar("AAPL", ny(10, 0), "100"))
    a, b, c = (ctx.order("buy", qty=D(1)) for _ in range(3))
    assert ctx.intent_status(a.intent_id) == "pending"
    book.reject(a)
    book.approve(b, D(100))
    book.fill(c, "100")
    assert [ctx.intent_status(i.intent_id) for i in (a, b, c)] == ["rejected", "open", "filled"]
    assert [o.intent_id for o in ctx.open_orders("AAPL")] == [b.intent_id]


def test_runner_clock_skew_matches_the_validator():
    class Recorder(Strategy):
        name = "recorder"

        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[Bar, ...]] = []

        def on_bar(self, bar: Bar, ctx: StrategyContext) -> None:
            self.seen.append(ctx.bars(n=5))

    clock = SimClock(ny(10, 0) + timedelta(seconds=59, milliseconds=700))
    rec = Recorder()
    runner = StrategyRunner([rec], projections=Book(clock).proj, clock=clock,
                            max_clock_skew=timedelta(seconds=1))
    b = mkbar("AAPL", ny(10, 0), "100")
    assert runner.on_bar(b) == []
    assert rec.seen == [(b,)]  # visible to the strategy, too
    with pytest.raises(LookAheadError):
        runner.on_bar(mkbar("AAPL", ny(10, 1), "100"))


def test_context_builds_protected_entries_protection_and_stop_moves():
    from events.catalogue import OrderAccepted, OrderSubmitted, RiskApproved
    clock = SimClock(ny(10, 1))
    book = Book(clock)
    book.account("10000")
    book.asset("AAPL")
    runner = make(clock, Peeker(), book=book)
    runner.on_bar(mkbar("AAPL", ny(10, 0), "100"))
    ctx = runner._slots[0].ctx
    b = ctx.order("buy", qty=D(10), stop_loss=D(98), take_profit=D(104))
    assert (b.order_class, b.stop_loss.stop_price, b.take_profit.limit_price) == (
        "bracket", D(98), D(104))
    assert ctx.order("buy", qty=D(10), stop_loss=D(98)).order_class == "oto"
    assert ctx.protect() is None and ctx.move_stop(stop=D(97)) is None  # flat: nothing
    book.fill(ctx.order("buy", qty=D(10)), "100")
    oco = ctx.protect(stop=D(97), take_profit=D(105))
    assert (oco.order_class, oco.side, oco.qty, oco.order_type, oco.time_in_force) == (
        "oco", "sell", D(10), "limit", "gtc")
    trail = ctx.protect(trail_percent=D(2))
    assert (trail.order_type, trail.trail_percent, trail.reduce_only) == (
        "trailing_stop", D(2), True)
    stop = ctx.protect(stop=D(97))
    assert (stop.order_type, stop.stop_price) == ("stop", D(97))
    # A stop the broker holds, then moved through an intent that names it.
    now = clock.now()
    book.apply(RiskApproved(ts=now, intent_id=stop.intent_id, client_order_id="stop-1",
                            strategy=stop.strategy, symbol="AAPL", side="sell",
                            order_type="stop", qty=D(10), notional=None, limit_price=None,
                            time_in_force="gtc", reference_price=D(100),
                            estimated_notional=D(0), at_risk=D(0), reduce_only=True,
                            stop_price=D(97), protective=True))
    book.apply(OrderSubmitted(ts=now, client_order_id="stop-1", broker_order_id="b-s"))
    book.apply(OrderAccepted(ts=now, client_order_id="stop-1", broker_order_id="b-s"))
    assert [o.client_order_id for o in ctx.protection()] == ["stop-1"]
    assert ctx.protected_qty() == D(10)
    move = ctx.move_stop(stop=D("99.5"))
    assert (move.replaces, move.order_type, move.stop_price, move.qty, move.side) == (
        "stop-1", "stop", D("99.5"), D(10), "sell")
    assert ctx.ensure_stop(stop_pct=D(1)) is None  # guarded already
