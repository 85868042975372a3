"""The protection model in the order fold: legs as orders, held until the parent fills,
settled with a parent that ends unfilled, sized to a partial fill, replaced stops, trailing
stops, and the loss budget of a flip."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from events.catalogue import (
    CancelRejected,
    CancelRequested,
    OrderAccepted,
    OrderCanceled,
    OrderLeg,
    OrderRejected,
    OrderReplaced,
    ReplaceRequested,
    StopLoss,
    TakeProfit,
    TrailingStopUpdated,
    leg_client_order_id,
)
from projections.orders import OrderStatus, armed_stops, would_move
from projections.state import Projections
from tests.factories import T0, approved, fill, submitted_chain

D = Decimal
S = OrderStatus
P = "mqd-" + "a" * 40
TP, SL = leg_client_order_id(P, "take_profit"), leg_client_order_id(P, "stop_loss")


def bracket(qty: str = "10", coid: str = P) -> Any:
    tp, sl = leg_client_order_id(coid, "take_profit"), leg_client_order_id(coid, "stop_loss")
    return approved(coid, qty=qty, at_risk="20", order_class="bracket",
                    take_profit=TakeProfit(limit_price=D(110)),
                    stop_loss=StopLoss(stop_price=D(98)), risk_stop=D(98), legs=(
                        OrderLeg(client_order_id=tp, role="take_profit", side="sell",
                                 order_type="limit", qty=D(qty), limit_price=D(110)),
                        OrderLeg(client_order_id=sl, role="stop_loss", side="sell",
                                 order_type="stop", qty=D(qty), stop_price=D(98))))


def run(*events: Any) -> Projections:
    p = Projections()
    for i, e in enumerate(events, start=1):
        p.apply(i, e)
    return p


def test_leg_ids_follow_one_rule_and_fit_alpaca() -> None:
    assert (TP, SL) == (P + "-tp", P + "-sl")
    assert max(len(TP), len(SL)) <= 48


def test_bracket_approval_creates_held_legs_that_reserve_nothing() -> None:
    p = run(bracket())
    o = p.orders.orders
    assert o[P].status == S.NEW and o[P].legs == (TP, SL)
    assert (o[TP].status, o[SL].status) == (S.HELD, S.HELD)
    assert (o[TP].parent_id, o[TP].leg_role, o[SL].leg_role) == (P, "take_profit", "stop_loss")
    assert o[SL].stop_price == D(98) and o[SL].protective and o[SL].reduce_only
    r = p.orders.reserved["AAPL"]
    # Only the entry holds shares, dollars and loss budget; the legs can only close it.
    assert (r.buy_qty, r.sell_qty, r.at_risk, r.orders) == (D(10), D(0), D(20), 1)
    assert p.orders.stops == {"AAPL": {SL}}
    assert armed_stops(p.orders, "AAPL") == []  # held, parent not filled: protects nothing


def test_parent_fill_arms_the_stop_and_broker_activation_moves_legs() -> None:
    p = run(bracket(), *submitted_chain(P), fill(P, qty="10", exec_id="x1", done=True))
    assert p.orders.orders[P].status == S.FILLED
    assert p.orders.orders[SL].status == S.HELD  # the broker says when it is live
    assert [s.client_order_id for s in armed_stops(p.orders, "AAPL")] == [SL]
    p.apply(10, OrderAccepted(ts=T0, client_order_id=TP, broker_order_id="b-tp"))
    assert p.orders.orders[TP].status == S.ACCEPTED
    # The stop triggers and fills; the broker cancels the take-profit.
    p.apply(11, fill(SL, qty="10", price="97.9", side="sell", exec_id="x2", done=True))
    p.apply(12, OrderCanceled(ts=T0, client_order_id=TP, reason="sibling filled"))
    assert (p.orders.orders[SL].status, p.orders.orders[TP].status) == (S.FILLED, S.CANCELED)
    assert p.positions.positions["AAPL"].qty == 0
    assert p.orders.stops == {} and p.orders.open_ids == set()
    assert p.orders.anomalies == []


def test_parent_rejected_or_canceled_unfilled_settles_its_legs_quietly() -> None:
    p = run(bracket(), *submitted_chain(P)[:1],
            OrderRejected(ts=T0, client_order_id=P, reason="no"))
    assert (p.orders.orders[TP].status, p.orders.orders[SL].status) == (S.REJECTED, S.REJECTED)
    assert p.orders.stops == {} and p.orders.open_ids == set()
    # A broker that reports the legs canceled too is confirming, not contradicting.
    assert would_move(p.orders.orders[SL], "order_canceled")
    p.apply(9, OrderCanceled(ts=T0, client_order_id=SL))
    assert p.orders.anomalies == []
    q = run(bracket(), *submitted_chain(P), OrderCanceled(ts=T0, client_order_id=P))
    assert (q.orders.orders[TP].status, q.orders.orders[SL].status) == (S.CANCELED, S.CANCELED)
    # ... but a leg that was not settled with its parent still refuses a second terminal.
    assert not would_move(q.orders.orders[P], "order_canceled")


def test_parent_ending_partially_filled_sizes_its_legs() -> None:
    p = run(bracket(), *submitted_chain(P), fill(P, qty="4", exec_id="x1"),
            OrderCanceled(ts=T0, client_order_id=P))
    o = p.orders.orders
    assert (o[TP].status, o[TP].qty, o[SL].qty) == (S.HELD, D(4), D(4))
    assert [s.client_order_id for s in armed_stops(p.orders, "AAPL")] == [SL]
    p.apply(20, OrderAccepted(ts=T0, client_order_id=SL, broker_order_id="b-sl", qty=D(4)))
    assert o[SL].status == S.ACCEPTED and o[SL].qty == D(4)


def test_cancel_refused_on_a_held_leg_returns_it_to_held() -> None:
    p = run(bracket(), CancelRequested(ts=T0, client_order_id=SL, reason="kill"))
    assert p.orders.orders[SL].status == S.PENDING_CANCEL
    p.apply(5, CancelRejected(ts=T0, client_order_id=SL, reason="no"))
    assert p.orders.orders[SL].status == S.HELD


def test_replacing_a_stop_moves_it_and_keeps_the_family() -> None:
    p = run(bracket(), *submitted_chain(P), fill(P, qty="10", exec_id="x1", done=True),
            OrderAccepted(ts=T0, client_order_id=SL, broker_order_id="b-sl"),
            ReplaceRequested(ts=T0, client_order_id=SL, new_client_order_id=SL + "-r1",
                             stop_price=D("99.5")),
            # The stream's "replaced" can arrive before the REST answer, without terms.
            OrderReplaced(ts=T0, client_order_id=SL, new_client_order_id=SL + "-r1",
                          new_broker_order_id="b-sl2"))
    o = p.orders.orders
    new = o[SL + "-r1"]
    assert o[SL].status == S.REPLACED and new.status == S.SUBMITTED
    assert (new.stop_price, new.qty, new.parent_id, new.leg_role) == (D("99.5"), D(10), P,
                                                                      "stop_loss")
    assert o[P].legs == (TP, SL + "-r1")
    assert p.orders.stops == {"AAPL": {SL + "-r1"}}
    assert [s.stop_price for s in armed_stops(p.orders, "AAPL")] == [D("99.5")]


def test_replaced_held_leg_stays_held() -> None:
    p = run(bracket(), OrderReplaced(ts=T0, client_order_id=SL, new_client_order_id="sl2",
                                     new_broker_order_id="b2", stop_price=D(97)))
    assert p.orders.orders["sl2"].status == S.HELD and p.orders.orders["sl2"].stop_price == D(97)


def test_trailing_stop_updates_follow_the_broker() -> None:
    coid = "trail-1"
    p = run(approved(coid, side="sell", qty="5", order_type="trailing_stop",
                     trail_percent=D(2), protective=True, reduce_only=True),
            *submitted_chain(coid))
    assert p.orders.reserved.get("AAPL") is None or p.orders.reserved["AAPL"].sell_qty == 0
    p.apply(9, TrailingStopUpdated(ts=T0, client_order_id=coid, hwm=D(105),
                                   stop_price=D("102.9")))
    o = p.orders.orders[coid]
    assert (o.hwm, o.stop_price) == (D(105), D("102.9"))
    assert armed_stops(p.orders, "AAPL") == [o]
    p.apply(10, TrailingStopUpdated(ts=T0, client_order_id="nope", hwm=D(1), stop_price=D(1)))
    assert p.orders.anomalies[-1].state == "unknown"


def test_flip_keeps_the_whole_loss_budget_of_the_new_short() -> None:
    """Sell 15 against long 10: the gate sized at_risk (10.00) on the 5 that open the
    short; the position must hold all of it, not 5/15 of it (3.33)."""
    p = run(approved("long", qty="10", at_risk="20"), *submitted_chain("long"),
            fill("long", qty="10", exec_id="l1", done=True),
            approved("flip", side="sell", qty="15", at_risk="10.00"), *submitted_chain("flip"),
            fill("flip", qty="15", side="sell", exec_id="f1", done=True))
    assert p.positions.positions["AAPL"].qty == D(-5)
    assert p.risk.open_risk["AAPL"] == D("10.00")


def test_flip_in_partial_fills_adds_up_to_the_budget() -> None:
    p = run(approved("long", qty="10", at_risk="20"), *submitted_chain("long"),
            fill("long", qty="10", exec_id="l1", done=True),
            approved("flip", side="sell", qty="15", at_risk="10.00"), *submitted_chain("flip"),
            fill("flip", qty="8", side="sell", exec_id="f1"),
            fill("flip", qty="4", side="sell", exec_id="f2"),
            fill("flip", qty="3", side="sell", exec_id="f3", done=True))
    assert p.positions.positions["AAPL"].qty == D(-5)
    assert p.risk.open_risk["AAPL"] == D("10.00")
