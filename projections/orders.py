"""Orders and their state machine, as a fold over the log.

    new -> pending_submit -> submitted -> accepted -> partially_filled -> filled
    with canceled, rejected, expired and replaced as terminal branches and pending_cancel
    between a live order and its cancel; and for a leg of a bracket/OTO/OCO
    held -> accepted (the broker activated it: its parent filled) -> ... like any order,
    held -> canceled (its sibling filled, its parent was canceled).

Legs are orders of their own, created with their parent when the approval is folded, with
ids from `events.catalogue.leg_client_order_id`, a parent link and status `held`. The
broker's messages move them like any order. Only what no broker will ever report is
derived here: a parent that ends without a single fill (rejected, canceled, expired,
never sent) settles its held legs the same way, and a parent that ends partially filled
sizes its held legs to the filled quantity. A broker confirming such a settled leg later
is not an anomaly.

Protective orders (legs, an OCO, a stop that only closes: `RiskApproved.protective`) hold
no exposure, shares or loss budget in `reserved`: they can only shrink a position. Their
stop-type members are indexed per symbol in `OrdersState.stops`; `armed_stops` says which
ones protect the position now.

`TRANSITIONS` is the whole table. Any (state, event) pair not in it is refused: the order keeps
its state and an `Anomaly` is recorded (never an exception), so a duplicate or out-of-order
broker message can not move an order backwards or crash a replay.

Fills are special: money moved, so a fill is always *counted* (filled quantity, positions)
once per execution id, even when the state machine refuses it as a transition.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from enum import StrEnum
from typing import Any

import msgspec

from events.base import Event, tag_of
from events.catalogue import (
    STOP_ORDER_TYPES,
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
    TrailingStopUpdated,
)
from events.vocabulary import ZERO


class OrderStatus(StrEnum):
    HELD = "held"
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

# The event types that drive the state machine; the table is keyed by their log tags.
ORDER_EVENT_TYPES: tuple[type[Event], ...] = (
    OrderSubmitRequested,
    OrderSubmitted,
    OrderSubmitAmbiguous,
    OrderAccepted,
    FillReceived,
    CancelRequested,
    CancelRejected,
    OrderCanceled,
    OrderRejected,
    OrderExpired,
    ReplaceRequested,
    OrderReplaced,
)
ORDER_EVENT_TAGS: tuple[str, ...] = tuple(tag_of(t) for t in ORDER_EVENT_TYPES)

# Terminal events a broker may still send for a leg this fold already settled with its
# parent (see the module docstring): a confirmation, not an anomaly.
_CONFIRMS_SETTLED = frozenset({"order_canceled", "order_rejected", "order_expired"})

TRANSITIONS: dict[OrderStatus, dict[str, str]] = {
    S.HELD: {
        "order_submitted": S.HELD,  # the broker has it (its id), still held
        "order_accepted": S.ACCEPTED,  # activated: the parent filled
        "fill": FILL_TARGET,  # triggered and filled; its activation message was not seen
        "cancel_requested": S.PENDING_CANCEL,
        "order_canceled": S.CANCELED,  # the sibling filled, or the parent was canceled
        "order_rejected": S.REJECTED,
        "order_expired": S.EXPIRED,
        "replace_requested": S.HELD,
        "order_replaced": S.REPLACED,
    },
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


class Terms(msgspec.Struct, kw_only=True):
    """The terms a replace asked for (None: unchanged)."""

    qty: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    # the replacement's client id we chose (a restart mid-replace must know it is ours)
    new_client_order_id: str | None = None


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
    # Protection (v2 events). `stop_price` is a stop's trigger (a trailing stop's current
    # stop as the broker reports it), `hwm` a trailing stop's high-water mark.
    order_class: str = "simple"
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    hwm: Decimal | None = None
    parent_id: str | None = None
    leg_role: str = ""
    legs: tuple[str, ...] = ()
    protective: bool = False
    engine_side: bool = False
    risk_stop: Decimal | None = None
    pending: Terms | None = None  # terms of a replace requested and not yet answered
    settled_by_parent: bool = False
    resume_held: bool = False
    # The part of this order's fills that closed an existing position (the rest opened one):
    # the loss budget was sized on the opening part only.
    closed_qty: Decimal = ZERO
    closed_notional: Decimal = ZERO

    @property
    def is_open(self) -> bool:
        return self.status not in TERMINAL

    @property
    def is_stop(self) -> bool:
        return self.order_type in STOP_ORDER_TYPES

    @property
    def avg_fill_price(self) -> Decimal | None:
        return self.filled_notional / self.filled_qty if self.filled_qty else None



class OrderView(msgspec.Struct, frozen=True, kw_only=True):
    """An order as its readers see it (strategies, forensics): a frozen copy, so nobody
    outside the fold can change the projection's own `Order`."""

    client_order_id: str
    intent_id: str
    strategy: str
    symbol: str
    side: str
    order_type: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    status: str
    filled_qty: Decimal
    avg_fill_price: Decimal | None = None
    fees: Decimal = ZERO
    broker_order_id: str | None = None
    ambiguous: str = ""
    reason: str = ""
    created_seq: int = 0
    updated_seq: int = 0
    stop_price: Decimal | None = None
    parent_id: str | None = None
    leg_role: str = ""
    legs: tuple[str, ...] = ()
    order_class: str = "simple"

    @classmethod
    def of(cls, o: Order) -> OrderView:
        return cls(
            client_order_id=o.client_order_id, intent_id=o.intent_id, strategy=o.strategy,
            symbol=o.symbol, side=o.side, order_type=o.order_type, qty=o.qty,
            notional=o.notional, limit_price=o.limit_price, status=o.status.value,
            filled_qty=o.filled_qty, avg_fill_price=o.avg_fill_price, fees=o.fees,
            broker_order_id=o.broker_order_id, ambiguous=o.ambiguous, reason=o.reason,
            created_seq=o.created_seq, updated_seq=o.updated_seq, stop_price=o.stop_price,
            parent_id=o.parent_id, leg_role=o.leg_role, legs=o.legs, order_class=o.order_class)



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
    # Open protective stop-type orders (legs included, armed or not), by symbol.
    stops: dict[str, set[str]] = {}
    # The latest entry per symbol whose protection the engine holds (engine-side stops).
    engine_side: dict[str, str] = {}


def would_move(order: Order, tag: str) -> bool:
    """Whether an event with `tag` is a legal transition for `order` (or the harmless
    confirmation of a leg settled with its parent)."""
    return tag in TRANSITIONS[order.status] or (order.settled_by_parent
                                                  and tag in _CONFIRMS_SETTLED)


def _transition(state: OrdersState, seq: int, order: Order, tag: str) -> bool:
    target = TRANSITIONS[order.status].get(tag)
    if target is None:
        if not (order.settled_by_parent and tag in _CONFIRMS_SETTLED):
            state.anomalies.append(Anomaly(seq=seq, client_order_id=order.client_order_id,
                                           state=order.status.value, event_type=tag))
        return False
    if target == FILL_TARGET:
        return True  # resolved by apply_fill once quantities are known
    if target == RESUME_TARGET:
        if order.filled_qty > 0:
            target = S.PARTIALLY_FILLED
        else:
            target = S.HELD if order.resume_held else S.ACCEPTED
    if order.status == S.HELD and target == S.PENDING_CANCEL:
        order.resume_held = True
    elif target != S.PENDING_CANCEL:
        order.resume_held = False
    status = target if type(target) is OrderStatus else OrderStatus(target)
    # Between two open states an order reserves exactly what it did: its reservation depends
    # on quantities, prices and being open, and the events that change quantities (fills,
    # an acknowledged leg size) recount on their own. Only ending needs a recount here.
    _set_status(state, order, status, seq, recount=status in TERMINAL)
    return True


def _set_status(state: OrdersState, order: Order, status: OrderStatus, seq: int, *,
                recount: bool = True) -> None:
    order.status = status
    order.updated_seq = seq
    coid = order.client_order_id
    if status in TERMINAL:
        state.open_ids.discard(coid)
        if order.protective and order.is_stop:
            stops = state.stops.get(order.symbol)
            if stops is not None:
                stops.discard(coid)
                if not stops:
                    del state.stops[order.symbol]
        if order.legs:
            _settle_legs(state, order, seq)
    else:
        state.open_ids.add(coid)
        if order.protective and order.is_stop:
            state.stops.setdefault(order.symbol, set()).add(coid)
    if recount:
        _recount(state, order)


def _settle_legs(state: OrdersState, parent: Order, seq: int) -> None:
    """A parent ended: settle what the broker will never report for its held legs."""
    if parent.status == S.REPLACED:
        return  # the replacement carries the legs on (see OrderReplaced)
    if parent.status == S.FILLED or parent.order_class == "oco":
        return  # legs are live at the broker now; its messages move them
    for coid in parent.legs:
        leg = state.orders.get(coid)
        if leg is None or leg.status != S.HELD:
            continue
        if parent.filled_qty > 0:
            # Ended partially filled: the legs protect what was filled, no more.
            leg.qty = parent.filled_qty
            leg.updated_seq = seq
            continue
        leg.settled_by_parent = True
        leg.reason = f"parent {parent.client_order_id} {parent.status.value} unfilled"
        _set_status(state, leg, S.REJECTED if parent.status == S.REJECTED else S.CANCELED, seq)


def _recount(state: OrdersState, order: Order) -> None:
    """Keep `state.reserved` equal to the sum over open orders of their unfilled part, by
    moving each order's contribution from what it counted before to what it counts now.
    Protective orders count nothing (they can only shrink a position)."""
    if order.status in TERMINAL or order.protective:
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
    was_qty, was_notional, was_risk = order.counted_qty, order.counted_notional, order.counted_risk
    was_dt = order.counted_day_trade
    if qty == was_qty and notional == was_notional and risk == was_risk and dt == was_dt:
        return
    r = state.reserved.get(order.symbol)
    if r is None:
        r = state.reserved[order.symbol] = Reservation()
    # Each change is worked out once and added to the symbol's and the total reservation
    # alike (the same Decimal operations the two sums always got, one subtraction fewer).
    d_qty, d_notional, d_risk = qty - was_qty, notional - was_notional, risk - was_risk
    d_dt = int(dt) - int(was_dt)
    d_orders = int(bool(qty or notional or risk)) - int(bool(was_qty or was_notional or was_risk))
    buy = order.side == "buy"
    for agg in (r, state.reserved_total):
        if buy:
            agg.buy_qty += d_qty
            agg.buy_notional += d_notional
        else:
            agg.sell_qty += d_qty
            agg.sell_notional += d_notional
        agg.at_risk += d_risk
        agg.day_trades += d_dt
        agg.orders += d_orders
    order.counted_qty, order.counted_notional, order.counted_risk = qty, notional, risk
    order.counted_day_trade = dt


def _unknown(state: OrdersState, seq: int, coid: str, tag: str) -> None:
    state.anomalies.append(Anomaly(seq=seq, client_order_id=coid, state="unknown",
                                   event_type=tag, detail="no such order in the log"))


def apply_approved(state: OrdersState, seq: int, e: RiskApproved) -> None:
    if e.replaces is not None:
        return  # a stop move: the replacement order starts with its OrderReplaced
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
        order_class=e.order_class, stop_price=e.stop_price, trail_price=e.trail_price,
        trail_percent=e.trail_percent, protective=e.protective, engine_side=e.engine_side,
        risk_stop=e.risk_stop,
        legs=tuple(leg.client_order_id for leg in e.legs) if e.legs else (),
    )
    state.orders[e.client_order_id] = order
    state.by_intent.setdefault(e.intent_id, e.client_order_id)
    if e.engine_side:
        state.engine_side[e.symbol] = e.client_order_id
    _set_status(state, order, S.NEW, seq)
    for leg in e.legs:
        if leg.client_order_id in state.orders:
            state.anomalies.append(Anomaly(seq=seq, client_order_id=leg.client_order_id,
                                           state="exists", event_type="risk_approved",
                                           detail="leg id already in the log"))
            continue
        child = Order(
            client_order_id=leg.client_order_id, intent_id=e.intent_id, strategy=e.strategy,
            symbol=e.symbol, side=leg.side, order_type=leg.order_type, qty=leg.qty,
            notional=None, limit_price=leg.limit_price, time_in_force=e.time_in_force,
            reference_price=e.reference_price, reduce_only=True, created_seq=seq,
            updated_seq=seq, order_class=e.order_class, stop_price=leg.stop_price,
            trail_price=leg.trail_price, trail_percent=leg.trail_percent,
            parent_id=e.client_order_id, leg_role=leg.role, protective=True,
            engine_side=e.engine_side,
        )
        state.orders[child.client_order_id] = child
        _set_status(state, child, S.HELD, seq)


def apply_adopted(state: OrdersState, seq: int, e: OrphanOrderAdopted) -> None:
    existing = state.orders.get(e.client_order_id)
    if e.filled_qty > 0:
        status = S.PARTIALLY_FILLED
    elif e.broker_status == "held":
        status = S.HELD
    else:
        status = S.ACCEPTED
    if existing is not None:
        if existing.is_open:
            existing.broker_order_id = e.broker_order_id
            _set_status(state, existing, status, seq)
        else:
            state.anomalies.append(Anomaly(seq=seq, client_order_id=e.client_order_id,
                                           state=existing.status.value, event_type="orphan_adopted"))
        return
    parent = state.orders.get(e.parent_client_order_id) if e.parent_client_order_id else None
    order = Order(
        client_order_id=e.client_order_id, intent_id=e.intent_id or f"adopted:{e.client_order_id}",
        strategy="adopted", symbol=e.symbol, side=e.side, order_type=e.order_type, qty=e.qty,
        notional=e.notional, limit_price=e.limit_price, time_in_force=e.time_in_force,
        broker_order_id=e.broker_order_id, created_seq=seq, updated_seq=seq,
        reference_price=e.limit_price or e.stop_price or ZERO,
        order_class=e.order_class, stop_price=e.stop_price, trail_price=e.trail_price,
        trail_percent=e.trail_percent, hwm=e.hwm, parent_id=e.parent_client_order_id,
        leg_role=e.leg_role,
        # A stop at the broker, or a leg, can only close: it protects, it does not expose.
        protective=bool(e.parent_client_order_id or e.leg_role)
        or e.order_type in STOP_ORDER_TYPES,
    )
    # Fills the broker already made before adoption arrive as inferred fill events, so the
    # adopted order starts from zero filled and its fills are booked (once) like any other.
    state.orders[e.client_order_id] = order
    if parent is not None and e.client_order_id not in parent.legs:
        parent.legs = (*parent.legs, e.client_order_id)
    _set_status(state, order, S.HELD if status == S.HELD else S.ACCEPTED, seq)


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
            _set_status(state, order, S.FILLED, seq)  # recounts
            return True
        if order.status != S.PENDING_CANCEL:
            _set_status(state, order, S.PARTIALLY_FILLED, seq)  # recounts
            return True
    _recount(state, order)
    return True


def note_closing(order: Order | None, before: Decimal, e: FillReceived) -> None:
    """Remember how much of a fill closed the position it met (before: the signed position
    before the fill), so the loss budget counts only the part that opened."""
    if order is None or before == 0:
        return
    if (before > 0) == (e.side == "buy"):
        return
    closed = min(abs(before), e.qty)
    order.closed_qty += closed
    order.closed_notional += closed * e.price


# --- the other order events, one small function per type ---------------------------------


def _on_submit_requested(state: OrdersState, seq: int, o: Order, e: OrderSubmitRequested) -> None:
    o.submit_attempts = max(o.submit_attempts, e.attempt)
    o.ambiguous = ""


def _on_submitted(state: OrdersState, seq: int, o: Order, e: OrderSubmitted) -> None:
    o.broker_order_id = e.broker_order_id
    o.ambiguous = ""


def _on_ambiguous(state: OrdersState, seq: int, o: Order, e: OrderSubmitAmbiguous) -> None:
    o.ambiguous = e.kind


def _on_accepted(state: OrdersState, seq: int, o: Order, e: OrderAccepted) -> None:
    o.broker_order_id = e.broker_order_id
    o.ambiguous = ""
    if e.qty is not None and e.qty != o.qty:
        o.qty = e.qty  # a leg activated at the size of its (partially) filled parent
        _recount(state, o)


def _on_canceled(state: OrdersState, seq: int, o: Order, e: OrderCanceled) -> None:
    o.reason = e.reason
    if e.broker_order_id and not o.broker_order_id:
        o.broker_order_id = e.broker_order_id


def _on_reason(state: OrdersState, seq: int, o: Order,
               e: OrderRejected | CancelRequested | CancelRejected) -> None:
    o.reason = e.reason


def _on_replace_requested(state: OrdersState, seq: int, o: Order, e: ReplaceRequested) -> None:
    o.pending = Terms(qty=e.qty, limit_price=e.limit_price, stop_price=e.stop_price,
                      trail_price=e.trail_price, trail_percent=e.trail_percent,
                      new_client_order_id=e.new_client_order_id)


def _pick(*values: Decimal | None) -> Decimal | None:
    return next((v for v in values if v is not None), None)


def _on_replaced(state: OrdersState, seq: int, o: Order, e: OrderReplaced,
                 before: OrderStatus) -> None:
    # Terms: the event's, else the ones we asked for (the stream's "replaced" can come
    # before the REST answer and carry none), else the old order's.
    asked = o.pending or Terms()
    trail_price = _pick(e.trail_price, asked.trail_price)
    trail_percent = _pick(e.trail_percent, asked.trail_percent)
    if trail_price is None and trail_percent is None:
        trail_price, trail_percent = o.trail_price, o.trail_percent
    o.replaced_by = e.new_client_order_id
    o.pending = None
    new = msgspec.structs.replace(
        o, client_order_id=e.new_client_order_id, broker_order_id=e.new_broker_order_id,
        qty=_pick(e.qty, asked.qty, o.qty),
        limit_price=_pick(e.limit_price, asked.limit_price, o.limit_price),
        stop_price=_pick(e.stop_price, asked.stop_price, o.stop_price),
        trail_price=trail_price, trail_percent=trail_percent,
        hwm=o.hwm if trail_price is None and trail_percent is None else None,
        filled_qty=ZERO, filled_notional=ZERO, fees=ZERO, replaced_by=None,
        replaces=o.client_order_id, created_seq=seq, updated_seq=seq, reason="",
        # The replacement is live at the broker but not yet acknowledged: its own "new"
        # update (or a lookup) moves it on, like any submitted order. A held leg stays held.
        status=S.HELD if before == S.HELD else S.SUBMITTED,
        counted_qty=ZERO, counted_notional=ZERO, counted_risk=ZERO, counted_day_trade=False,
        closed_qty=ZERO, closed_notional=ZERO, settled_by_parent=False, resume_held=False,
    )
    state.orders[new.client_order_id] = new
    _set_status(state, new, new.status, seq)
    # The family follows the replacement: a leg's parent names the new leg, a parent's legs
    # name the new parent.
    if o.parent_id is not None:
        parent = state.orders.get(o.parent_id)
        if parent is not None:
            parent.legs = tuple(new.client_order_id if c == o.client_order_id else c
                                for c in parent.legs)
    for coid in o.legs:
        leg = state.orders.get(coid)
        if leg is not None:
            leg.parent_id = new.client_order_id
    o.legs = ()


def _on_nothing(state: OrdersState, seq: int, o: Order, e: Any) -> None:
    pass


_UPDATE: dict[type, Callable[..., None]] = {
    OrderSubmitRequested: _on_submit_requested,
    OrderSubmitted: _on_submitted,
    OrderSubmitAmbiguous: _on_ambiguous,
    OrderAccepted: _on_accepted,
    OrderCanceled: _on_canceled,
    OrderRejected: _on_reason,
    CancelRequested: _on_reason,
    CancelRejected: _on_reason,
    OrderExpired: _on_nothing,
    ReplaceRequested: _on_replace_requested,
}


def apply_order_event(state: OrdersState, seq: int, e: Any, tag: str) -> None:
    """Every non-fill order event: look the order up, check the table, update fields."""
    coid: str = e.client_order_id
    order = state.orders.get(coid)
    if order is None:
        _unknown(state, seq, coid, tag)
        return
    before = order.status
    if not _transition(state, seq, order, tag):
        return
    if type(e) is OrderReplaced:
        _on_replaced(state, seq, order, e, before)
    else:
        _UPDATE[type(e)](state, seq, order, e)


def apply_trailing_update(state: OrdersState, seq: int, e: TrailingStopUpdated) -> None:
    """The broker moved a trailing stop: its high-water mark and stop, as reported."""
    order = state.orders.get(e.client_order_id)
    if order is None:
        _unknown(state, seq, e.client_order_id, "trailing_stop_updated")
        return
    if not order.is_open:
        state.anomalies.append(Anomaly(seq=seq, client_order_id=order.client_order_id,
                                       state=order.status.value, event_type="trailing_stop_updated"))
        return
    order.hwm = e.hwm
    order.stop_price = e.stop_price
    order.updated_seq = seq


def open_orders(state: OrdersState, symbol: str | None = None) -> list[Order]:
    orders = (state.orders[c] for c in state.open_ids)
    if symbol is None:
        return sorted(orders, key=lambda o: o.created_seq)
    return sorted((o for o in orders if o.symbol == symbol), key=lambda o: o.created_seq)


def is_armed(state: OrdersState, order: Order) -> bool:
    """An open order that can trigger now: not held, or held by a broker that holds a
    bracket's stop after its parent filled (Alpaca does), or an OCO leg (live at once)."""
    if order.status in TERMINAL:
        return False
    if order.status != S.HELD:
        return True
    parent = state.orders.get(order.parent_id) if order.parent_id else None
    return parent is None or parent.order_class == "oco" or parent.filled_qty > 0


def armed_stops(state: OrdersState, symbol: str) -> list[Order]:
    """The protective stops that protect `symbol`'s position now, oldest first."""
    coids = state.stops.get(symbol)
    if not coids:
        return []
    out = [state.orders[c] for c in coids]
    return sorted((o for o in out if is_armed(state, o)), key=lambda o: o.created_seq)


def stop_level(order: Order, mark: Decimal) -> Decimal:
    """Where a stop triggers: its stop price (a trailing stop's as the broker last reported
    it), or for a trailing stop not yet reported, the trail from `mark`."""
    if order.stop_price is not None:
        return order.stop_price
    sell = order.side == "sell"
    if order.trail_price is not None:
        return mark - order.trail_price if sell else mark + order.trail_price
    if order.trail_percent is not None:
        f = order.trail_percent / 100
        return mark * (1 - f) if sell else mark * (1 + f)
    return mark


def legs_of(state: OrdersState, order: Order) -> list[Order]:
    return [state.orders[c] for c in order.legs if c in state.orders]
