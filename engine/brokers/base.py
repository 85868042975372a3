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
from typing import Literal, Protocol

import msgspec

Side = Literal["buy", "sell"]


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str
    symbol: str
    side: Side
    order_type: Literal["market", "limit"]
    time_in_force: str = "day"
    qty: Decimal | None = None
    notional: Decimal | None = None
    limit_price: Decimal | None = None


class BrokerOrder(msgspec.Struct, frozen=True, kw_only=True):
    """An order as the broker reports it. `status` uses Alpaca's names (new, accepted,
    pending_new, partially_filled, filled, canceled, expired, rejected, replaced,
    pending_cancel, done_for_day, ...); `filled_qty` is cumulative."""

    broker_order_id: str
    client_order_id: str
    symbol: str
    side: Side
    order_type: str
    status: str
    qty: Decimal | None = None
    notional: Decimal | None = None
    limit_price: Decimal | None = None
    time_in_force: str = "day"
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    submitted_at: datetime | None = None
    updated_at: datetime | None = None
    replaced_by: str | None = None
    replaces: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status not in CLOSED_STATUSES


CLOSED_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced",
                             "done_for_day", "stopped", "suspended"})


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
    """One message from the trade-updates stream. For fills, `qty`/`price` are this
    execution's and `order.filled_qty` the cumulative quantity after it."""

    event: str
    order: BrokerOrder
    timestamp: datetime
    execution_id: str | None = None
    qty: Decimal | None = None
    price: Decimal | None = None
    position_qty: Decimal | None = None
    fee: Decimal = Decimal(0)  # commission the broker charged on this execution, if any


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
                      client_order_id: str | None = None) -> BrokerOrder: ...

    async def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        """The order, or None when the broker genuinely has no such order."""
        ...

    async def open_orders(self) -> list[BrokerOrder]: ...

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
