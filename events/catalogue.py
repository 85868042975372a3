"""Every fact MiniQuantDesk records, grouped by concern.

Rules for changing this file (old logs must always replay):
- adding an optional field (with a default) at the end of an event is free;
- anything else (renaming, retyping, making a field required) bumps that event's
  `SCHEMA_VERSION` and registers an upcaster in `events.codec.UPCASTERS` that turns the
  previous version's payload into the new one;
- tags (the strings after `tag=`) are stored in the log and never change.

Version 2 of the order events (protection: stop, stop-limit and trailing-stop orders; bracket,
OCO and OTO classes with their legs; replace of stop/trail levels) only *added* fields with
defaults, so a v1 payload is a valid v2 payload (the upcasters are the identity). The version
was still bumped so that an older build refuses a log that carries legs and stops instead of
silently dropping the fields it does not know (msgspec ignores unknown fields).

Fields named `intent_id`, `client_order_id` and `symbol` are copied into indexed columns of the
log so reads by correlation id do not need to decode payloads.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import ClassVar, Literal

import msgspec

from events.base import Event
from events.market import Bar

# The order words live in events.vocabulary; re-exported here because the events are made of
# them and older imports name this module.
from events.vocabulary import ORDER_CLASSES as ORDER_CLASSES  # noqa: PLC0414
from events.vocabulary import STOP_ORDER_TYPES as STOP_ORDER_TYPES  # noqa: PLC0414
from events.vocabulary import OrderClass as OrderClass  # noqa: PLC0414
from events.vocabulary import OrderType as OrderType  # noqa: PLC0414
from events.vocabulary import Side as Side  # noqa: PLC0414

LegRole = Literal["take_profit", "stop_loss"]
TradingStateName = Literal["recovering", "active", "reducing", "halted"]


def leg_client_order_id(parent_client_order_id: str, role: str) -> str:
    """THE rule for a leg's client order id: the parent's id plus `-tp` (take-profit) or
    `-sl` (stop-loss). Deterministic, so a restart derives the same ids; the gate's ids are
    44 characters, which leaves room within Alpaca's 48. (Alpaca names legs itself; brokers
    map its legs to these ids by parent and role.)"""
    suffix = {"take_profit": "tp", "stop_loss": "sl"}[role]
    return f"{parent_client_order_id}-{suffix}"


class TakeProfit(msgspec.Struct, frozen=True, kw_only=True):
    """The take-profit leg of a bracket/OCO/OTO: a limit order on the closing side."""

    limit_price: Decimal


class StopLoss(msgspec.Struct, frozen=True, kw_only=True):
    """The stop-loss leg: a stop order at `stop_price`, a stop-limit when `limit_price` is set."""

    stop_price: Decimal
    limit_price: Decimal | None = None


class OrderLeg(msgspec.Struct, frozen=True, kw_only=True):
    """A leg the gate approved together with its parent: an order of its own in the log (id
    from `leg_client_order_id`), held at the broker until the parent fills (bracket, OTO) or
    live with its sibling at once (OCO)."""

    client_order_id: str
    role: LegRole
    side: Side
    order_type: OrderType
    qty: Decimal
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None


# --- market data -------------------------------------------------------------------------


class BarReceived(Event, frozen=True, tag="bar"):
    """A bar that passed validation and is now visible to strategies and the risk gate."""

    bar: Bar


class DataRejected(Event, frozen=True, tag="data_rejected"):
    """Input that failed validation; `raw` keeps what arrived so it can be inspected later."""

    reason: str
    detail: str
    symbol: str | None = None
    provider: str = ""
    raw: str = ""


class DataGap(Event, frozen=True, tag="data_gap"):
    """Bars are missing between two consecutive good bars of a symbol."""

    symbol: str
    previous_start: datetime
    start: datetime
    missing_bars: int


# --- strategy ----------------------------------------------------------------------------


class OrderIntent(Event, frozen=True, tag="intent"):
    """What a strategy wants. Recorded verbatim, even when malformed, so rejections explain.

    Exactly one of `qty` and `notional` should be set. `allow_notional` lets the gate turn an
    unaffordable whole-share quantity into a dollar (notional) order on a fractionable symbol.

    `stop_price` means what it meant in every v1 log for market and limit orders: the
    strategy's *planning* stop, which sizes the loss budget and is never sent. For
    `order_type` stop / stop_limit it is the order's trigger price (Alpaca's `stop_price`).
    A protective stop that lives at the broker is `stop_loss` (bracket/OTO/OCO leg) or a
    stop-type order of its own. `trail_price` / `trail_percent` (exactly one) make a
    `trailing_stop`. `order_class`: simple, bracket (entry + take_profit + stop_loss), oto
    (entry + one of them), oco (take_profit + stop_loss closing an open position; the order
    itself is the take-profit limit).
    """

    SCHEMA_VERSION: ClassVar[int] = 2

    intent_id: str
    strategy: str
    symbol: str
    side: str
    order_type: str = "market"
    qty: Decimal | None = None
    notional: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str = "day"
    reduce_only: bool = False
    allow_notional: bool = False
    signal_time: datetime | None = None
    reason: str = ""
    # v2: protection
    order_class: str = "simple"
    take_profit: TakeProfit | None = None
    stop_loss: StopLoss | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    # Move a stop: the client id of the open protective order whose stop_price / trail this
    # intent replaces (Alpaca's PATCH); the gate decides it like any order.
    replaces: str | None = None


class StrategyError(Event, frozen=True, tag="strategy_error"):
    """A strategy raised; it is paused, the others keep running."""

    strategy: str
    error: str
    symbol: str | None = None
    paused: bool = True


# --- risk --------------------------------------------------------------------------------


class RejectReason(msgspec.Struct, frozen=True, kw_only=True):
    """One failed check: a stable `code`, a sentence, and the numbers behind it."""

    code: str
    message: str
    values: dict[str, str] = {}


class RiskApproved(Event, frozen=True, tag="risk_approved"):
    """The gate approved an intent; this is the order we are allowed to send, exactly.

    v2: `stop_price` is the trigger of a stop / stop-limit order (never a planning stop);
    `legs` are the orders that go with it (bracket/OTO/OCO), each with its own client id.
    `protective` marks an order that only closes (a stop protecting a position, an OCO):
    it holds no exposure or loss budget of its own. `risk_stop` is the stop the order's
    `at_risk` was sized on (a live leg's, or the planning stop), `engine_side` that the
    broker can not hold this protection (fractional shares) and the engine watches it.
    """

    SCHEMA_VERSION: ClassVar[int] = 2

    intent_id: str
    client_order_id: str
    strategy: str
    symbol: str
    side: Side
    order_type: OrderType
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    time_in_force: str
    reference_price: Decimal
    estimated_notional: Decimal
    at_risk: Decimal
    reduce_only: bool = False
    day_trade: bool = False
    converted_to_notional: bool = False
    # v2: protection
    order_class: str = "simple"
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    take_profit: TakeProfit | None = None
    stop_loss: StopLoss | None = None
    legs: tuple[OrderLeg, ...] = ()
    protective: bool = False
    risk_stop: Decimal | None = None
    engine_side: bool = False
    # Set on an approved stop move: the order replaced; `client_order_id` is then the
    # replacement's id (the order itself appears with `OrderReplaced`).
    replaces: str | None = None


class RiskRejected(Event, frozen=True, tag="risk_rejected"):
    """The gate refused an intent; `reasons` lists every check that failed."""

    intent_id: str
    symbol: str
    reasons: tuple[RejectReason, ...]
    strategy: str = ""


# --- execution ---------------------------------------------------------------------------


class OrderSubmitRequested(Event, frozen=True, tag="order_submit_requested"):
    """Appended before the broker is called: from here on the order may exist at the broker."""

    client_order_id: str
    intent_id: str
    symbol: str
    attempt: int = 1


class OrderSubmitted(Event, frozen=True, tag="order_submitted"):
    """The broker's REST answer to a submit: it has the order."""

    client_order_id: str
    broker_order_id: str
    broker_status: str = ""
    symbol: str | None = None


class OrderSubmitAmbiguous(Event, frozen=True, tag="order_submit_ambiguous"):
    """A submit whose outcome is unknown (timeout, disconnect, 5xx, duplicate id, unparsable).

    Not a rejection: the order stays in flight until a lookup by client id, the stream or
    reconciliation settles it.
    """

    client_order_id: str
    kind: str
    error: str
    symbol: str | None = None


class OrderAccepted(Event, frozen=True, tag="order_accepted"):
    """The broker says the order is live (trade update `new`/`accepted`). For a leg this is
    its activation; `qty` is set when the broker sized it (to a partially filled parent)."""

    SCHEMA_VERSION: ClassVar[int] = 2

    client_order_id: str
    broker_order_id: str
    broker_time: datetime | None = None
    symbol: str | None = None
    # v2
    qty: Decimal | None = None


class FillReceived(Event, frozen=True, tag="fill"):
    """An execution. `execution_id` is the broker's (or, for inferred fills, a hash of the
    facts), so the same execution is only ever booked once.

    `order_done` is true when the broker reports the order completely filled with this fill.
    `source` says how we learned of it: stream, gap_fill, lookup, reconcile, simulated.
    """

    client_order_id: str
    broker_order_id: str
    execution_id: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    broker_time: datetime
    fee: Decimal = Decimal(0)
    order_done: bool = False
    source: str = "stream"


class CancelRequested(Event, frozen=True, tag="cancel_requested"):
    client_order_id: str
    reason: str
    actor: str = "engine"


class CancelRejected(Event, frozen=True, tag="cancel_rejected"):
    """The broker refused a cancel (e.g. the order was already filling)."""

    client_order_id: str
    reason: str


class OrderCanceled(Event, frozen=True, tag="order_canceled"):
    client_order_id: str
    reason: str = ""
    broker_order_id: str | None = None
    broker_time: datetime | None = None


class OrderRejected(Event, frozen=True, tag="order_rejected"):
    """A definite refusal: by the broker (400/401/403/422-not-duplicate) or before sending."""

    client_order_id: str
    reason: str
    by_broker: bool = True


class OrderExpired(Event, frozen=True, tag="order_expired"):
    client_order_id: str
    broker_time: datetime | None = None


class ReplaceRequested(Event, frozen=True, tag="replace_requested"):
    """Alpaca's PATCH: new terms for a live order (v2: a stop's trigger or a trail too)."""

    SCHEMA_VERSION: ClassVar[int] = 2

    client_order_id: str
    new_client_order_id: str
    qty: Decimal | None = None
    limit_price: Decimal | None = None
    # v2
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None


class OrderReplaced(Event, frozen=True, tag="order_replaced"):
    """The old order is terminal; the new one carries on with the same intent (and, for a
    leg, the same parent and role). Terms left None are the requested ones if a replace
    was requested, else the old order's."""

    SCHEMA_VERSION: ClassVar[int] = 2

    client_order_id: str
    new_client_order_id: str
    new_broker_order_id: str
    qty: Decimal | None = None
    limit_price: Decimal | None = None
    # v2
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None


class TrailingStopUpdated(Event, frozen=True, tag="trailing_stop_updated"):
    """A trailing stop moved: the high-water mark (low-water for a buy stop) as the broker
    reports it, and the stop price that follows from it. The broker's figures, not ours."""

    client_order_id: str
    hwm: Decimal
    stop_price: Decimal
    broker_time: datetime | None = None
    symbol: str | None = None


class UnknownBrokerMessage(Event, frozen=True, tag="unknown_broker_message"):
    """Something the broker sent that we could not interpret; kept verbatim."""

    source: str
    raw: str
    error: str


# --- account -----------------------------------------------------------------------------


class AccountSnapshot(Event, frozen=True, tag="account_snapshot"):
    """The broker's view of the account. Day-trade fields are `None` where the broker no
    longer reports them (Alpaca removed them in July 2026)."""

    equity: Decimal
    cash: Decimal
    buying_power: Decimal
    source: str = ""
    daytrade_count: int | None = None
    pattern_day_trader: bool | None = None
    account_id: str = ""
    # When the broker was asked: fills executed after this are not in these figures (the
    # answer can cross a fill whose message we have not booked yet, or booked already).
    as_of: datetime | None = None


class AssetInfo(Event, frozen=True, tag="asset_info"):
    """Eligibility of a symbol as the broker reported it."""

    symbol: str
    tradable: bool
    fractionable: bool
    shortable: bool = False
    status: str = "active"


# --- lifecycle ---------------------------------------------------------------------------


class FillModel(msgspec.Struct, frozen=True, kw_only=True):
    """How the simulated broker fills, as the run used it (see engine/brokers/simulated.py)."""

    fill_rule: str  # e.g. "next bar open; limit on trade-through"
    slippage_bps: Decimal
    fee_per_share: Decimal
    fee_bps: Decimal
    min_fee: Decimal
    volume_participation: Decimal
    zero_volume: str  # "no_fill" | "fill"
    time_in_force: str  # the strategies' default, e.g. "day" or "sma_crossover=gtc, x=day"


class RunStarted(Event, frozen=True, tag="run_started"):
    run_id: str
    code_version: str
    settings_hash: str
    mode: str
    # Added later (optional, so older logs replay): the simulated fill model, None when a
    # real broker fills.
    fill_model: FillModel | None = None


class RunEnded(Event, frozen=True, tag="run_ended"):
    run_id: str
    reason: str = "clean"


class RunSealed(Event, frozen=True, tag="run_sealed"):
    """A predecessor run that never ended: it crashed; `last_seq` is the last row it wrote."""

    run_id: str
    last_seq: int
    reason: str = "crashed"


class RecoveryStep(Event, frozen=True, tag="recovery_step"):
    run_id: str
    step: str
    detail: str = ""


class RecoveryCompleted(Event, frozen=True, tag="recovery_completed"):
    run_id: str
    ok: bool
    discrepancies: int = 0
    detail: str = ""


class TradingStateChanged(Event, frozen=True, tag="trading_state"):
    state: TradingStateName
    reason: str
    actor: str = "engine"


class KillSwitchEngaged(Event, frozen=True, tag="kill_switch_engaged"):
    actor: str
    reason: str
    flatten: bool = False


class KillSwitchVerified(Event, frozen=True, tag="kill_switch_verified"):
    """The broker shows no open orders (and flat positions, when flattening was asked)."""

    open_orders: int
    flat: bool
    attempts: int = 1


class KillSwitchReleased(Event, frozen=True, tag="kill_switch_released"):
    actor: str
    reason: str


# --- reconciliation ----------------------------------------------------------------------


class DiscrepancyFound(Event, frozen=True, tag="discrepancy"):
    kind: str
    detail: str
    symbol: str | None = None
    client_order_id: str | None = None
    ours: str = ""
    broker: str = ""


class PositionAdjusted(Event, frozen=True, tag="position_adjusted"):
    """Our position is set to what the broker holds, with the reason; `adjustment_id` is a hash
    of the facts so the same adjustment is never applied twice."""

    adjustment_id: str
    symbol: str
    qty_before: Decimal
    qty_after: Decimal
    avg_price: Decimal
    reason: str


class OrphanOrderAdopted(Event, frozen=True, tag="orphan_adopted"):
    """An order the broker has and the log did not know as open; from here it is tracked.
    v2: its stop/trail terms and, for a leg, its parent and role."""

    SCHEMA_VERSION: ClassVar[int] = 2

    client_order_id: str
    broker_order_id: str
    symbol: str
    side: Side
    order_type: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    filled_qty: Decimal
    broker_status: str
    intent_id: str | None = None
    # v2
    order_class: str = "simple"
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    hwm: Decimal | None = None
    parent_client_order_id: str | None = None
    leg_role: str = ""
    time_in_force: str = "day"


class OrphanOrderCanceled(Event, frozen=True, tag="orphan_canceled"):
    client_order_id: str
    broker_order_id: str
    symbol: str
    reason: str


class ReconciliationCompleted(Event, frozen=True, tag="reconciliation_completed"):
    kind: str
    ok: bool
    discrepancies: int = 0


# --- anomalies ---------------------------------------------------------------------------


class IllegalTransition(Event, frozen=True, tag="illegal_transition"):
    """The order state machine refused an event; recorded rather than crashing."""

    client_order_id: str
    from_state: str
    event_type: str
    event_seq: int = 0


# --- operations: broker stream health and alerts -----------------------------------------


class BrokerStreamStatus(Event, frozen=True, tag="broker_stream"):
    """The broker's trade-update stream changed state (recorded on change only), so the
    dashboard and alerts can say how long it has been down from the log alone."""

    state: str
    connected: bool
    detail: str = ""


class AlertSent(Event, frozen=True, tag="alert_sent"):
    """An alert the notifier tried to deliver to one webhook: who was told what, when.

    `webhook` names the target without its secret parts (scheme, host, port); `source_seq`
    is the event that raised the alert; `dropped` counts alerts discarded (oldest first)
    because the queue was full since the previous record."""

    alert_id: str
    kind: str
    summary: str
    webhook: str
    delivered: bool
    attempts: int
    status: int | None = None
    error: str = ""
    source_seq: int = 0
    dropped: int = 0


class ProtectionMissing(Event, frozen=True, tag="protection_missing"):
    """An open position lost (part of) its protection at the broker: the protective stop
    `client_order_id` ended unfilled (canceled by hand, an expired DAY stop, a rejected leg)
    and no live stop covers `uncovered` of `position`. `action` is what the policy
    (`reconcile.missing_protection`) did: restore (re-placed through the gate as intent
    `restore_intent_id`), halt, or alert. Found at `found_at` (startup | reconciliation)."""

    symbol: str
    client_order_id: str
    position: Decimal
    uncovered: Decimal
    stop_status: str
    action: str
    found_at: str = "reconciliation"
    restore_intent_id: str | None = None
    detail: str = ""


AnyEvent = (
    BarReceived
    | DataRejected
    | DataGap
    | OrderIntent
    | StrategyError
    | RiskApproved
    | RiskRejected
    | OrderSubmitRequested
    | OrderSubmitted
    | OrderSubmitAmbiguous
    | OrderAccepted
    | FillReceived
    | CancelRequested
    | CancelRejected
    | OrderCanceled
    | OrderRejected
    | OrderExpired
    | ReplaceRequested
    | OrderReplaced
    | TrailingStopUpdated
    | UnknownBrokerMessage
    | AccountSnapshot
    | AssetInfo
    | RunStarted
    | RunEnded
    | RunSealed
    | RecoveryStep
    | RecoveryCompleted
    | TradingStateChanged
    | KillSwitchEngaged
    | KillSwitchVerified
    | KillSwitchReleased
    | DiscrepancyFound
    | PositionAdjusted
    | OrphanOrderAdopted
    | OrphanOrderCanceled
    | ReconciliationCompleted
    | IllegalTransition
    | BrokerStreamStatus
    | AlertSent
    | ProtectionMissing
)

ALL_EVENT_TYPES: tuple[type[Event], ...] = AnyEvent.__args__
