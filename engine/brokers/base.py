"""What a broker is to the engine: submit, cancel, replace, look up, list, and a stream of
trade updates. `SimulatedBroker` and `AlpacaBroker` implement it.

Outcomes are typed so the execution service can follow the rule that matters most:
**an ambiguous outcome is not a rejection.** Only `OrderRejectedError` proves an order was
refused; `AmbiguousSubmitError` (timeout, disconnect, 5xx, unparsable answer, duplicate client
id) means "it may exist": resolve it by `get_order_by_client_id`, never by submitting again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Protocol

import msgspec

from events.catalogue import OrderLeg, StopLoss, TakeProfit
from events.vocabulary import ZERO, OrderClass, OrderType
from events.vocabulary import Side as Side  # noqa: PLC0414  (the adapters import it from here)

from .kinds import CLOSED_STATES, OrderState, UpdateKind


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What to send. For a bracket/OTO/OCO, `take_profit` / `stop_loss` are the legs in
    Alpaca's request shape and `legs` the same legs as our log knows them (with their client
    ids, see `events.catalogue.leg_client_order_id`). For an OCO the order itself is the
    take-profit limit and `legs` holds only the stop. `stop_price` is a stop / stop-limit
    order's trigger; exactly one of `trail_price` / `trail_percent` makes a trailing stop."""

    client_order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: str = "day"
    qty: Decimal | None = None
    notional: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    order_class: OrderClass = "simple"
    take_profit: TakeProfit | None = None
    stop_loss: StopLoss | None = None
    legs: tuple[OrderLeg, ...] = ()


class BrokerOrder(msgspec.Struct, frozen=True, kw_only=True):
    """An order as the broker reports it. `state` is where it stands, in the neutral words of
    `engine.brokers.kinds` (the adapter translates); `status` is the broker's own word for it
    (Alpaca's `new`, `done_for_day`, ...), kept for the record and never decided on.
    `filled_qty` is cumulative.

    A `held` order is a leg waiting at the broker: a bracket/OTO leg before its parent fills (Alpaca
    keeps a bracket's stop-loss `held` even after that, while the take-profit is `new`; the
    stop still triggers). `legs` are the child orders nested under a parent (Alpaca's
    `nested=true` listing), each with `parent_broker_order_id` set. `hwm` is a trailing
    stop's high-water mark as the broker reports it, `stop_price` its current stop."""

    broker_order_id: str
    client_order_id: str
    symbol: str
    side: Side
    order_type: str
    status: str
    state: OrderState
    qty: Decimal | None = None
    notional: Decimal | None = None
    limit_price: Decimal | None = None
    time_in_force: str = "day"
    filled_qty: Decimal = ZERO
    filled_avg_price: Decimal | None = None
    submitted_at: datetime | None = None
    updated_at: datetime | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    hwm: Decimal | None = None
    order_class: str = "simple"
    legs: tuple[BrokerOrder, ...] = ()
    parent_broker_order_id: str | None = None

    @property
    def is_open(self) -> bool:
        return self.state not in CLOSED_STATES

    def with_legs(self) -> list[BrokerOrder]:
        """This order followed by its legs (and theirs), parents first."""
        out = [self]
        for leg in self.legs:
            out.extend(leg.with_legs())
        return out


class BrokerPosition(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: Decimal  # signed: negative is short
    avg_entry_price: Decimal
    market_value: Decimal | None = None


class BrokerAccount(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    equity: Decimal
    cash: Decimal
    buying_power: Decimal
    status: str = "ACTIVE"
    # Retired with the PDT rule; Alpaca stopped reporting them in July 2026 (None then).
    daytrade_count: int | None = None
    pattern_day_trader: bool | None = None
    trading_blocked: bool = False


class BrokerAsset(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    tradable: bool
    fractionable: bool
    shortable: bool = False
    status: str = "active"


class BrokerFill(msgspec.Struct, frozen=True, kw_only=True):
    """One execution from the broker's activity history (used to fill gaps)."""

    activity_id: str
    broker_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    timestamp: datetime
    client_order_id: str | None = None
    cum_qty: Decimal | None = None


class TradeUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """One message from the trade-updates stream. `kind` is what happened, in neutral words
    (the adapter translates); `event` the broker's own name for it, for the record only.
    For fills, `qty`/`price` are this execution's and `order.filled_qty` the cumulative
    quantity after it."""

    kind: UpdateKind
    event: str
    order: BrokerOrder
    timestamp: datetime
    execution_id: str | None = None
    qty: Decimal | None = None
    price: Decimal | None = None
    position_qty: Decimal | None = None
    fee: Decimal = ZERO  # commission the broker charged on this execution, if any


class StreamConnected(msgspec.Struct, frozen=True, kw_only=True):
    """The update stream (re)connected. Updates sent while it was down are lost (Alpaca has
    no replay), so the receiver must fill the gap from `since` over REST."""

    since: datetime | None
    reconnect: bool


class UnparsedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A stream message that could not be understood; kept verbatim for the log."""

    raw: str
    error: str


BrokerEvent = TradeUpdate | StreamConnected | UnparsedMessage


class BrokerError(Exception):
    """Base of broker errors. Messages never contain credentials."""


class OrderRejectedError(BrokerError):
    """The broker definitely refused the order (400/401/403, 422 other than a duplicate id)."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class AmbiguousSubmitError(BrokerError):
    """The order may or may not exist. `kind`: timeout, disconnect, server_error,
    rate_limited, duplicate_id, unparsable."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class CancelRejectedError(BrokerError):
    """The broker refused to cancel (e.g. the order is already filled or filling)."""


class OrderNotFoundError(BrokerError):
    pass


class BrokerUnavailableError(BrokerError):
    """A read (lookup, list, account) failed; the caller may retry later."""


class Broker(Protocol):
    name: str
    # True when orders live outside this process (a real broker): the submit record must be
    # durable before the call. The in-process simulated broker sets False (see there).
    external: bool

    async def submit(self, request: OrderRequest) -> BrokerOrder: ...

    async def cancel(self, broker_order_id: str) -> None: ...

    async def replace(self, broker_order_id: str, *, qty: Decimal | None = None,
                      limit_price: Decimal | None = None,
                      client_order_id: str | None = None,
                      stop_price: Decimal | None = None,
                      trail: Decimal | None = None) -> BrokerOrder:
        """Alpaca's PATCH. `stop_price` moves a stop / stop-limit trigger; `trail` is a
        trailing stop's new trail (in the unit the order was placed with: price or percent)."""
        ...

    async def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        """The order, or None when the broker genuinely has no such order."""
        ...

    async def open_orders(self) -> list[BrokerOrder]:
        """Open orders, legs nested under their parents (`BrokerOrder.legs`)."""
        ...

    async def orders_since(self, after: datetime) -> list[BrokerOrder]:
        """Every order (any status) submitted or updated after `after` (gap filling)."""
        ...

    async def fills_since(self, after: datetime) -> list[BrokerFill]: ...

    async def positions(self) -> list[BrokerPosition]: ...

    async def account(self) -> BrokerAccount: ...

    async def asset(self, symbol: str) -> BrokerAsset | None: ...

    def trade_updates(self) -> AsyncIterator[BrokerEvent]:
        """Trade updates as they arrive, with a `StreamConnected` on every (re)connect."""
        ...
