"""Orders and their state machine, as a fold over the log.

    new -> pending_submit -> submitted -> accepted -> partially_filled -> filled
    with canceled, rejected, expired and replaced as terminal branches and pending_cancel
    between a live order and its cancel.

`TRANSITIONS` is the whole table. Any (state, event) pair not in it is refused: the order keeps
its state and an `Anomaly` is recorded (never an exception), so a duplicate or out-of-order
broker message can not move an order backwards or crash a replay.

Fills are special: money moved, so a fill is always *counted* (filled quantity, positions)
once per execution id, even when the state machine refuses it as a transition.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

import msgspec

from events.catalogue import (
    CancelRejected,
    CancelRequested,
    FillReceived,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    OrderReplaced,
    OrderSubmitAmbiguous,
    OrderSubmitRequested,
    OrderSubmitted,
    OrphanOrderAdopted,
    ReplaceRequested,
    RiskApproved,
)

ZERO = Decimal(0)


class OrderStatus(StrEnum):
    NEW = "new"
    PENDING_SUBMIT = "pending_submit"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    PENDING_CANCEL = "pending_cancel"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    REPLACED = "replaced"


S = OrderStatus
TERMINAL = frozenset({S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED, S.REPLACED})
OPEN = frozenset(S) - TERMINAL

# Targets that depend on the order rather than the event.
FILL_TARGET = "<fill>"  # filled if complete, else partially filled (pending_cancel stays)
RESUME_TARGET = "<resume>"  # back to partially_filled or accepted after a refused cancel

# The event types that drive the state machine, by their log tags.
ORDER_EVENT_TAGS = (
    "order_submit_requested",
    "order_submitted",
    "order_submit_ambiguous",
    "order_accepted",
    "fill",
    "cancel_requested",
    "cancel_rejected",
    "order_canceled",
    "order_rejected",
    "order_expired",
    "replace_requested",
    "order_replaced",
)

TRANSITIONS: dict[OrderStatus, dict[str, str]] = {
    S.NEW: {
        "order_submit_requested": S.PENDING_SUBMIT,
        "order_rejected": S.REJECTED,
        "order_canceled": S.CANCELED,
    },
    S.PENDING_SUBMIT: {
        "order_submit_requested": S.PENDING_SUBMIT,  # resubmit after a genuine "not found"
        "order_submit_ambiguous": S.PENDING_SUBMIT,
        "order_submitted": S.SUBMITTED,
        "order_accepted": S.ACCEPTED,  # the stream can beat the REST answer
        "fill": FILL_TARGET,
        "cancel_requested": S.PENDING_CANCEL,
        "order_canceled": S.CANCELED,
        "order_rejected": S.REJECTED,
        "order_expired": S.EXPIRED,
    },
    S.SUBMITTED: {
        "order_accepted": S.ACCEPTED,
        "fill": FILL_TARGET,
        "cancel_requested": S.PENDING_CANCEL,
        "order_canceled": S.CANCELED,
        "order_rejected": S.REJECTED,
        "order_expired": S.EXPIRED,
        "replace_requested": S.SUBMITTED,
        "order_replaced": S.REPLACED,
    },
    S.ACCEPTED: {
        "fill": FILL_TARGET,
        "cancel_requested": S.PENDING_CANCEL,
        "order_canceled": S.CANCELED,
        "order_rejected": S.REJECTED,
        "order_expired": S.EXPIRED,
        "replace_requested": S.ACCEPTED,
        "order_replaced": S.REPLACED,
    },
    S.PARTIALLY_FILLED: {
        "fill": FILL_TARGET,
        "cancel_requested": S.PENDING_CANCEL,
        "order_canceled": S.CANCELED,
        "order_expired": S.EXPIRED,
        "replace_requested": S.PARTIALLY_FILLED,
        "order_replaced": S.REPLACED,
    },
    S.PENDING_CANCEL: {
        "fill": FILL_TARGET,
        "cancel_requested": S.PENDING_CANCEL,  # a retried cancel (kill switch)
        "cancel_rejected": RESUME_TARGET,
        "order_canceled": S.CANCELED,
        "order_expired": S.EXPIRED,
        "order_replaced": S.REPLACED,
    },
    S.FILLED: {},
    S.CANCELED: {},
    S.REJECTED: {},
    S.EXPIRED: {},
    S.REPLACED: {},
}


class Order(msgspec.Struct, kw_only=True):
    """One order as the log tells it. Mutable inside the fold; callers get it read-only."""

    client_order_id: str
    intent_id: str
    strategy: str
    symbol: str
    side: str
    order_type: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    time_in_force: str
    status: OrderStatus = S.NEW
    reference_price: Decimal = ZERO
    at_risk: Decimal = ZERO
    reduce_only: bool = False
    day_trade: bool = False
    broker_order_id: str | None = None
    filled_qty: Decimal = ZERO
    filled_notional: Decimal = ZERO
    fees: Decimal = ZERO
    submit_attempts: int = 0
    ambiguous: str = ""
    replaced_by: str | None = None
    replaces: str | None = None
    reason: str = ""
    created_seq: int = 0
    updated_seq: int = 0
    # What this order currently contributes to `OrdersState.reserved` (see `_recount`).
    counted_qty: Decimal = ZERO
    counted_notional: Decimal = ZERO
    counted_risk: Decimal = ZERO
    counted_day_trade: bool = False

    @property
    def is_open(self) -> bool:
        return self.status not in TERMINAL

    @property
    def avg_fill_price(self) -> Decimal | None:
        return self.filled_notional / self.filled_qty if self.filled_qty else None



class Anomaly(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    client_order_id: str
    state: str
    event_type: str
    detail: str = ""


class Reservation(msgspec.Struct, kw_only=True):
    """What a symbol's open orders still commit: unfilled shares and dollars per side, the
    loss budget their unfilled part holds, and how many would complete a day trade."""

    buy_qty: Decimal = ZERO
    sell_qty: Decimal = ZERO
    buy_notional: Decimal = ZERO
    sell_notional: Decimal = ZERO
    at_risk: Decimal = ZERO
    day_trades: int = 0
    orders: int = 0


class OrdersState(msgspec.Struct, kw_only=True):
    orders: dict[str, Order] = {}
    reserved: dict[str, Reservation] = {}
    reserved_total: Reservation = msgspec.field(default_factory=lambda: Reservation())
    open_ids: set[str] = set()
    execution_ids: set[str] = set()
    anomalies: list[Anomaly] = []
    by_intent: dict[str, str] = {}


def _transition(state: OrdersState, seq: int, order: Order, tag: str) -> bool:
    target = TRANSITIONS[order.status].get(tag)
    if target is None:
        state.anomalies.append(Anomaly(seq=seq, client_order_id=order.client_order_id,
                                       state=order.status.value, event_type=tag))
        return False
    if target == FILL_TARGET:
        return True  # resolved by apply_fill once quantities are known
    if target == RESUME_TARGET:
        target = S.PARTIALLY_FILLED if order.filled_qty > 0 else S.ACCEPTED
    _set_status(state, order, OrderStatus(target), seq)
    return True


def _set_status(state: OrdersState, order: Order, status: OrderStatus, seq: int) -> None:
    order.status = status
    order.updated_seq = seq
    if status in TERMINAL:
        state.open_ids.discard(order.client_order_id)
    else:
        state.open_ids.add(order.client_order_id)
    _recount(state, order)


def _recount(state: OrdersState, order: Order) -> None:
    """Keep `state.reserved` equal to the sum over open orders of their unfilled part, by
    moving each order's contribution from what it counted before to what it counts now."""
    if order.status in TERMINAL:
        qty = notional = risk = ZERO
        dt = False
    else:
        ref = order.reference_price
        if order.qty is not None:
            qty = max(order.qty - order.filled_qty, ZERO)
            notional = qty * ref
            risk = order.at_risk * qty / order.qty if order.qty else ZERO
        else:
            notional = max((order.notional or ZERO) - order.filled_notional, ZERO)
            qty = notional / ref if ref else ZERO
            risk = order.at_risk * notional / order.notional if order.notional else ZERO
        dt = order.day_trade and order.filled_qty == 0
    if (qty, notional, risk, dt) == (order.counted_qty, order.counted_notional,
                                     order.counted_risk, order.counted_day_trade):
        return
    r = state.reserved.get(order.symbol)
    if r is None:
        r = state.reserved[order.symbol] = Reservation()
    was_counted = bool(order.counted_qty or order.counted_notional or order.counted_risk)
    now_counted = bool(qty or notional or risk)
    for agg in (r, state.reserved_total):
        if order.side == "buy":
            agg.buy_qty += qty - order.counted_qty
            agg.buy_notional += notional - order.counted_notional
        else:
            agg.sell_qty += qty - order.counted_qty
            agg.sell_notional += notional - order.counted_notional
        agg.at_risk += risk - order.counted_risk
        agg.day_trades += int(dt) - int(order.counted_day_trade)
        agg.orders += int(now_counted) - int(was_counted)
    order.counted_qty, order.counted_notional, order.counted_risk = qty, notional, risk
    order.counted_day_trade = dt


def _unknown(state: OrdersState, seq: int, coid: str, tag: str) -> None:
    state.anomalies.append(Anomaly(seq=seq, client_order_id=coid, state="unknown",
                                   event_type=tag, detail="no such order in the log"))


def apply_approved(state: OrdersState, seq: int, e: RiskApproved) -> None:
    if e.client_order_id in state.orders:
        state.anomalies.append(Anomaly(seq=seq, client_order_id=e.client_order_id, state="exists",
                                       event_type="risk_approved", detail="duplicate approval"))
        return
    order = Order(
        client_order_id=e.client_order_id, intent_id=e.intent_id, strategy=e.strategy,
        symbol=e.symbol, side=e.side, order_type=e.order_type, qty=e.qty, notional=e.notional,
        limit_price=e.limit_price, time_in_force=e.time_in_force,
        reference_price=e.reference_price, at_risk=e.at_risk, reduce_only=e.reduce_only,
        day_trade=e.day_trade, created_seq=seq, updated_seq=seq,
    )
    state.orders[e.client_order_id] = order
    state.open_ids.add(e.client_order_id)
    state.by_intent.setdefault(e.intent_id, e.client_order_id)
    _recount(state, order)


def apply_adopted(state: OrdersState, seq: int, e: OrphanOrderAdopted) -> None:
    existing = state.orders.get(e.client_order_id)
    status = S.PARTIALLY_FILLED if e.filled_qty > 0 else S.ACCEPTED
    if existing is not None:
        if existing.is_open:
            existing.broker_order_id = e.broker_order_id
            _set_status(state, existing, status, seq)
        else:
            state.anomalies.append(Anomaly(seq=seq, client_order_id=e.client_order_id,
                                           state=existing.status.value, event_type="orphan_adopted"))
        return
    order = Order(
        client_order_id=e.client_order_id, intent_id=e.intent_id or f"adopted:{e.client_order_id}",
        strategy="adopted", symbol=e.symbol, side=e.side, order_type=e.order_type, qty=e.qty,
        notional=e.notional, limit_price=e.limit_price, time_in_force="day",
        broker_order_id=e.broker_order_id, created_seq=seq, updated_seq=seq,
        reference_price=e.limit_price or ZERO,
    )
    # Fills the broker already made before adoption arrive as inferred fill events, so the
    # adopted order starts from zero filled and its fills are booked (once) like any other.
    state.orders[e.client_order_id] = order
    _set_status(state, order, S.ACCEPTED, seq)


def apply_fill(state: OrdersState, seq: int, e: FillReceived) -> bool:
    """Book a fill on its order. Returns False if this execution id was already booked."""
    if e.execution_id in state.execution_ids:
        return False
    state.execution_ids.add(e.execution_id)
    order = state.orders.get(e.client_order_id)
    if order is None:
        _unknown(state, seq, e.client_order_id, "fill")
        return True
    allowed = _transition(state, seq, order, "fill")
    order.filled_qty += e.qty
    order.filled_notional += e.qty * e.price
    order.fees += e.fee
    if e.broker_order_id and not order.broker_order_id:
        order.broker_order_id = e.broker_order_id
    order.updated_seq = seq
    if allowed:
        complete = e.order_done or (order.qty is not None and order.filled_qty >= order.qty)
        if complete:
            _set_status(state, order, S.FILLED, seq)
        elif order.status != S.PENDING_CANCEL:
            _set_status(state, order, S.PARTIALLY_FILLED, seq)
    _recount(state, order)
    return True


def apply_order_event(state: OrdersState, seq: int, e: object, tag: str) -> None:
    """Every non-fill order event: look the order up, check the table, update fields."""
    coid: str = e.client_order_id  # type: ignore[attr-defined]
    order = state.orders.get(coid)
    if order is None:
        _unknown(state, seq, coid, tag)
        return
    if not _transition(state, seq, order, tag):
        return
    if isinstance(e, OrderSubmitRequested):
        order.submit_attempts = max(order.submit_attempts, e.attempt)
        order.ambiguous = ""
    elif isinstance(e, OrderSubmitted):
        order.broker_order_id = e.broker_order_id
        order.ambiguous = ""
    elif isinstance(e, OrderSubmitAmbiguous):
        order.ambiguous = e.kind
    elif isinstance(e, OrderAccepted):
        order.broker_order_id = e.broker_order_id
        order.ambiguous = ""
    elif isinstance(e, (OrderCanceled, OrderRejected)):
        order.reason = e.reason
        if isinstance(e, OrderCanceled) and e.broker_order_id and not order.broker_order_id:
            order.broker_order_id = e.broker_order_id
    elif isinstance(e, CancelRequested) or isinstance(e, CancelRejected):
        order.reason = e.reason
    elif isinstance(e, OrderReplaced):
        order.replaced_by = e.new_client_order_id
        new = msgspec.structs.replace(
            order, client_order_id=e.new_client_order_id, broker_order_id=e.new_broker_order_id,
            qty=e.qty if e.qty is not None else order.qty,
            limit_price=e.limit_price if e.limit_price is not None else order.limit_price,
            filled_qty=ZERO, filled_notional=ZERO, fees=ZERO, replaced_by=None,
            replaces=order.client_order_id, created_seq=seq, updated_seq=seq, reason="",
            # The replacement is live at the broker but not yet acknowledged: its own "new"
            # update (or a lookup) moves it on, like any submitted order.
            status=S.SUBMITTED, counted_qty=ZERO, counted_notional=ZERO, counted_risk=ZERO,
            counted_day_trade=False,
        )
        state.orders[new.client_order_id] = new
        state.open_ids.add(new.client_order_id)
        _recount(state, new)
    elif isinstance(e, (OrderExpired, ReplaceRequested)):
        pass


def open_orders(state: OrdersState, symbol: str | None = None) -> list[Order]:
    orders = (state.orders[c] for c in state.open_ids)
    if symbol is None:
        return sorted(orders, key=lambda o: o.created_seq)
    return sorted((o for o in orders if o.symbol == symbol), key=lambda o: o.created_seq)
