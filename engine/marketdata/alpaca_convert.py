"""Alpaca bar messages (stream and REST, raw form) -> `Bar | BadInput`.

Alpaca sends prices as JSON/msgpack binary floats; there is no decimal on the wire. Each float
becomes the decimal of its shortest round-trip repr (`str(10.2)` is "10.2"), which is the
decimal Alpaca printed; `Decimal(float)` would give 10.1999999999999992894572642398998141288757.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from events.market import Bar, BarError

from .parse import InputError, float_to_decimal, parse_timestamp
from .types import BadInput, MarketItem


def _num(value: Any, field: str) -> Decimal:
    if isinstance(value, float):
        return float_to_decimal(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, str):
        try:
            return Decimal(value)
        except ArithmeticError:
            pass
    raise InputError("BAD_NUMBER", f"{field}={value!r} is not a number")


def _ts(value: Any) -> datetime:
    to_dt = getattr(value, "to_datetime", None)  # msgpack.Timestamp on the stream
    if to_dt is not None:
        dt = to_dt()
        if isinstance(dt, datetime):
            return parse_timestamp(dt, None)
    return parse_timestamp(value, None)


def render_raw(msg: Any) -> str:
    """A JSON rendering of a raw message for `DataRejected.raw` (timestamps as ISO text)."""

    def default(v: Any) -> Any:
        to_dt = getattr(v, "to_datetime", None)
        if to_dt is not None:
            return to_dt().isoformat()
        if isinstance(v, datetime):
            return v.isoformat()
        return repr(v)

    try:
        return json.dumps(msg, default=default, sort_keys=True)
    except (TypeError, ValueError):
        return repr(msg)


def bar_from_alpaca(msg: Any, *, provider: str, symbol: str | None = None,
                    interval_s: int = 60) -> MarketItem:
    """One raw bar: keys t, o, h, l, c, v, n, vw (and S on the stream; REST bars get their
    symbol from the enclosing map)."""
    if not isinstance(msg, dict):
        return BadInput(reason="UNSUPPORTED_MESSAGE", detail=f"bar is a {type(msg).__name__}",
                        raw=render_raw(msg), symbol=symbol, provider=provider)
    sym = msg.get("S", symbol)
    sym = sym if isinstance(sym, str) else None
    try:
        for key in ("t", "o", "h", "l", "c", "v"):
            if msg.get(key) is None:
                raise InputError("MISSING_FIELD", f"{sym} bar has no {key!r}")
        vw = msg.get("vw")
        n = msg.get("n")
        if n is not None and not isinstance(n, int):
            if isinstance(n, float) and n.is_integer():
                n = int(n)
            else:
                raise InputError("BAD_NUMBER", f"{sym} trade count n={n!r}")
        return Bar(symbol=sym or "", start=_ts(msg["t"]), interval_s=interval_s,
                   open=_num(msg["o"], "o"), high=_num(msg["h"], "h"), low=_num(msg["l"], "l"),
                   close=_num(msg["c"], "c"), volume=_num(msg["v"], "v"),
                   vwap=_num(vw, "vw") if vw is not None else None, trade_count=n,
                   provider=provider)
    except (InputError, BarError) as e:
        return BadInput(reason=e.code, detail=e.message, raw=render_raw(msg), symbol=sym,
                        provider=provider)


def bar_from_model(model: Any, *, provider: str, interval_s: int = 60) -> MarketItem:
    """A parsed alpaca-py `Bar` model (a client not in raw mode) -> the same as raw."""
    msg = {"S": getattr(model, "symbol", None), "t": getattr(model, "timestamp", None),
           "o": getattr(model, "open", None), "h": getattr(model, "high", None),
           "l": getattr(model, "low", None), "c": getattr(model, "close", None),
           "v": getattr(model, "volume", None), "n": getattr(model, "trade_count", None),
           "vw": getattr(model, "vwap", None)}
    return bar_from_alpaca(msg, provider=provider, interval_s=interval_s)
