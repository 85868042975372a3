from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from events.catalogue import (
    CancelRejected,
    CancelRequested,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    OrderReplaced,
    OrderSubmitAmbiguous,
    OrderSubmitRequested,
    OrderSubmitted,
    ReplaceRequested,
)
from projections.orders import (
    FILL_TARGET,
    ORDER_EVENT_TAGS,
    RESUME_TARGET,
    TERMINAL,
    TRANSITIONS,
    OrdersState,
    OrderStatus,
    _recount,
)
from projections.state import Projections
from tests.factories import T0, approved, fill

COID = "c1"


def event_for(tag: str, n: int = 0) -> Any:
    kw: dict[str, Any] = {"ts": T0, "client_order_id": COID}
    if tag == "fill":
        return fill(COID, qty="1", exec_id=f"x{n}")
    return {
        "order_submit_requested": lambda: OrderSubmitRequested(**kw, intent_id="i-c1", symbol="AAPL"),
        "order_submitted": lambda: OrderSubmitted(**kw, broker_order_id="b1"),
        "order_submit_ambiguous": lambda: OrderSubmitAmbiguous(**kw, kind="timeout", error="t"),
        "order_accepted": lambda: OrderAccepted(**kw, broker_order_id="b1"),
        "cancel_requested": lambda: CancelRequested(**kw, reason="r"),
        "cancel_rejected": lambda: CancelRejected(**kw, reason="r"),
        "order_canceled": lambda: OrderCanceled(**kw),
        "order_rejected": lambda: OrderRejected(**kw, reason="r"),
        "order_expired": lambda: OrderExpired(**kw),
        "replace_requested": lambda: ReplaceRequested(**kw, new_client_order_id="c1-r1"),
        "order_replaced": lambda: OrderReplaced(**kw, new_client_order_id=f"c1-r{n}",
                                                new_broker_order_id=f"b-r{n}"),
    }[tag]()


def projections_with_order_in(status: OrderStatus, filled: str = "0") -> Projections:
    p = Projections()
    p.apply(1, approved(COID, qty="10"))
    order = p.orders.orders[COID]
    order.status = status
    order.filled_qty = Decimal(filled)
    if status in TERMINAL:
        p.orders.open_ids.discard(COID)
    return p


PAIRS = [(s, t) for s in OrderStatus for t in ORDER_EVENT_TAGS]


@pytest.mark.parametrize(("status", "tag"), PAIRS, ids=[f"{s.value}-{t}" for s, t in PAIRS])
def test_every_state_event_pair(status: OrderStatus, tag: str) -> None:
    p = projections_with_order_in(status)
    p.apply(2, event_for(tag))
    order = p.orders.orders[COID]
    target = TRANSITIONS[status].get(tag)
    if target is None:
        assert order.status == status, "a refused event must not move the order"
        assert len(p.orders.anomalies) == 1
        a = p.orders.anomalies[0]
        assert (a.seq, a.client_order_id, a.state, a.event_type) == (2, COID, status.value, tag)
    else:
        assert p.orders.anomalies == []
        if target == FILL_TARGET:
            expected = (OrderStatus.PENDING_CANCEL if status == OrderStatus.PENDING_CANCEL
                        else OrderStatus.PARTIALLY_FILLED)
        elif target == RESUME_TARGET:
            expected = OrderStatus.ACCEPTED
        else:
            expected = OrderStatus(target)
        assert order.status == expected
        assert (COID in p.orders.open_ids) == (expected not in TERMINAL)


def test_table_has_no_exits_from_terminal_states() -> None:
    for s in TERMINAL:
        assert TRANSITIONS[s] == {}
    assert set(TRANSITIONS) == set(OrderStatus)


def test_fill_completing_the_quantity_fills_the_order() -> None:
    p = projections_with_order_in(OrderStatus.ACCEPTED)
    p.apply(2, fill(COID, qty="4", exec_id="a"))
    assert p.orders.orders[COID].status == OrderStatus.PARTIALLY_FILLED
    p.apply(3, fill(COID, qty="6", exec_id="b"))
    assert p.orders.orders[COID].status == OrderStatus.FILLED
    assert COID not in p.orders.open_ids


def test_cancel_rejected_resumes_partially_filled() -> None:
    p = projections_with_order_in(OrderStatus.PENDING_CANCEL, filled="3")
    p.apply(2, event_for("cancel_rejected"))
    assert p.orders.orders[COID].status == OrderStatus.PARTIALLY_FILLED


def test_duplicate_fill_is_counted_once() -> None:
    p = projections_with_order_in(OrderStatus.ACCEPTED)
    f = fill(COID, qty="4", price="100", exec_id="same")
    for seq in (2, 3, 4):
        p.apply(seq, f)
    assert p.orders.orders[COID].filled_qty == Decimal(4)
    assert p.positions.positions["AAPL"].qty == Decimal(4)
    assert p.account.cash_since_snapshot == Decimal(-400)


def test_fill_on_a_terminal_order_is_an_anomaly_but_still_counted() -> None:
    # A fill reported after a cancel happened at the broker: the position must reflect it.
    p = projections_with_order_in(OrderStatus.CANCELED)
    p.apply(2, fill(COID, qty="2", exec_id="late"))
    assert p.orders.orders[COID].status == OrderStatus.CANCELED
    assert p.orders.anomalies[0].event_type == "fill"
    assert p.positions.positions["AAPL"].qty == Decimal(2)


def test_event_for_unknown_order_is_an_anomaly() -> None:
    p = Projections()
    p.apply(1, event_for("order_accepted"))
    assert p.orders.anomalies[0].state == "unknown"


class OrderMachine(RuleBasedStateMachine):
    """Random event sequences never reach an impossible state."""

    def __init__(self) -> None:
        super().__init__()
        self.p = Projections()
        # It holds a loss budget and would complete a day trade: every reserved figure moves.
        self.p.apply(1, approved(COID, qty="10", at_risk="7.5", day_trade=True))
        self.seq = 1
        self.history: list[OrderStatus] = [OrderStatus.NEW]
        self.filled = Decimal(0)

    @rule(tag=st.sampled_from(ORDER_EVENT_TAGS), dup=st.booleans())
    def send(self, tag: str, dup: bool) -> None:
        self.seq += 1
        before = self.p.orders.orders[COID].status
        n_anomalies = len(self.p.orders.anomalies)
        ev = event_for(tag, self.seq if not dup else 0)
        self.p.apply(self.seq, ev)
        after = self.p.orders.orders[COID].status
        allowed = TRANSITIONS[before].get(tag) is not None
        if not allowed:
            assert after == before
            is_dup_fill = tag == "fill" and len(self.p.orders.anomalies) == n_anomalies
            assert len(self.p.orders.anomalies) == n_anomalies + 1 or is_dup_fill
        self.history.append(after)

    @invariant()
    def terminal_is_forever(self) -> None:
        first_terminal: OrderStatus | None = None
        for s in self.history:
            if first_terminal is not None:
                assert s == first_terminal
            elif s in TERMINAL:
                first_terminal = s

    @invariant()
    def consistent(self) -> None:
        o = self.p.orders.orders[COID]
        assert o.status in TRANSITIONS
        assert o.filled_qty >= self.filled
        self.filled = o.filled_qty
        assert (COID in self.p.orders.open_ids) == (o.status not in TERMINAL)
        if o.status == OrderStatus.FILLED:
            assert o.filled_qty >= 10  # our fills never say order_done
        if o.status in (OrderStatus.NEW, OrderStatus.PENDING_SUBMIT):
            assert o.broker_order_id is None or o.filled_qty > 0
        r = self.p.orders.reserved.get("AAPL")
        expect = sum((max(x.qty - x.filled_qty, Decimal(0))  # type: ignore[operator]
                      for x in self.p.orders.orders.values() if x.status not in TERMINAL),
                     Decimal(0))
        assert (r.buy_qty if r else 0) == expect, "reservations must track the unfilled part"
        # What each order counts is what a recount from scratch gives (the fold skips the
        # recount between open states: this holds it to the slow path), and the symbol's
        # reservation is the sum of what its orders count.
        every = list(self.p.orders.orders.values())  # a replace adds the replacement
        for x in every:
            fresh = msgspec.structs.replace(x, counted_qty=Decimal(0),
                                            counted_notional=Decimal(0),
                                            counted_risk=Decimal(0), counted_day_trade=False)
            _recount(OrdersState(), fresh)
            assert (x.counted_qty, x.counted_notional, x.counted_risk, x.counted_day_trade) == (
                fresh.counted_qty, fresh.counted_notional, fresh.counted_risk,
                fresh.counted_day_trade), x.client_order_id
        if r is not None:
            assert (r.buy_notional, r.at_risk, r.day_trades, r.orders) == (
                sum((x.counted_notional for x in every), Decimal(0)),
                sum((x.counted_risk for x in every), Decimal(0)),
                sum(int(x.counted_day_trade) for x in every),
                sum(int(bool(x.counted_qty or x.counted_notional or x.counted_risk))
                    for x in every))
        # fills are counted once per execution id, whatever the state machine said
        assert self.p.positions.positions.get("AAPL") is None or \
            self.p.positions.positions["AAPL"].qty == o.filled_qty


TestOrderMachine = OrderMachine.TestCase
TestOrderMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
