"""Shared bits for benchmarks: a realistic event mix, timing helpers, JSON output."""

from __future__ import annotations

import json
import platform
import statistics
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from events.base import Event
from events.catalogue import (
    BarReceived,
    FillReceived,
    OrderAccepted,
    OrderIntent,
    OrderSubmitRequested,
    OrderSubmitted,
    RiskApproved,
)
from events.market import Bar

T0 = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "SPY", "QQQ", "TSLA", "AMD")


def event_mix(n: int, *, bars_per_order: int = 14) -> Iterator[Event]:
    """What a live session logs: mostly minute bars for a handful of symbols, and for every
    `bars_per_order` bars one order's life (intent, approval, submit, ack, accept, two fills).
    With the default that is 2 in 3 events bars, 1 in 3 order lifecycle."""
    i = 0
    k = 0
    while i < n:
        for _ in range(bars_per_order):
            sym = SYMBOLS[k % len(SYMBOLS)]
            start = T0 + timedelta(minutes=k // len(SYMBOLS))
            px = Decimal(100 + (k * 7919) % 500) / 4
            b = Bar(symbol=sym, start=start, interval_s=60, open=px, high=px + Decimal("0.25"),
                    low=px - Decimal("0.25"), close=px + Decimal("0.05"),
                    volume=Decimal(1000 + k % 977), vwap=px, trade_count=50 + k % 31,
                    provider="bench")
            yield BarReceived(ts=b.end, bar=b)
            k += 1
            i += 1
            if i >= n:
                return
        sym = SYMBOLS[k % len(SYMBOLS)]
        ts = T0 + timedelta(minutes=k // len(SYMBOLS), seconds=1)
        iid = f"bench-{k}"
        coid = f"mqd-{k:012d}"
        side = "buy" if k % 2 else "sell"
        order: list[Event] = [
            OrderIntent(ts=ts, intent_id=iid, strategy="bench", symbol=sym, side=side,
                        qty=Decimal(2)),
            RiskApproved(ts=ts, intent_id=iid, client_order_id=coid, strategy="bench",
                         symbol=sym, side=side, order_type="market", qty=Decimal(2),  # type: ignore[arg-type]
                         notional=None, limit_price=None, time_in_force="day",
                         reference_price=Decimal("101.25"), estimated_notional=Decimal("202.50"),
                         at_risk=Decimal("4.05")),
            OrderSubmitRequested(ts=ts, client_order_id=coid, intent_id=iid, symbol=sym),
            OrderSubmitted(ts=ts, client_order_id=coid, broker_order_id=f"b-{k}"),
            OrderAccepted(ts=ts, client_order_id=coid, broker_order_id=f"b-{k}"),
            FillReceived(ts=ts, client_order_id=coid, broker_order_id=f"b-{k}",
                         execution_id=f"x-{k}-1", symbol=sym, side=side, qty=Decimal(1),  # type: ignore[arg-type]
                         price=Decimal("101.26"), broker_time=ts),
            FillReceived(ts=ts, client_order_id=coid, broker_order_id=f"b-{k}",
                         execution_id=f"x-{k}-2", symbol=sym, side=side, qty=Decimal(1),  # type: ignore[arg-type]
                         price=Decimal("101.27"), broker_time=ts, order_done=True),
        ]
        for e in order:
            yield e
            i += 1
            if i >= n:
                return


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def emit(name: str, figures: dict[str, Any]) -> None:
    out = {"bench": name, "python": platform.python_version(), "machine": platform.machine()}
    out.update(figures)
    sys.stdout.write(json.dumps(out, sort_keys=False) + "\n")
    sys.stdout.flush()
