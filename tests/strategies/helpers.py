"""Test helpers for strategies: bars at New York times, and a tiny 'gate + broker' that
approves intents and fills them by folding real events into real projections."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal
from itertools import count

from engine.clock import SimClock
from engine.marketdata import BarValidator
from engine.strategies import StrategyRunner
from events.catalogue import (
    AccountSnapshot,
    AssetInfo,
    BarReceived,
    FillReceived,
    OrderAccepted,
    OrderIntent,
    OrderSubmitRequested,
    OrderSubmitted,
    RiskApproved,
    RiskRejected,
)
from events.market import Bar
from projections.calendar import NEW_YORK
from projections.state import Projections

D = Decimal
DAY = date(2026, 11, 23)  # a Monday (EST, UTC-5)


def ny(hh: int, mm: int, day: date = DAY) -> datetime:
    """An aware UTC datetime for a New York wall-clock time."""
    return datetime.combine(day, time(hh, mm), tzinfo=NEW_YORK).astimezone(UTC)


def mkbar(symbol: str, start: datetime, close: str, *, open_: str | None = None,
          high: str | None = None, low: str | None = None, volume: str = "1000",
          vwap: str | None = None) -> Bar:
    c = D(close)
    o = D(open_) if open_ is not None else c
    h = D(high) if high is not None else max(o, c)
    lo = D(low) if low is not None else min(o, c)
    return Bar(symbol=symbol, start=start, interval_s=60, open=o, high=h, low=lo, close=c,
               volume=D(volume), vwap=D(vwap) if vwap is not None else c, provider="test")


class Book:
    """Approve/reject/fill intents the way the real gate and broker would record them."""

    def __init__(self, clock: SimClock, projections: Projections | None = None) -> None:
        self.clock = clock
        self.proj = projections or Projections()
        self._seq = count(1)
        self._coid = count(1)
        self.coids: dict[str, str] = {}

    def apply(self, event: object) -> None:
        self.proj.apply(next(self._seq), event)

    def account(self, cash: str) -> None:
        c = D(cash)
        self.apply(AccountSnapshot(ts=self.clock.now(), equity=c, cash=c, buying_power=c))

    def asset(self, symbol: str, *, fractionable: bool = True, shortable: bool = True) -> None:
        self.apply(AssetInfo(ts=self.clock.now(), symbol=symbol, tradable=True,
                             fractionable=fractionable, shortable=shortable))

    def approve(self, intent: OrderIntent, price: Decimal) -> str:
        coid = f"c{next(self._coid)}"
        self.coids[intent.intent_id] = coid
        est = intent.qty * price if intent.qty is not None else intent.notional
        assert est is not None
        self.apply(RiskApproved(
            ts=self.clock.now(), intent_id=intent.intent_id, client_order_id=coid,
            strategy=intent.strategy, symbol=intent.symbol, side=intent.side,  # type: ignore[arg-type]
            order_type="market", qty=intent.qty, notional=intent.notional, limit_price=None,
            time_in_force="day", reference_price=price, estimated_notional=est,
            at_risk=D(0), reduce_only=intent.reduce_only))
        now = self.clock.now()
        self.apply(OrderSubmitRequested(ts=now, client_order_id=coid,
                                        intent_id=intent.intent_id, symbol=intent.symbol))
        self.apply(OrderSubmitted(ts=now, client_order_id=coid, broker_order_id=f"b-{coid}"))
        self.apply(OrderAccepted(ts=now, client_order_id=coid, broker_order_id=f"b-{coid}"))
        return coid

    def reject(self, intent: OrderIntent) -> None:
        self.apply(RiskRejected(ts=self.clock.now(), intent_id=intent.intent_id,
                                symbol=intent.symbol, reasons=(), strategy=intent.strategy))

    def fill(self, intent: OrderIntent, price: str | Decimal) -> FillReceived:
        """Approve (if needed) and fill completely at `price`."""
        px = D(price)
        coid = self.coids.get(intent.intent_id) or self.approve(intent, px)
        qty = intent.qty
        if qty is None:
            assert intent.notional is not None
            qty = (intent.notional / px).quantize(D("0.000000001"), rounding=ROUND_DOWN)
        fill = FillReceived(
            ts=self.clock.now(), client_order_id=coid, broker_order_id=f"b-{coid}",
            execution_id=f"x-{coid}", symbol=intent.symbol, side=intent.side,  # type: ignore[arg-type]
            qty=qty, price=px, broker_time=self.clock.now(), order_done=True)
        self.apply(fill)
        return fill


def minutes(start: datetime, n: int) -> list[datetime]:
    return [start + timedelta(minutes=i) for i in range(n)]


def drive(bars: list[Bar], runner: StrategyRunner, book: Book,
          validator: BarValidator) -> list[tuple[int, OrderIntent]]:
    """Replay `bars` like a backtest: clock to each bar's close, validate, fold, run the
    strategies; every intent is approved and filled at the NEXT bar's open (F12-style).
    Returns (index of the bar that produced it, intent)."""
    produced: list[tuple[int, OrderIntent]] = []
    waiting: list[OrderIntent] = []
    for i, b in enumerate(bars):
        for intent in waiting:
            if intent.symbol == b.symbol:
                book.fill(intent, b.open)
        waiting = [w for w in waiting if w.symbol != b.symbol]
        book.clock.set(b.end)
        for e in validator.validate(b):
            book.apply(e)
            if isinstance(e, BarReceived):
                for out in runner.on_bar(e.bar):
                    assert isinstance(out, OrderIntent), out
                    produced.append((i, out))
                    waiting.append(out)
    return produced
