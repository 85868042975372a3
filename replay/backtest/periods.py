"""Daily and monthly returns of an equity curve, for the report's tables.

A day is a New York trading day: the equity at its last sample (bar close) against the last
sample of the day before (the first day against the starting equity). A month chains its
days: its last day's closing equity against the previous month's. Equity figures are the
curve's exact Decimals; returns are floats (ratios, as everywhere in the report).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

import msgspec

from projections.calendar import trading_day

_JUST_BEFORE = timedelta(microseconds=1)


class Point(Protocol):
    @property
    def ts(self) -> datetime: ...

    @property
    def equity(self) -> Decimal: ...


class PeriodReturn(msgspec.Struct, kw_only=True, frozen=True):
    period: str  # "2026-11-23" (a day) or "2026-11" (a month)
    start_equity: Decimal
    end_equity: Decimal
    ret: float | None  # None when the period starts at zero equity or below
    benchmark: float | None = None  # the buy-and-hold benchmark's return over the period


def session_of(ts: datetime) -> str:
    """The trading day a sample belongs to. A sample is a bar's end, and 16:00 closes the
    day it ends, so look just before it."""
    return trading_day(ts - _JUST_BEFORE).isoformat()


def day_ends(curve: Sequence[Point]) -> list[tuple[str, int]]:
    """(day, index of its last point) for each day of the curve after its first point."""
    ends: list[tuple[str, int]] = []
    for i in range(1, len(curve)):
        day = session_of(curve[i].ts)
        if ends and ends[-1][0] == day:
            ends[-1] = (day, i)
        else:
            ends.append((day, i))
    return ends


def daily_returns(curve: Sequence[Point], benchmark: Sequence[float] | None = None
                  ) -> list[PeriodReturn]:
    """`curve`'s first point is the starting equity; `benchmark`, if given, is sampled at the
    same points."""
    return _chain(curve, benchmark, day_ends(curve))


def monthly_returns(curve: Sequence[Point], benchmark: Sequence[float] | None = None
                    ) -> list[PeriodReturn]:
    ends: list[tuple[str, int]] = []
    for day, i in day_ends(curve):
        month = day[:7]
        if ends and ends[-1][0] == month:
            ends[-1] = (month, i)
        else:
            ends.append((month, i))
    return _chain(curve, benchmark, ends)


def _chain(curve: Sequence[Point], benchmark: Sequence[float] | None,
           ends: list[tuple[str, int]]) -> list[PeriodReturn]:
    out: list[PeriodReturn] = []
    prev = 0
    for period, i in ends:
        a, b = curve[prev].equity, curve[i].equity
        bench = None
        if benchmark is not None and benchmark[prev] > 0:
            bench = benchmark[i] / benchmark[prev] - 1.0
        out.append(PeriodReturn(period=period, start_equity=a, end_equity=b,
                                ret=float(b / a - 1) if a > 0 else None, benchmark=bench))
        prev = i
    return out
