"""Small builders for events in tests (explicit values, no randomness)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from events.catalogue import (
    BarReceived,
    FillReceived,
    OrderAccepted,
    OrderSubmitRequested,
    OrderSubmitted,
    RiskApproved,
)
from events.market import Bar

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # a Monday, 10:00 in New York
D = Decimal


def bar(symbol: str = "AAPL", start: datetime = T0, close: str = "100", *, interval_s: int = 60,
        open_: str | None = None, high: str | None = None, low: str | None = None,
        volume: str = "1000", ts: datetime | None = None) -> BarReceived:
    c = D(close)
    o = D(open_) if open_ is not None else c
    h = D(high) if high is not None else max(o, c)
    lo = D(low) if low is not None else min(o, c)
    b = Bar(symbol=symbol, start=start, interval_s=interval_s, open=o, high=h, low=lo, close=c,
            volume=D(volume), provider="test")
    return BarReceived(ts=ts or b.end, bar=b)


def approved(coid: str = "c1", *, symbol: str = "AAPL", side: str = "buy", qty: str | None = "10",
             notional: str | None = None, price: str = "100", at_risk: str = "0",
             ts: datetime = T0, intent_id: str | None = None, **kw: Any) -> RiskApproved:
    q = D(qty) if qty is not None else None
    n = D(notional) if notional is not None else None
    kw.setdefault("order_type", "market")
    kw.setdefault("limit_price", None)
    kw.setdefault("time_in_force", "day")
    return RiskApproved(
        ts=ts, intent_id=intent_id or f"i-{coid}", client_order_id=coid, strategy="test",
        symbol=symbol, side=side, qty=q, notional=n,  # type: ignore[arg-type]
        reference_price=D(price),
        estimated_notional=(q * D(price)) if q is not None else (n or D(0)), at_risk=D(at_risk),
        **kw,
    )


def submitted_chain(coid: str = "c1", ts: datetime = T0) -> list[Any]:
    return [
        OrderSubmitRequested(ts=ts, client_order_id=coid, intent_id=f"i-{coid}", symbol="AAPL"),
        OrderSubmitted(ts=ts, client_order_id=coid, broker_order_id=f"b-{coid}"),
        OrderAccepted(ts=ts, client_order_id=coid, broker_order_id=f"b-{coid}"),
    ]


def fill(coid: str = "c1", qty: str = "10", price: str = "100", *, side: str = "buy",
         symbol: str = "AAPL", exec_id: str | None = None, ts: datetime = T0,
         done: bool = False, fee: str = "0") -> FillReceived:
    return FillReceived(
        ts=ts, client_order_id=coid, broker_order_id=f"b-{coid}",
        execution_id=exec_id or f"x-{coid}-{qty}-{price}-{ts.isoformat()}", symbol=symbol,
        side=side, qty=D(qty), price=D(price), broker_time=ts, fee=D(fee), order_done=done,  # type: ignore[arg-type]
    )


def later(minutes: int, base: datetime = T0) -> datetime:
    return base + timedelta(minutes=minutes)
