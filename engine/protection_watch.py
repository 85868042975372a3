"""Stops the engine watches itself: a position the broker can not protect (a fractional
entry, where `risk.engine_side_protection` allowed it) is closed by the engine when a bar
reaches its stop.

This is weaker than a stop at the broker, and says so everywhere (`status`: "engine-side
only"): it acts only while the engine runs, on a bar's close (so the exit fills at a later
bar's price, not at the stop), and never while the engine is down. It goes through the gate
like any order (reduce-only, so no limit blocks it).
"""

from __future__ import annotations

from datetime import datetime

from events.catalogue import OrderIntent
from events.market import Bar
from projections.orders import open_orders
from projections.protection import protection_of
from projections.state import Projections

STRATEGY = "engine-stop"


def engine_side_exits(proj: Projections, bar: Bar, now: datetime) -> list[OrderIntent]:
    """The exit for `bar.symbol` if its engine-side stop was reached, else nothing."""
    sym = bar.symbol
    if sym not in proj.orders.engine_side:
        return []  # the common case, and cheap: nothing here is watched by the engine
    p = protection_of(proj, sym)
    if p.where != "engine-side" or p.stop is None or p.qty == 0:
        return []
    long = p.qty > 0
    if (bar.low > p.stop) if long else (bar.high < p.stop):
        return []
    closing = "sell" if long else "buy"
    if any(o.side == closing for o in open_orders(proj.orders, sym)):
        return []  # an exit is already on its way
    return [OrderIntent(
        ts=now, intent_id=f"{STRATEGY}:{sym}:{bar.start:%Y%m%dT%H%M%S}", strategy=STRATEGY,
        symbol=sym, side=closing, qty=abs(p.qty), reduce_only=True, signal_time=bar.end,
        reason=f"engine-side stop {p.stop} reached ({'low' if long else 'high'} "
               f"{bar.low if long else bar.high})")]
