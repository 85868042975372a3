"""Alpaca Trading API JSON -> the broker value types of `engine.brokers.base`.

Pure functions, no I/O. Each message is decoded through its typed struct
(`engine.brokers.alpaca_wire`: exact Decimals, field paths in errors), then given the neutral
kinds of `engine.brokers.kinds` (`engine.brokers.alpaca_vocab` knows Alpaca's words).
Anything that does not fit raises `AlpacaParseError`, which the callers turn into an
ambiguous outcome (submit), `BrokerUnavailableError` (reads) or `UnparsedMessage` (stream).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from .alpaca_vocab import order_state, update_kind
from .alpaca_wire import (
    AlpacaParseError,
    WireAccount,
    WireAsset,
    WireFillActivity,
    WireOrder,
    WirePosition,
    WireSide,
    WireTradeUpdate,
    amount,
    decode,
    flag,
)
from .base import (
    BrokerAccount,
    BrokerAsset,
    BrokerFill,
    BrokerOrder,
    BrokerPosition,
    Side,
    TradeUpdate,
)
from .kinds import FILL_KINDS

__all__ = ["AlpacaParseError", "dec", "format_dec", "format_ts", "opt_ts", "parse_account",
           "parse_asset", "parse_error_body", "parse_fill_activity", "parse_order",
           "parse_position", "parse_trade_update", "parse_ts", "step_back"]

_TS_RE = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?"
    r"(?P<tz>Z|z|[+-]\d{2}:?\d{2})$"
)


def dec(value: Any, field: str) -> Decimal:
    """A finite Decimal from Alpaca's string (or an already-Decimal/int JSON number)."""
    return amount(value, field)


def parse_ts(value: Any, field: str) -> datetime:
    """RFC 3339 -> tz-aware UTC datetime. Alpaca sends up to 9 fractional digits; Python
    keeps 6, so we truncate (never round up: a watermark must not move past an event)."""
    if not isinstance(value, str):
        raise AlpacaParseError(f"{field}: expected an RFC 3339 string, got {type(value).__name__}")
    m = _TS_RE.match(value.strip())
    if m is None:
        raise AlpacaParseError(f"{field}: not an RFC 3339 timestamp with offset: {value[:40]!r}")
    frac = (m.group("frac") or "")[:6].ljust(6, "0")
    tz = m.group("tz")
    tz = "+00:00" if tz in ("Z", "z") else tz
    try:
        parsed = datetime.fromisoformat(f"{m.group('base').replace(' ', 'T')}.{frac}{tz}")
    except ValueError:
        raise AlpacaParseError(f"{field}: invalid timestamp {value[:40]!r}") from None
    return parsed.astimezone(UTC)


def opt_ts(value: Any, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    return parse_ts(value, field)


def format_ts(ts: datetime) -> str:
    """UTC with microseconds and 'Z' (no '+' that a query string could mangle)."""
    if ts.tzinfo is None:
        raise ValueError("timestamps sent to Alpaca must be timezone-aware")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_dec(value: Decimal) -> str:
    """Plain notation ("0.00001", never "1E-5"), as Alpaca expects in order bodies."""
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {value}")
    return format(value, "f")


def parse_side(value: WireSide) -> Side:
    # FILL activities say "sell_short" for a short sale; for our books it is a sell.
    return "buy" if value == "buy" else "sell"


def parse_order(obj: Any) -> BrokerOrder:
    """An order, with its `legs` parsed as orders of their own."""
    return _order(decode(obj, WireOrder, "order"), None)


def _order(o: WireOrder, parent_broker_order_id: str | None) -> BrokerOrder:
    order_type = o.type or o.order_type
    if order_type is None:
        raise AlpacaParseError("order: missing 'type'")
    submitted = opt_ts(o.submitted_at, "order.submitted_at") or opt_ts(
        o.created_at, "order.created_at")
    return BrokerOrder(
        broker_order_id=o.id,
        client_order_id=o.client_order_id,
        symbol=o.symbol,
        side=parse_side(o.side),
        order_type=order_type,
        status=o.status,
        state=order_state(o.status),
        qty=o.qty,
        notional=o.notional,
        limit_price=o.limit_price,
        time_in_force=o.time_in_force,
        filled_qty=o.filled_qty,
        filled_avg_price=o.filled_avg_price,
        submitted_at=submitted,
        updated_at=opt_ts(o.updated_at, "order.updated_at"),
        replaced_by=o.replaced_by,
        replaces=o.replaces,
        stop_price=o.stop_price,
        trail_price=o.trail_price,
        trail_percent=o.trail_percent,
        hwm=o.hwm,
        order_class=o.order_class,
        legs=tuple(_order(leg, o.id) for leg in o.legs or ()),
        parent_broker_order_id=parent_broker_order_id,
    )


def parse_trade_update(obj: Any) -> TradeUpdate:
    """The `data` of a `trade_updates` message. An event name Alpaca has not documented is
    refused (the stream turns it into an `UnparsedMessage`, recorded verbatim)."""
    d = decode(obj, WireTradeUpdate, "trade update")
    kind = update_kind(d.event)
    if kind is None:
        raise AlpacaParseError(f"trade update: unknown event {d.event[:40]!r}")
    if kind in FILL_KINDS and (d.execution_id is None or d.qty is None or d.price is None):
        raise AlpacaParseError(f"trade update: {d.event!r} without execution_id, qty or price")
    return TradeUpdate(
        kind=kind,
        event=d.event,
        order=_order(d.order, None),
        timestamp=parse_ts(d.timestamp, "trade update.timestamp"),
        execution_id=d.execution_id,
        qty=d.qty,
        price=d.price,
        position_qty=d.position_qty,
    )


def parse_fill_activity(obj: Any) -> BrokerFill:
    """One item of GET /v2/account/activities/FILL."""
    a = decode(obj, WireFillActivity, "fill activity")
    return BrokerFill(
        activity_id=a.id,
        broker_order_id=a.order_id,
        symbol=a.symbol,
        side=parse_side(a.side),
        qty=a.qty,
        price=a.price,
        timestamp=parse_ts(a.transaction_time, "fill activity.transaction_time"),
        client_order_id=a.client_order_id,
        cum_qty=a.cum_qty,
    )


def parse_position(obj: Any) -> BrokerPosition:
    p = decode(obj, WirePosition, "position")
    qty = p.qty
    # Alpaca signs short quantities, but `side` is the documented source of truth.
    if p.side == "short":
        qty = -abs(qty)
    elif p.side == "long":
        qty = abs(qty)
    return BrokerPosition(symbol=p.symbol, qty=qty, avg_entry_price=p.avg_entry_price,
                          market_value=p.market_value)


def parse_account(obj: Any) -> BrokerAccount:
    a = decode(obj, WireAccount, "account")
    daytrade_count: int | None = None  # None: removed by Alpaca with the PDT rule
    if a.daytrade_count is not None:
        count = a.daytrade_count
        if count != count.to_integral_value() or count < 0:
            raise AlpacaParseError(f"account.daytrade_count: not a count: {count}")
        daytrade_count = int(count)
    # Any block means "cannot trade now"; the gate only needs that one bit.
    blocked = any(flag(f) for f in (a.trading_blocked, a.account_blocked,
                                    a.trade_suspended_by_user) if f is not None)
    return BrokerAccount(
        account_id=a.id,
        equity=a.equity,
        cash=a.cash,
        buying_power=a.buying_power,
        status=a.status,
        daytrade_count=daytrade_count,
        pattern_day_trader=None if a.pattern_day_trader is None else flag(a.pattern_day_trader),
        trading_blocked=blocked,
    )


def parse_asset(obj: Any) -> BrokerAsset:
    a = decode(obj, WireAsset, "asset")
    return BrokerAsset(symbol=a.symbol, tradable=flag(a.tradable),
                       fractionable=flag(a.fractionable), shortable=flag(a.shortable),
                       status=a.status)


def parse_error_body(text: str) -> tuple[int | None, str | None]:
    """(code, message) of an Alpaca error body, or (None, None) when it is not JSON
    (the edge's HTML 504, a proxy page)."""
    try:
        body = json.loads(text, parse_float=Decimal)
    except ValueError:
        return None, None
    if not isinstance(body, Mapping):
        return None, None
    code = body.get("code")
    message = body.get("message")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        message if isinstance(message, str) else None,
    )


def step_back(ts: datetime) -> datetime:
    """One microsecond earlier: used to re-include items that share a page-boundary
    timestamp, since Alpaca's `after` is exclusive."""
    return ts - timedelta(microseconds=1)
