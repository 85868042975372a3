"""Turning one row of a bar file into a `Bar` (or a `BadInput` saying why not).

Documented columns (CSV header names; Parquet column names):

| column        | required | meaning                                                         |
|---------------|----------|-----------------------------------------------------------------|
| `symbol`      | yes      | ticker, e.g. `AAPL`                                              |
| `timestamp`   | yes      | the bar's OPENING time: ISO-8601 with an offset (`...Z`,         |
|               |          | `...+00:00`, `...-05:00`) or a bare epoch number (unit `epoch_unit`, |
|               |          | default seconds). A naive ISO time is refused unless the reader  |
|               |          | is given a time zone (`tz="America/New_York"`)                   |
| `open`..`close` | yes    | prices, parsed as `Decimal` from their text (never via float)    |
| `volume`      | yes      | shares, `Decimal` (fractional volume is allowed)                 |
| `vwap`        | no       | the bar's volume-weighted average price                          |
| `trade_count` | no       | number of trades (integer)                                       |
| `interval_s`  | no       | bar length in seconds; default is the reader's `interval_s` (60) |

Empty optional cells mean "not given". Extra columns are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from events.market import Bar, BarError

from .types import BadInput, MarketItem

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_RE = re.compile(r"^-?\d+(\.\d+)?$")

EpochUnit = Literal["s", "ms", "us", "ns"]
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}

REQUIRED_COLUMNS = ("symbol", "timestamp", "open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS = ("vwap", "trade_count", "interval_s")
PRICE_COLUMNS = ("open", "high", "low", "close", "vwap")


class InputError(ValueError):
    """One field that cannot be parsed; `code` is one of `INPUT_REJECT_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def resolve_tz(tz: str | tzinfo | None) -> tzinfo | None:
    """A declared time zone by IANA name or tzinfo; None stays None (naive times refused)."""
    if tz is None or isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r} (use an IANA name such as "
                         "'America/New_York' or 'UTC')") from None


def check_epoch_unit(unit: str) -> None:
    if unit not in _PER_SECOND:
        raise ValueError(f"epoch_unit must be one of {sorted(_PER_SECOND)}, got {unit!r}")


def to_decimal(value: Any, field: str) -> Decimal:
    """A Decimal from text, an int, or a Decimal. Floats are refused here on purpose: the
    caller decides (and documents) whether a float source may be converted."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            raise InputError("BAD_NUMBER", f"{field}={value!r} is not a number") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    raise InputError("BAD_NUMBER", f"{field}={value!r} ({type(value).__name__}) is not a "
                                   "decimal, integer or numeric text")


def float_to_decimal(value: float) -> Decimal:
    """The decimal a float was printed from: its shortest round-trip repr (10.2 -> 10.2, not
    10.199999999999999289...). Used only where the source itself only has binary floats (JSON
    and msgpack market data, float Parquet columns when explicitly allowed)."""
    return Decimal(repr(value))


def to_int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise InputError("BAD_NUMBER", f"{field}={value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise InputError("BAD_NUMBER", f"{field}={value!r} is not an integer") from None
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    raise InputError("BAD_NUMBER", f"{field}={value!r} is not an integer")


def localize(naive: datetime, tz: tzinfo, field: str = "timestamp") -> datetime:
    """Attach a declared zone to a wall-clock time, refusing the DST fold (ambiguous) and
    the DST gap (a time that never existed), then convert to UTC."""
    aware = naive.replace(tzinfo=tz)
    as_utc = aware.astimezone(UTC)
    # In a gap, fold=0 and fold=1 also disagree (PEP 495), so test the gap first.
    if as_utc.astimezone(tz).replace(tzinfo=None) != naive:
        raise InputError("NONEXISTENT_TIMESTAMP",
                         f"{field}={naive.isoformat()} does not exist in {tz} (DST gap)")
    if aware.utcoffset() != naive.replace(tzinfo=tz, fold=1).utcoffset():
        raise InputError("AMBIGUOUS_TIMESTAMP",
                         f"{field}={naive.isoformat()} occurs twice in {tz} (DST change); "
                         "give it with an offset")
    return as_utc


def from_epoch(value: Decimal | int, unit: str) -> datetime:
    per = _PER_SECOND[unit]
    us = Decimal(value) * 1_000_000 / per
    whole = int(us)
    if us != whole:
        raise InputError("BAD_TIMESTAMP", f"epoch {value} {unit} has sub-microsecond digits")
    try:
        return _EPOCH + timedelta(microseconds=whole)
    except OverflowError:
        raise InputError("BAD_TIMESTAMP", f"epoch {value} {unit} is out of range") from None


def parse_timestamp(value: Any, tz: tzinfo | None, epoch_unit: str = "s") -> datetime:
    """An aware UTC datetime from ISO text, epoch text/int, or a datetime."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, int) and not isinstance(value, bool):
        return from_epoch(value, epoch_unit)
    elif isinstance(value, str):
        s = value.strip()
        if _EPOCH_RE.match(s):
            return from_epoch(Decimal(s), epoch_unit)
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            raise InputError("BAD_TIMESTAMP", f"timestamp={value!r} is not ISO-8601 or an "
                                              "epoch number") from None
    else:
        raise InputError("BAD_TIMESTAMP", f"timestamp={value!r} ({type(value).__name__})")
    if dt.tzinfo is None or dt.utcoffset() is None:
        if tz is None:
            raise InputError("NAIVE_TIMESTAMP",
                             f"timestamp={dt.isoformat()} has no UTC offset; give one "
                             "(e.g. 'Z' or '-05:00') or declare the file's time zone")
        return localize(dt, tz)
    return dt if dt.tzinfo is UTC else dt.astimezone(UTC)


class RowParser:
    """Parses rows of one source. Keeps a small cache of timestamp texts because every
    symbol of a multi-symbol file repeats the same timestamps."""

    def __init__(self, *, provider: str, tz: tzinfo | None = None, interval_s: int = 60,
                 epoch_unit: str = "s",
                 convert: Callable[[Any, str], Decimal] = to_decimal) -> None:
        check_epoch_unit(epoch_unit)
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.provider = provider
        self.tz = tz
        self.interval_s = interval_s
        self.epoch_unit = epoch_unit
        self._dec = convert
        self._ts_cache: dict[Any, datetime] = {}

    def timestamp(self, value: Any) -> datetime:
        """Parse a timestamp cell (cached); raises `InputError`."""
        if isinstance(value, datetime):
            return parse_timestamp(value, self.tz, self.epoch_unit)
        cache = self._ts_cache
        dt = cache.get(value)
        if dt is None:
            dt = parse_timestamp(value, self.tz, self.epoch_unit)
            if len(cache) >= 4096:
                cache.clear()
            cache[value] = dt
        return dt

    def parse(self, row: Mapping[str, Any], raw: Callable[[], str]) -> MarketItem:
        """`row` maps column names to cell values (text, or typed Parquet values; None or ''
        for an empty cell); `raw()` renders the input for the record when it is bad."""
        symbol = row.get("symbol")
        sym = symbol.strip() if isinstance(symbol, str) else None
        try:
            for col in REQUIRED_COLUMNS:
                v = row.get(col)
                if v is None or (isinstance(v, str) and not v.strip()):
                    raise InputError("MISSING_FIELD", f"{col} is empty")
            dec = self._dec
            vwap = row.get("vwap")
            count = row.get("trade_count")
            interval = row.get("interval_s")
            return Bar(
                symbol=sym or "",
                start=self.timestamp(row["timestamp"]),
                interval_s=(to_int(interval, "interval_s")
                            if interval is not None and interval != "" else self.interval_s),
                open=dec(row["open"], "open"),
                high=dec(row["high"], "high"),
                low=dec(row["low"], "low"),
                close=dec(row["close"], "close"),
                volume=dec(row["volume"], "volume"),
                vwap=dec(vwap, "vwap") if vwap is not None and vwap != "" else None,
                trade_count=(to_int(count, "trade_count")
                             if count is not None and count != "" else None),
                provider=self.provider,
            )
        except (InputError, BarError) as e:
            return BadInput(reason=e.code, detail=e.message, raw=raw(), symbol=sym or None,
                            provider=self.provider)
