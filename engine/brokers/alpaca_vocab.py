"""Alpaca's words for what happens to an order -> the neutral kinds of `engine.brokers.kinds`.

The only place that knows Alpaca's trade-update event names and order statuses. Sources:
Alpaca's streaming docs (trade_updates events, including the rarer ones and the 2026 `accepted`
and `trade_bust`) and alpaca-py's `OrderStatus` / `TradeEvent` enums.
"""

from __future__ import annotations

from types import MappingProxyType

from .kinds import OrderState, UpdateKind

K = UpdateKind
S = OrderState

EVENT_KINDS = MappingProxyType({
    "new": K.ACCEPTED,  # routed to the venue: working
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
    # Done for the day and never coming back for a day order: for us it has expired.
    "done_for_day": K.EXPIRED,
    "rejected": K.REJECTED,
    "replaced": K.REPLACED,
    "order_cancel_rejected": K.CANCEL_REJECTED,
    "order_replace_rejected": K.REPLACE_REJECTED,
    "stopped": K.STOPPED,
    "suspended": K.SUSPENDED,
    "restated": K.RESTATED,
    "trade_bust": K.TRADE_BUST,
})

STATUS_STATES = MappingProxyType({
    "pending_new": S.PENDING_NEW,
    "pending_review": S.PENDING_NEW,
    "new": S.WORKING,
    "accepted": S.WORKING,
    "accepted_for_bidding": S.WORKING,
    "calculated": S.WORKING,  # settling; Alpaca has not closed it yet
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
})


def update_kind(event: str) -> UpdateKind | None:
    """The kind of a trade-update event, or None for a name Alpaca has not documented."""
    return EVENT_KINDS.get(event)


def order_state(status: str) -> OrderState:
    """An order status as a neutral state; one we do not know is UNKNOWN (kept open), so a
    new Alpaca status never closes an order on a guess nor fails a whole listing."""
    return STATUS_STATES.get(status, S.UNKNOWN)
