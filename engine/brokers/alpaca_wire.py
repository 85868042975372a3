"""Alpaca's JSON shapes, as typed msgspec structs: what each message must and may carry.

Decoding goes through `decode(obj, WireX)`, which turns any mismatch (a missing field, a
wrong type, an amount that is not a finite number, an unknown side) into one
`AlpacaParseError` naming the field by path (`$.legs[0].qty`). Alpaca's quirks handled here,
once, before the structs see the message:
- amounts are strings ("190.5"): msgspec decodes them to `Decimal` exactly; JSON numbers
  reach us already as `Decimal` (our REST session and stream decode with
  `parse_float=Decimal`). A float anywhere means someone decoded without it, and is refused.
- an empty string means "not set" (Alpaca sends `""` for some unset fields): it is dropped,
  so an optional field gets its default and a required one is reported missing.
- timestamps stay strings here: Alpaca sends up to 9 fractional digits, which
  `alpaca_parse.parse_ts` truncates (msgspec would round, and a watermark must never move
  past an event).
- account flags may be booleans or "true"/"false" strings.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal, TypeVar

import msgspec

from events.vocabulary import ZERO


class AlpacaParseError(ValueError):
    """A value from Alpaca did not have the expected shape."""


class _Wire(msgspec.Struct, frozen=True, kw_only=True):
    def __post_init__(self) -> None:
        # msgspec accepts "NaN" and "Infinity" as decimals; an amount must be a number.
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, Decimal) and not value.is_finite():
                raise ValueError(f"{name}: not finite: {value}")


WireSide = Literal["buy", "sell", "sell_short"]  # FILL activities say "sell_short"


class WireOrder(_Wire, frozen=True, kw_only=True):
    id: str
    client_order_id: str
    symbol: str
    side: WireSide
    status: str
    type: str | None = None
    order_type: str | None = None  # older answers name the type so
    qty: Decimal | None = None
    notional: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    hwm: Decimal | None = None
    time_in_force: str = "day"
    filled_qty: Decimal = ZERO
    filled_avg_price: Decimal | None = None
    submitted_at: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    order_class: str = "simple"
    # Alpaca nests a parent's legs in POST answers, `nested=true` queries and stream updates.
    legs: list[WireOrder] | None = None


class WireTradeUpdate(_Wire, frozen=True, kw_only=True):
    """The `data` of a `trade_updates` message."""

    event: str
    order: WireOrder
    timestamp: str
    execution_id: str | None = None
    qty: Decimal | None = None
    price: Decimal | None = None
    position_qty: Decimal | None = None


class WireFillActivity(_Wire, frozen=True, kw_only=True):
    """One item of GET /v2/account/activities/FILL. Alpaca's documented sample has no
    account_id/order_status/client_order_id, so only what a fill needs is required."""

    id: str
    order_id: str
    symbol: str
    side: WireSide
    qty: Decimal
    price: Decimal
    transaction_time: str
    client_order_id: str | None = None
    cum_qty: Decimal | None = None


class WirePosition(_Wire, frozen=True, kw_only=True):
    symbol: str
    qty: Decimal
    avg_entry_price: Decimal
    side: Literal["long", "short"] | None = None
    market_value: Decimal | None = None


WireFlag = bool | Literal["true", "false", "True", "False", "TRUE", "FALSE"]


class WireAccount(_Wire, frozen=True, kw_only=True):
    id: str
    equity: Decimal
    cash: Decimal
    buying_power: Decimal
    status: str = "ACTIVE"
    daytrade_count: Decimal | None = None  # removed by Alpaca on 2026-07-06 with the PDT rule
    pattern_day_trader: WireFlag | None = None
    trading_blocked: WireFlag | None = None
    account_blocked: WireFlag | None = None
    trade_suspended_by_user: WireFlag | None = None


class WireAsset(_Wire, frozen=True, kw_only=True):
    symbol: str
    tradable: WireFlag
    fractionable: WireFlag = False
    shortable: WireFlag = False
    status: str = "active"


def flag(value: WireFlag) -> bool:
    return value if isinstance(value, bool) else value.lower() == "true"


W = TypeVar("W", bound=_Wire)


def decode(obj: Any, wire: type[W], where: str) -> W:
    """`obj` (JSON decoded with `parse_float=Decimal`) as `wire`, or `AlpacaParseError`."""
    try:
        return msgspec.convert(_unquirk(obj, where), wire)
    except msgspec.ValidationError as e:
        raise AlpacaParseError(f"{where}: {e}") from None


def amount(value: Any, where: str) -> Decimal:
    """One finite amount, decoded like a struct's field."""
    try:
        result = msgspec.convert(_unquirk(value, where), Decimal)
    except msgspec.ValidationError as e:
        raise AlpacaParseError(f"{where}: {e}") from None
    if not result.is_finite():
        raise AlpacaParseError(f"{where}: not finite: {value!r}")
    return result


def _unquirk(obj: Any, where: str) -> Any:
    if isinstance(obj, float):
        raise AlpacaParseError(f"{where}: a float where a decimal was expected ({obj!r}); "
                               "JSON must be decoded with parse_float=Decimal")
    if isinstance(obj, dict):
        return {k: _unquirk(v, where) for k, v in obj.items() if v != ""}
    if isinstance(obj, list):
        return [_unquirk(v, where) for v in obj]
    return obj
