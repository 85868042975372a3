"""Alpaca's words -> neutral kinds: every trade-update event and order status that Alpaca's
docs, alpaca-py's enums or the fake know, through the real parser, each with the kind the
engine must act on. The tables are written out here, not derived from the adapter's, so a
wrong entry there fails."""

from __future__ import annotations

from typing import Any

import pytest
from alpaca.trading.enums import OrderStatus as SdkOrderStatus
from alpaca.trading.enums import TradeEvent as SdkTradeEvent

from engine.brokers.alpaca_parse import AlpacaParseError, parse_order, parse_trade_update
from engine.brokers.kinds import CLOSED_STATES, OrderState, UpdateKind

K = UpdateKind
S = OrderState

# Alpaca's streaming docs (common and rare events, 2026's `accepted` and `trade_bust`),
# alpaca-py's TradeEvent, and what tests/fake_alpaca sends.
EXPECTED_KINDS: dict[str, UpdateKind] = {
    "new": K.ACCEPTED,
    "accepted": K.ACCEPTED,
    "pending_new": K.PENDING_NEW,
    "accepted_for_bidding": K.PENDING_NEW,
    "pending_cancel": K.PENDING_CANCEL,
    "pending_replace": K.PENDING_REPLACE,
    "calculated": K.PENDING_SETTLEMENT,
    "partial_fill": K.PARTIAL_FILL,
    "fill": K.FILL,
    "canceled": K.CANCELED,
    "expired": K.EXPIRED,
    "done_for_day": K.EXPIRED,
    "rejected": K.REJECTED,
    "replaced": K.REPLACED,
    "order_cancel_rejected": K.CANCEL_REJECTED,
    "order_replace_rejected": K.REPLACE_REJECTED,
    "stopped": K.STOPPED,
    "suspended": K.SUSPENDED,
    "restated": K.RESTATED,
    "trade_bust": K.TRADE_BUST,
}

# alpaca-py's OrderStatus (Alpaca's documented order statuses).
EXPECTED_STATES: dict[str, OrderState] = {
    "pending_new": S.PENDING_NEW,
    "pending_review": S.PENDING_NEW,
    "new": S.WORKING,
    "accepted": S.WORKING,
    "accepted_for_bidding": S.WORKING,
    "calculated": S.WORKING,
    "partially_filled": S.PARTIALLY_FILLED,
    "held": S.HELD,
    "pending_cancel": S.PENDING_CANCEL,
    "pending_replace": S.PENDING_REPLACE,
    "filled": S.FILLED,
    "canceled": S.CANCELED,
    "expired": S.EXPIRED,
    "done_for_day": S.EXPIRED,
    "rejected": S.REJECTED,
    "replaced": S.REPLACED,
    "stopped": S.STOPPED,
    "suspended": S.SUSPENDED,
}

# What the engine has always counted as closed at the broker.
CLOSED = {"filled", "canceled", "expired", "rejected", "replaced", "done_for_day", "stopped",
          "suspended"}

ORDER: dict[str, Any] = {
    "id": "61e69015-8549-4bfd-b9c3-01e75843f47d", "client_order_id": "c-1", "symbol": "AAPL",
    "side": "buy", "type": "limit", "status": "new", "qty": "10", "limit_price": "190.01",
    "filled_qty": "0", "time_in_force": "day", "created_at": "2026-01-02T15:04:05Z",
}


def message(event: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"event": event, "order": ORDER, "timestamp": "2026-01-02T15:04:06Z"}
    if event in ("fill", "partial_fill"):
        body |= {"execution_id": "x-1", "qty": "4", "price": "190.01", "position_qty": "4"}
    return body | extra


@pytest.mark.parametrize(("event", "kind"), sorted(EXPECTED_KINDS.items()))
def test_every_event_name_has_its_neutral_kind(event: str, kind: UpdateKind) -> None:
    update = parse_trade_update(message(event))
    assert update.kind is kind
    assert update.event == event  # the broker's word, kept for the record


@pytest.mark.parametrize(("status", "state"), sorted(EXPECTED_STATES.items()))
def test_every_order_status_has_its_neutral_state(status: str, state: OrderState) -> None:
    order = parse_order({**ORDER, "status": status})
    assert order.state is state and order.status == status
    assert order.is_open is (status not in CLOSED)


def test_nothing_alpaca_py_knows_is_left_unmapped() -> None:
    # A new alpaca-py release with a new word should fail here, not in production.
    assert {e.value for e in SdkTradeEvent} <= set(EXPECTED_KINDS)
    assert {s.value for s in SdkOrderStatus} <= set(EXPECTED_STATES)
    assert {s for s, st in EXPECTED_STATES.items() if st in CLOSED_STATES} == CLOSED


@pytest.mark.parametrize("event", ["order_teleported", "NEW", "fill ", ""])
def test_an_unknown_event_name_is_refused_not_guessed(event: str) -> None:
    with pytest.raises(AlpacaParseError, match="event"):
        parse_trade_update(message(event))


def test_an_unknown_status_keeps_the_order_open() -> None:
    # never close an order on a word we do not know; reconciliation will look again
    order = parse_order({**ORDER, "status": "pending_teleport"})
    assert order.state is S.UNKNOWN and order.is_open and order.status == "pending_teleport"


def test_legs_get_their_own_state() -> None:
    parent = parse_order({**ORDER, "status": "filled", "order_class": "bracket", "legs": [
        {**ORDER, "id": "leg-tp", "client_order_id": "c-1-tp", "side": "sell", "status": "new"},
        {**ORDER, "id": "leg-sl", "client_order_id": "c-1-sl", "side": "sell", "type": "stop",
         "stop_price": "180", "status": "held"},
    ]})
    assert parent.state is S.FILLED and not parent.is_open
    assert [(leg.state, leg.parent_broker_order_id) for leg in parent.legs] == [
        (S.WORKING, ORDER["id"]), (S.HELD, ORDER["id"])]
