"""The neutral words a broker adapter speaks to the engine.

Each adapter translates its broker's vocabulary (Alpaca's `partial_fill`, `done_for_day`,
`order_cancel_rejected`, statuses like `accepted_for_bidding`, ...) into these kinds, and the
execution service decides on nothing else. So a second broker, or the simulated one, needs no
change outside its adapter, and the service never learns a broker's dialect. The broker's own
word is still carried next to the kind (`TradeUpdate.event`, `BrokerOrder.status`) for the
record and for messages, never for a decision.
"""

from __future__ import annotations

from enum import StrEnum


class UpdateKind(StrEnum):
    """What one trade update says happened to an order."""

    ACCEPTED = "accepted"  # the broker acknowledged it and it is working
    PENDING_NEW = "pending_new"  # the broker has it but has not acknowledged it yet
    PENDING_CANCEL = "pending_cancel"
    PENDING_REPLACE = "pending_replace"
    # Done for now, the broker still settling it (the order stays open until it says more).
    PENDING_SETTLEMENT = "pending_settlement"
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"  # the last execution: the order is complete
    CANCELED = "canceled"
    EXPIRED = "expired"  # its time in force ran out (including "done for the day")
    REJECTED = "rejected"
    REPLACED = "replaced"
    CANCEL_REJECTED = "cancel_rejected"
    REPLACE_REJECTED = "replace_rejected"
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    RESTATED = "restated"  # the broker corrected the order's terms on its own
    TRADE_BUST = "trade_bust"  # an execution was broken (undone) by the venue
    # A trailing stop's mark moved (`order.hwm`, `order.stop_price` the new values).
    TRAILING_MOVED = "trailing_moved"


FILL_KINDS = frozenset({UpdateKind.FILL, UpdateKind.PARTIAL_FILL})
# The broker knows the order but it is not working yet, or a request on it is pending.
PENDING_KINDS = frozenset({UpdateKind.PENDING_NEW, UpdateKind.PENDING_CANCEL,
                           UpdateKind.PENDING_REPLACE, UpdateKind.PENDING_SETTLEMENT})


class OrderState(StrEnum):
    """Where an order stands at the broker."""

    PENDING_NEW = "pending_new"  # received, not acknowledged
    WORKING = "working"  # acknowledged and live (or being worked: bidding, calculating)
    PARTIALLY_FILLED = "partially_filled"
    HELD = "held"  # a leg waiting for its parent (or its trigger) at the broker
    PENDING_CANCEL = "pending_cancel"
    PENDING_REPLACE = "pending_replace"
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"
    REPLACED = "replaced"
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    # A status the adapter does not know: treated as open, so nothing is closed on a guess.
    UNKNOWN = "unknown"


CLOSED_STATES = frozenset({OrderState.FILLED, OrderState.CANCELED, OrderState.EXPIRED,
                           OrderState.REJECTED, OrderState.REPLACED, OrderState.STOPPED,
                           OrderState.SUSPENDED})
