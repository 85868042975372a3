"""Alpaca Trading API JSON -> the broker value types of `engine.brokers.base`.

Pure functions, no I/O. Alpaca sends amounts as strings ("190.5"); they become `Decimal`
exactly. A JSON number is accepted only if it was decoded as `Decimal` or `int` (our REST
session and stream decode with `parse_float=Decimal`), so a float can never sneak in.
Anything that does not fit raises `AlpacaParseError`, which the callers turn into an
ambiguous outcome (submit), `BrokerUnavailableError` (reads) or `UnparsedMessage` (stream).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from events.vocabulary import ZERO

from .base import (
    BrokerAccount,
    BrokerAsset,
    BrokerFill,
    BrokerOrder,
    BrokerPosition,
    Side,
    TradeUpdate,
)

# Events whose message describes one execution: they must carry its id, qty and price,
# otherwise a fill could be counted without knowing what was filled.
FILL_EVENTS = frozenset({"fill", "partial_fill"})

_TS_RE = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?"
    r"(?P<tz>Z|z|[+-]\d{2}:?\d{2})$"
)


class AlpacaParseError(ValueError):
    """A value from Alpaca did not have the expected shape."""


def _require(obj: Mapping[str, Any], key: str, where: str) -> Any:
    value = obj.get(key)
    if value is None:
        raise AlpacaParseError(f"{where}: missing {key!r}")
    return value


def _as_mapping(obj: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise AlpacaParseError(f"{where}: expected an object, got {type(obj).__name__}")
    return obj


def dec(value: Any, field: str) -> Decimal:
    """A finite Decimal from Alpaca's string (or an already-Decimal/int JSON number)."""
    if isinstance(value, (bool, float)):
        # bool is an int subclass; a float means someone decoded JSON without parse_float
        raise AlpacaParseError(f"{field}: expected a decimal string, got {type(value).__name__}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise AlpacaParseError(f"{field}: not a number: {value[:40]!r}") from None
    else:
        raise AlpacaParseError(f"{field}: expected a decimal string, got {type(value).__name__}")
    if not result.is_finite():
        raise AlpacaParseError(f"{field}: not finite: {value!r}")
    return result


def opt_dec(value: Any, field: str) -> Decimal | None:
    if value is None or value == "":
        return None
    return dec(value, field)


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


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _require(obj, key, where)
    if not isinstance(value, str) or not value:
        raise AlpacaParseError(f"{where}: {key!r} must be a non-empty string")
    return value


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise AlpacaParseError(f"{where}: {key!r} must be a string")
    return value


def _bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise AlpacaParseError(f"{field}: expected a boolean, got {value!r}")


def parse_side(value: Any, field: str) -> Side:
    # FILL activities say "sell_short" for a short sale; for our books it is a sell.
    if value == "buy":
        return "buy"
    if value in ("sell", "sell_short"):
        return "sell"
    raise AlpacaParseError(f"{field}: unknown side {value!r}")


def parse_order(obj: Any, parent_broker_order_id: str | None = None) -> BrokerOrder:
    """An order, with its `legs` (Alpaca nests them in a parent's JSON: in POST answers,
    `nested=true` queries and the parent's stream updates) parsed as orders of their own."""
    o = _as_mapping(obj, "order")
    side = parse_side(o.get("side"), "order.side")
    order_type = o.get("type") or o.get("order_type")
    if not isinstance(order_type, str):
        raise AlpacaParseError("order: missing 'type'")
    submitted = opt_ts(o.get("submitted_at"), "order.submitted_at") or opt_ts(
        o.get("created_at"), "order.created_at"
    )
    broker_order_id = _str(o, "id", "order")
    raw_legs = o.get("legs") or ()
    if not isinstance(raw_legs, (list, tuple)):
        raise AlpacaParseError("order.legs: expected a list")
    return BrokerOrder(
        broker_order_id=broker_order_id,
        client_order_id=_str(o, "client_order_id", "order"),
        symbol=_str(o, "symbol", "order"),
        side=side,
        order_type=order_type,
        status=_str(o, "status", "order"),
        qty=opt_dec(o.get("qty"), "order.qty"),
        notional=opt_dec(o.get("notional"), "order.notional"),
        limit_price=opt_dec(o.get("limit_price"), "order.limit_price"),
        time_in_force=_opt_str(o, "time_in_force", "order") or "day",
        filled_qty=opt_dec(o.get("filled_qty"), "order.filled_qty") or ZERO,
        filled_avg_price=opt_dec(o.get("filled_avg_price"), "order.filled_avg_price"),
        submitted_at=submitted,
        updated_at=opt_ts(o.get("updated_at"), "order.updated_at"),
        replaced_by=_opt_str(o, "replaced_by", "order"),
        replaces=_opt_str(o, "replaces", "order"),
        stop_price=opt_dec(o.get("stop_price"), "order.stop_price"),
        trail_price=opt_dec(o.get("trail_price"), "order.trail_price"),
        trail_percent=opt_dec(o.get("trail_percent"), "order.trail_percent"),
        hwm=opt_dec(o.get("hwm"), "order.hwm"),
        order_class=_opt_str(o, "order_class", "order") or "simple",
        legs=tuple(parse_order(leg, broker_order_id) for leg in raw_legs),
        parent_broker_order_id=parent_broker_order_id,
    )


def parse_trade_update(obj: Any) -> TradeUpdate:
    """The `data` of a `trade_updates` message."""
    d = _as_mapping(obj, "trade update")
    event = _str(d, "event", "trade update")
    update = TradeUpdate(
        event=event,
        order=parse_order(_require(d, "order", "trade update")),
        timestamp=parse_ts(_require(d, "timestamp", "trade update"), "trade update.timestamp"),
        execution_id=_opt_str(d, "execution_id", "trade update"),
        qty=opt_dec(d.get("qty"), "trade update.qty"),
        price=opt_dec(d.get("price"), "trade update.price"),
        position_qty=opt_dec(d.get("position_qty"), "trade update.position_qty"),
    )
    if event in FILL_EVENTS and (
        update.execution_id is None or update.qty is None or update.price is None
    ):
        raise AlpacaParseError(f"trade update: {event!r} without execution_id, qty or price")
    return update


def parse_fill_activity(obj: Any) -> BrokerFill:
    """One item of GET /v2/account/activities/FILL. Alpaca's documented sample has no
    account_id/order_status/client_order_id, so only what a fill needs is required."""
    a = _as_mapping(obj, "fill activity")
    return BrokerFill(
        activity_id=_str(a, "id", "fill activity"),
        broker_order_id=_str(a, "order_id", "fill activity"),
        symbol=_str(a, "symbol", "fill activity"),
        side=parse_side(a.get("side"), "fill activity.side"),
        qty=dec(_require(a, "qty", "fill activity"), "fill activity.qty"),
        price=dec(_require(a, "price", "fill activity"), "fill activity.price"),
        timestamp=parse_ts(
            _require(a, "transaction_time", "fill activity"), "fill activity.transaction_time"
        ),
        client_order_id=_opt_str(a, "client_order_id", "fill activity"),
        cum_qty=opt_dec(a.get("cum_qty"), "fill activity.cum_qty"),
    )


def parse_position(obj: Any) -> BrokerPosition:
    p = _as_mapping(obj, "position")
    qty = dec(_require(p, "qty", "position"), "position.qty")
    # Alpaca signs short quantities, but `side` is the documented source of truth.
    if p.get("side") == "short":
        qty = -abs(qty)
    elif p.get("side") == "long":
        qty = abs(qty)
    return BrokerPosition(
        symbol=_str(p, "symbol", "position"),
        qty=qty,
        avg_entry_price=dec(_require(p, "avg_entry_price", "position"), "position.avg_entry_price"),
        market_value=opt_dec(p.get("market_value"), "position.market_value"),
    )


def parse_account(obj: Any) -> BrokerAccount:
    a = _as_mapping(obj, "account")
    daytrade_raw = a.get("daytrade_count")
    daytrade_count: int | None
    if daytrade_raw is None:
        daytrade_count = None  # removed by Alpaca on 2026-07-06 with the PDT rule
    else:
        count = dec(daytrade_raw, "account.daytrade_count")
        if count != count.to_integral_value() or count < 0:
            raise AlpacaParseError(f"account.daytrade_count: not a count: {daytrade_raw!r}")
        daytrade_count = int(count)
    pdt_raw = a.get("pattern_day_trader")
    # Any block means "cannot trade now"; the gate only needs that one bit.
    blocked = any(
        _bool(a[k], f"account.{k}")
        for k in ("trading_blocked", "account_blocked", "trade_suspended_by_user")
        if a.get(k) is not None
    )
    return BrokerAccount(
        account_id=_str(a, "id", "account"),
        equity=dec(_require(a, "equity", "account"), "account.equity"),
        cash=dec(_require(a, "cash", "account"), "account.cash"),
        buying_power=dec(_require(a, "buying_power", "account"), "account.buying_power"),
        status=_opt_str(a, "status", "account") or "ACTIVE",
        daytrade_count=daytrade_count,
        pattern_day_trader=None if pdt_raw is None else _bool(pdt_raw, "account.pattern_day_trader"),
        trading_blocked=blocked,
    )


def parse_asset(obj: Any) -> BrokerAsset:
    a = _as_mapping(obj, "asset")
    return BrokerAsset(
        symbol=_str(a, "symbol", "asset"),
        tradable=_bool(_require(a, "tradable", "asset"), "asset.tradable"),
        fractionable=_bool(a.get("fractionable", False), "asset.fractionable"),
        shortable=_bool(a.get("shortable", False), "asset.shortable"),
        status=_opt_str(a, "status", "asset") or "active",
    )


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
