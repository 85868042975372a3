"""The checks' context works out where an order takes the position once, in its
constructor; property: for any position, open orders and order, those figures are the
definitions the checks were written against, and the context can not be changed after."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.risk.checks import Context, Sized
from engine.risk.limits import RiskLimits
from events.catalogue import OrderIntent
from events.vocabulary import ZERO
from projections.orders import Reservation

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


class FakeView:
    """The two questions the constructor asks, answered from fixed figures."""

    def __init__(self, pos: Decimal, res: Reservation) -> None:
        self.now, self._pos, self._res = NOW, pos, res

    def position(self, symbol: str) -> Decimal:
        return self._pos

    def reserved(self, symbol: str) -> Reservation:
        return self._res


qtys = st.decimals(min_value=-50, max_value=50, places=2, allow_nan=False, allow_infinity=False)
sizes = st.decimals(min_value=Decimal("0.01"), max_value=50, places=2)


@settings(max_examples=500, deadline=None)
@given(qtys, st.decimals(min_value=0, max_value=30, places=2),
       st.decimals(min_value=0, max_value=30, places=2), sizes, st.sampled_from(["buy", "sell"]))
def test_position_figures_are_their_definitions(pos: Decimal, buys: Decimal, sells: Decimal,
                                                qty: Decimal, side: str) -> None:
    intent = OrderIntent(ts=NOW, intent_id="s:AAPL:x:0", strategy="s", symbol="AAPL",
                         side=side, qty=qty)
    res = Reservation(buy_qty=buys, sell_qty=sells)
    view: Any = FakeView(pos, res)
    market = Context(intent, view, RiskLimits(), None, None)
    c = Sized(market, price=Decimal("101.5"), qty=qty, fractional=False)
    buy = side == "buy"
    effective = pos + res.buy_qty if buy else pos - res.sell_qty
    reducing = min(qty, max(-effective if buy else effective, ZERO))
    assert (c.pos, c.res, c.effective, c.reducing, c.opening, c.notional) == (
        pos, res, effective, reducing, qty - reducing, qty * Decimal("101.5"))
    assert (c.sym, c.buy, c.now, c.last, c.fractionable) == ("AAPL", buy, NOW, None, False)
    with pytest.raises(AttributeError):
        c.opening = ZERO
    with pytest.raises(AttributeError):
        del market.intent
