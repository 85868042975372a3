"""What protects a position, for people (status, summaries): read-only questions over the
order and position folds."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from events.vocabulary import ZERO
from projections.orders import Order, armed_stops, stop_level
from projections.state import Projections


class Protection(msgspec.Struct, frozen=True, kw_only=True):
    """`where`: "broker" (a stop the broker holds), "engine-side" (the broker can not hold
    it: the engine watches it), or "none". `covered` is how much of the position the stops
    cover; `distance` the mark's distance to the nearest stop (what it may still lose per
    share before the stop, gaps aside)."""

    symbol: str
    qty: Decimal
    where: str
    stop: Decimal | None = None
    distance: Decimal | None = None
    covered: Decimal = ZERO
    orders: tuple[str, ...] = ()


def _engine_side(proj: Projections, symbol: str) -> Order | None:
    """The latest filled entry of `symbol` whose protection the engine holds, if any."""
    coid = proj.orders.engine_side.get(symbol)
    o = proj.orders.orders.get(coid) if coid is not None else None
    return o if o is not None and o.filled_qty > 0 else None


def protection_of(proj: Projections, symbol: str) -> Protection:
    pos = proj.positions.positions.get(symbol)
    qty = pos.qty if pos is not None else ZERO
    bar = proj.market.last_bar.get(symbol)
    mark = bar.close if bar is not None else (pos.avg_cost if pos is not None else ZERO)
    stops = armed_stops(proj.orders, symbol) if qty else []
    if stops:
        levels = [stop_level(s, mark) for s in stops]
        nearest = max(levels) if qty > 0 else min(levels)
        covered = sum(((s.qty or ZERO) - s.filled_qty for s in stops), ZERO)
        where = "engine-side" if all(s.engine_side for s in stops) else "broker"
        return Protection(symbol=symbol, qty=qty, where=where, stop=nearest,
                          distance=(mark - nearest) if qty > 0 else (nearest - mark),
                          covered=min(covered, abs(qty)),
                          orders=tuple(s.client_order_id for s in stops))
    if qty:
        entry = _engine_side(proj, symbol)
        if entry is not None and entry.risk_stop is not None:
            return Protection(symbol=symbol, qty=qty, where="engine-side", stop=entry.risk_stop,
                              distance=(mark - entry.risk_stop) if qty > 0
                              else (entry.risk_stop - mark), covered=abs(qty))
    return Protection(symbol=symbol, qty=qty, where="none")


def describe(p: Protection) -> str:
    """One cell for a table: "97.50 broker (2.50 away)", "none"."""
    if p.where == "none" or p.stop is None:
        return "none" if p.qty else "-"
    part = "" if p.covered >= abs(p.qty) else f", covers {p.covered}"
    return f"{p.stop:.2f} {p.where} ({p.distance:.2f} away{part})"
