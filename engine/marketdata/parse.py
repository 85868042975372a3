"""Turning one row of a bar file into a `Bar` (or a `BadInput` saying why not).

Documented columns (CSV header names; Parquet column names; matched case-insensitively, and
the usual export spellings are accepted: `Date`/`Datetime`/`time` for `timestamp`, `Ticker`
for `symbol`, so a Yahoo or Stooq download reads as it is):

| column        | required | meaning                                                         |
|---------------|----------|-----------------------------------------------------------------|
| `symbol`      | yes*     | ticker, e.g. `AAPL`. *A file without it is one symbol's: the     |
|               |          | reader's `symbol` (`--symbol`), else the file name up to its first |
|               |          | `.`, `_`, `-` or space, upper-cased (`aapl.us.txt` -> `AAPL`)    |
| `timestamp`   | yes      | the bar's OPENING time: ISO-8601 with an offset (`...Z`,         |
|               |          | `...+00:00`, `...-05:00`) or a bare epoch number (unit `epoch_unit`, |
|               |          | default seconds). A naive ISO time is refused unless the reader  |
|               |          | is given a time zone (`tz="America/New_York"`). A DATE alone     |
|               |          | (`2024-03-01`) is that day's regular NYSE session: it opens at   |
|               |          | 09:30 New York and is known at the close (16:00, 13:00 on early- |
|               |          | close days), whatever `tz` says                                  |
| `open`..`close` | yes    | prices, parsed as `Decimal` from their text (never via float)    |
| `volume`      | yes      | shares, `Decimal` (fractional volume is allowed)                 |
| `vwap`        | no       | the bar's volume-weighted average price                          |
| `trade_count` | no       | number of trades (integer)                                       |
| `interval_s`  | no       | bar length in seconds; default is the reader's `interval_s`      |

Empty optional cells mean "not given". Extra columns are ignored — `Adj Close` too: prices are
traded as written in open/high/low/close.

The interval of a file without an `interval_s` column is declared (`interval_s`, or
`sessions=True` for daily bars) or inferred from its first rows (`infer_interval`): the
commonest gap between a symbol's consecutive bars; 20 hours or more means daily bars, which
are then read as sessions like date-only timestamps.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from events.market import Bar, BarError
from projections.calendar import NEW_YORK, is_business_day, session_close, session_open

from .types import BadInput, MarketItem

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_RE = re.compile(r"^-?\d+(\.\d+)?$")

EpochUnit = Literal["s", "ms", "us", "ns"]
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}

REQUIRED_COLUMNS = ("symbol", "timestamp", "open", "high", "low", "close", "volume")
# Header spellings of common exports (Yahoo, Stooq, yfinance, brokers) -> our column names.
COLUMN_ALIASES = {"date": "timestamp", "datetime": "timestamp", "time": "timestamp",
                  "date_time": "timestamp", "ticker": "symbol", "vol": "volume"}
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DAILY_GAP_S = 20 * 3600
OPTIONAL_COLUMNS = ("vwap", "trade_count", "interval_s")
PRICE_COLUMNS = ("open", "high", "low", "close", "vwap")


def normalize_columns(names: list[str]) -> list[str]:
    """Header names as the readers match them: lower case, spaces as underscores, aliases
    resolved (a name we already have is never replaced by an alias)."""
    out = [n.strip().lower().replace(" ", "_") for n in names]
    present = set(out)
    return [COLUMN_ALIASES[n] if n in COLUMN_ALIASES and COLUMN_ALIASES[n] not in present
            else n for n in out]


def symbol_from_filename(path: Any) -> str:
    """`aapl.us.txt` -> `AAPL`, `SPY_daily.csv` -> `SPY`: a single-symbol file's symbol."""
    from pathlib import Path

    name = Path(path).name
    return re.split(r"[._\- ]", name, maxsplit=1)[0].upper()


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


def session_bar_time(d: date) -> tuple[datetime, int]:
    """(start in UTC, length in seconds) of business day `d`'s regular session."""
    if not is_business_day(d):
        why = "a weekend" if d.weekday() >= 5 else "an NYSE holiday"
        raise InputError("NOT_A_TRADING_DAY",
                         f"date {d.isoformat()} is {why}: a daily bar must be a trading day "
                         "(remove the row)")
    opens, closes = session_open(d), session_close(d)
    return opens.astimezone(UTC), int((closes - opens).total_seconds())


def _session_date(value: Any, tz: tzinfo | None, epoch_unit: str) -> date:
    """The trading day a daily bar's timestamp names: its date as written when it is a date
    or a midnight (exports stamp daily bars 00:00), else the New York date of the instant."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE_RE.match(value.strip()):
        return date.fromisoformat(value.strip())
    if isinstance(value, str):
        try:
            naive = datetime.fromisoformat(value.strip())
        except ValueError:
            naive = None
        if naive is not None and naive.time() == datetime.min.time():
            return naive.date()
    if isinstance(value, datetime) and value.time() == datetime.min.time():
        return value.date()
    return parse_timestamp(value, tz or UTC, epoch_unit).astimezone(NEW_YORK).date()


class RowParser:
    """Parses rows of one source. Keeps a small cache of timestamp texts because every
    symbol of a multi-symbol file repeats the same timestamps.

    `sessions=True` reads every timestamp as the trading day of a daily bar (see the module
    docstring); a date-only timestamp is always read that way."""

    def __init__(self, *, provider: str, tz: tzinfo | None = None, interval_s: int = 60,
                 epoch_unit: str = "s", sessions: bool = False,
                 convert: Callable[[Any, str], Decimal] = to_decimal) -> None:
        check_epoch_unit(epoch_unit)
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.provider = provider
        self.tz = tz
        self.interval_s = interval_s
        self.epoch_unit = epoch_unit
        self.sessions = sessions
        self._dec = convert
        self._ts_cache: dict[Any, tuple[datetime, int | None]] = {}

    def timestamp(self, value: Any) -> datetime:
        """Parse a timestamp cell (cached); raises `InputError`."""
        return self.when(value)[0]

    def when(self, value: Any) -> tuple[datetime, int | None]:
        """(start, length when the timestamp itself decides it: a session) of a timestamp
        cell, cached; raises `InputError`."""
        if not isinstance(value, str):
            return self._when(value)
        cache = self._ts_cache
        hit = cache.get(value)
        if hit is None:
            hit = self._when(value)
            if len(cache) >= 4096:
                cache.clear()
            cache[value] = hit
        return hit

    def _when(self, value: Any) -> tuple[datetime, int | None]:
        if self.sessions or (isinstance(value, str) and _DATE_RE.match(value.strip())) or (
                isinstance(value, date) and not isinstance(value, datetime)):
            return session_bar_time(_session_date(value, self.tz, self.epoch_unit))
        return parse_timestamp(value, self.tz, self.epoch_unit), None

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
            start, session_s = self.when(row["timestamp"])
            return Bar(
                symbol=sym or "",
                start=start,
                interval_s=(session_s if session_s is not None else
                            to_int(interval, "interval_s")
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


def infer_interval(keys: list[tuple[str, datetime]]) -> int | None:
    """The bar interval (seconds) of a sample of (symbol, start): the commonest positive gap
    between a symbol's consecutive starts (the smaller on a tie), or None if the sample has
    no two bars of one symbol. Rows may be in any order."""
    by_symbol: dict[str, list[datetime]] = {}
    for sym, start in keys:
        by_symbol.setdefault(sym, []).append(start)
    gaps: Counter[int] = Counter()
    for starts in by_symbol.values():
        starts.sort()
        for a, b in itertools.pairwise(starts):
            gap = int((b - a).total_seconds())
            if gap > 0:
                gaps[gap] += 1
    if not gaps:
        return None
    return min(gaps, key=lambda g: (-gaps[g], g))


TIMEFRAMES = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "1d": None}


def parse_timeframe(value: str) -> tuple[int | None, bool]:
    """`--timeframe` -> (interval seconds, daily sessions): "5m" -> (300, False), "1d" ->
    (None, True)."""
    v = value.strip().lower()
    if v not in TIMEFRAMES:
        raise ValueError(f"timeframe {value!r}: use one of {', '.join(TIMEFRAMES)}")
    seconds = TIMEFRAMES[v]
    return seconds, seconds is None
