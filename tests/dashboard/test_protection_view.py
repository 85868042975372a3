"""The dashboard shows a position's live stop order (issue 11) before any intent's stop."""

from __future__ import annotations

from decimal import Decimal

from engine.dashboard.fold import DashboardFold
from engine.dashboard.views import protection
from projections.state import Projections
from tests.factories import T0, approved, bar, fill, submitted_chain

D = Decimal


def test_a_live_stop_is_shown_as_live_at_the_broker() -> None:
    p, fold = Projections(), DashboardFold()
    events = [bar("AAPL", T0, close="100"), approved("e", qty="5"), *submitted_chain("e"),
              fill("e", qty="5", exec_id="x", done=True)]
    for i, e in enumerate(events, start=1):
        p.apply(i, e)
    assert protection(p, fold, "AAPL")["kind"] == "none"
    for i, e in enumerate([approved("s", side="sell", qty="5", order_type="stop",
                                    stop_price=D(97), protective=True, reduce_only=True),
                           *submitted_chain("s")], start=10):
        p.apply(i, e)
    view = protection(p, fold, "AAPL")
    assert (view["kind"], view["stop_price"], view["live_at_broker"], view["orders"]) == (
        "broker_stop", "97", True, ["s"])
