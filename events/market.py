"""The bar contract: the one shape every market-data provider yields.

A `Bar` can only exist if it is sane: construction (and decoding) refuses non-finite or
non-positive prices, an inconsistent OHLC range, negative volume and naive timestamps, each
with a stable reason code so the validator can record *why* a bar was dropped.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

import msgspec

from events.base import UTC, check_datetimes

_ZERO = Decimal(0)


class BarError(ValueError):
    """A bar that violates the contract; `code` is one of `BAR_REJECT_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


BAR_REJECT_CODES = (
    "EMPTY_SYMBOL",
    "NAIVE_TIMESTAMP",
    "BAD_INTERVAL",
    "NON_FINITE_PRICE",
    "NON_POSITIVE_PRICE",
    "HIGH_BELOW_OPEN_CLOSE",
    "LOW_ABOVE_OPEN_CLOSE",
    "HIGH_BELOW_LOW",
    "BAD_VOLUME",
    "NEGATIVE_VOLUME",
    "BAD_VWAP",
    "NEGATIVE_TRADE_COUNT",
)


class Bar(msgspec.Struct, frozen=True, kw_only=True):
    """One OHLCV bar. `start` is the bar's opening time (UTC); it covers `interval_s` seconds."""

    symbol: str
    start: datetime
    interval_s: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    vwap: Decimal | None = None
    trade_count: int | None = None
    provider: str = ""

    def __post_init__(self) -> None:
        # Nearly every bar is sane: one pass of plain comparisons says so. Anything else
        # (or a comparison a NaN refuses) goes through the checks below, which name the fault.
        # Zero as a Decimal: comparing two Decimals skips converting the int each time (the
        # same answers; every bar read passes here).
        o, h, lo, c, vol = self.open, self.high, self.low, self.close, self.volume
        try:
            if (self.symbol and self.start.tzinfo is UTC and self.interval_s > 0
                    and h.is_finite() and _ZERO < lo <= o <= h and lo <= c <= h
                    and vol.is_finite() and vol >= _ZERO
                    and (self.vwap is None or (self.vwap.is_finite() and self.vwap > _ZERO))
                    and (self.trade_count is None or self.trade_count >= 0)):
                return  # h finite and lo > 0 bound o, lo and c: all finite and positive
        except InvalidOperation:
            pass
        self._check()

    def _check(self) -> None:
        if not self.symbol:
            raise BarError("EMPTY_SYMBOL", "bar has no symbol")
        try:
            check_datetimes(self)
        except ValueError as e:
            raise BarError("NAIVE_TIMESTAMP", str(e)) from None
        if self.interval_s <= 0:
            raise BarError("BAD_INTERVAL", f"{self.symbol}: interval_s={self.interval_s} must be > 0")
        for name in ("open", "high", "low", "close"):
            v = getattr(self, name)
            if not v.is_finite():
                raise BarError("NON_FINITE_PRICE", f"{self.symbol} {name}={v}")
            if v <= 0:
                raise BarError("NON_POSITIVE_PRICE", f"{self.symbol} {name}={v} must be > 0")
        o, h, lo, c = self.open, self.high, self.low, self.close
        if h < lo:
            raise BarError("HIGH_BELOW_LOW", f"{self.symbol} high={h} < low={lo}")
        if h < o or h < c:
            raise BarError("HIGH_BELOW_OPEN_CLOSE", f"{self.symbol} high={h} < max(open={o}, close={c})")
        if lo > o or lo > c:
            raise BarError("LOW_ABOVE_OPEN_CLOSE", f"{self.symbol} low={lo} > min(open={o}, close={c})")
        if not self.volume.is_finite():
            raise BarError("BAD_VOLUME", f"{self.symbol} volume={self.volume}")
        if self.volume < 0:
            raise BarError("NEGATIVE_VOLUME", f"{self.symbol} volume={self.volume} must be >= 0")
        if self.vwap is not None and (not self.vwap.is_finite() or self.vwap <= 0):
            raise BarError("BAD_VWAP", f"{self.symbol} vwap={self.vwap}")
        if self.trade_count is not None and self.trade_count < 0:
            raise BarError("NEGATIVE_TRADE_COUNT", f"{self.symbol} trade_count={self.trade_count}")

    @property
    def end(self) -> datetime:
        """When the bar closed, i.e. the earliest moment its close is known."""
        return self.start + bar_length(self.interval_s)


@functools.lru_cache(maxsize=1024)
def bar_length(interval_s: int) -> timedelta:
    """A bar's length, made once per interval: the per-bar paths (the step driver's clock,
    the runner's look-ahead test) and every decision's data check read one, and a
    `timedelta` per read was a measurable part of them; a run has a handful of intervals."""
    return timedelta(seconds=interval_s)
