"""Exchange calendar arithmetic: trading days and ISO weeks in America/New_York.

Loss limits reset on the exchange's day, not UTC's: a loss at 23:30 UTC in winter is still
that New York afternoon's loss. Business days skip weekends and the NYSE full-day holidays
(computed from their rules, so no table goes stale). Sessions: regular hours, with the
early closes (13:00) the rules give; loss-limit days and day trades count these days.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")


def trading_day(ts: datetime) -> date:
    """The New York calendar date of an aware timestamp.

    The engine asks this of UTC times close together (each decision, each fill, each bar a
    resting order sees), so the last New York day met is remembered with its UTC bounds and
    a UTC time inside them is answered by two comparisons, not a time-zone conversion. The
    bounds are exact (midnight always exists in New York: its clock changes at 02:00), so
    the answer is the conversion's; the entry is one tuple, swapped whole."""
    lo, hi, day = _last_day[0]
    utc = ts.tzinfo is UTC
    if utc and lo <= ts < hi:
        return day
    day = ts.astimezone(NEW_YORK).date()
    span = day_span(day) if utc else None
    if span is not None:
        _last_day[0] = (*span, day)
    return day


def day_span(day: date) -> tuple[datetime, datetime] | None:
    """New York day `day` as UTC instants [its first, the next day's first); None on the
    calendar's last days, which have no next midnight. Exact: midnight always exists in New
    York (its clock changes at 02:00)."""
    if day >= _LAST_SPANNED_DAY:
        return None
    return (datetime.combine(day, time(0), NEW_YORK).astimezone(UTC),
            datetime.combine(day + timedelta(days=1), time(0), NEW_YORK).astimezone(UTC))


_NEVER = datetime.min.replace(tzinfo=UTC)
_LAST_SPANNED_DAY = date.max - timedelta(days=1)
_last_day: list[tuple[datetime, datetime, date]] = [(_NEVER, _NEVER, date.min)]


def iso_week(d: date) -> str:
    y, w, _ = d.isocalendar()
    return f"{y}-W{w:02d}"


@functools.lru_cache(maxsize=1024)
def day_keys(d: date) -> tuple[str, str]:
    """`(d.isoformat(), iso_week(d))`, the risk projection's keys for New York day `d`,
    worked out once per day: every fill and every decision reads both."""
    return d.isoformat(), iso_week(d)


def _easter(year: int) -> date:
    # Anonymous Gregorian algorithm (Meeus/Jones/Butcher).
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    d = date(year, month, 1)
    d += timedelta(days=(weekday - d.weekday()) % 7)
    return d + timedelta(weeks=n - 1)


def _last_weekday(year: int, month: int, weekday: int) -> date:
    d = date(year, month + 1, 1) - timedelta(days=1) if month < 12 else date(year, 12, 31)
    return d - timedelta(days=(d.weekday() - weekday) % 7)


def _observed(d: date) -> date:
    if d.weekday() == 5:
        return d - timedelta(days=1)
    if d.weekday() == 6:
        return d + timedelta(days=1)
    return d


@functools.cache
def nyse_holidays(year: int) -> frozenset[date]:
    days = {
        _nth_weekday(year, 1, 0, 3),  # Martin Luther King Jr. Day
        _nth_weekday(year, 2, 0, 3),  # Washington's Birthday
        _easter(year) - timedelta(days=2),  # Good Friday
        _last_weekday(year, 5, 0),  # Memorial Day
        _nth_weekday(year, 9, 0, 1),  # Labor Day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving
        _observed(date(year, 7, 4)),
        _observed(date(year, 12, 25)),
    }
    if year >= 2022:
        days.add(_observed(date(year, 6, 19)))  # Juneteenth
    ny = date(year, 1, 1)
    if ny.weekday() != 5:  # NYSE does not observe New Year's on the prior Friday
        days.add(_observed(ny))
    return frozenset(days)


def is_business_day(d: date) -> bool:
    return d.weekday() < 5 and d not in nyse_holidays(d.year)


def business_days_back(end: date, n: int) -> list[date]:
    """The last `n` business days ending at `end` (inclusive if `end` is one), newest first."""
    out: list[date] = []
    d = end
    while len(out) < n:
        if is_business_day(d):
            out.append(d)
        d -= timedelta(days=1)
    return out


def business_days_from(first: date, n: int) -> list[date]:
    """The first `n` business days from `first` (inclusive if `first` is one), oldest first."""
    out: list[date] = []
    d = first
    while len(out) < n:
        if is_business_day(d):
            out.append(d)
        d += timedelta(days=1)
    return out


# --- sessions ------------------------------------------------------------------------------
# Regular hours 09:30-16:00 New York; 13:00 on the NYSE's early-close days (computed from
# their rules like the holidays). A daily bar is one session: it opens at the session's open
# and is known at its close.

SESSION_OPEN = time(9, 30)
SESSION_CLOSE = time(16, 0)
EARLY_CLOSE = time(13, 0)


@functools.cache
def early_closes(year: int) -> frozenset[date]:
    """Days the NYSE closes at 13:00: July 3 (when a Monday-Thursday), the day after
    Thanksgiving, and Christmas Eve (when a weekday that is not itself a holiday)."""
    days = {_nth_weekday(year, 11, 3, 4) + timedelta(days=1)}
    july3 = date(year, 7, 3)
    if july3.weekday() < 4:
        days.add(july3)
    eve = date(year, 12, 24)
    if eve.weekday() < 5 and eve not in nyse_holidays(year):
        days.add(eve)
    return frozenset(d for d in days if is_business_day(d))


def session_open(d: date) -> datetime:
    """When the regular session of business day `d` opens (aware, New York)."""
    return datetime.combine(d, SESSION_OPEN, NEW_YORK)


def session_close(d: date) -> datetime:
    """When the regular session of business day `d` closes (13:00 on early-close days)."""
    return datetime.combine(d, EARLY_CLOSE if d in early_closes(d.year) else SESSION_CLOSE,
                            NEW_YORK)


def next_business_day(d: date) -> date:
    d += timedelta(days=1)
    while not is_business_day(d):
        d += timedelta(days=1)
    return d


@functools.lru_cache(maxsize=4096)
def order_session(ts: datetime) -> date:
    """The session a day order submitted at `ts` belongs to: the same day's if submitted
    before that session's close, otherwise the next one (Alpaca queues a day order sent after
    the close for the next session; a daily bar's signal arrives exactly at the close)."""
    d = trading_day(ts)
    close = _close_in_utc(d)
    if close is not None and ts < close:
        return d
    return _next_business_day(d)


@functools.lru_cache(maxsize=1024)
def _close_in_utc(d: date) -> datetime | None:
    """Business day `d`'s session close in UTC (None on other days), worked out once per
    day for `order_session`: every order is submitted at an instant of its own, so its own
    cache rarely hits."""
    return session_close(d).astimezone(UTC) if is_business_day(d) else None


# The next session after a day, once per day (a daily bar's orders, sent at the close, all
# belong to the next session).
_next_business_day = functools.lru_cache(maxsize=1024)(next_business_day)


def sessions_after_close(d: date, n: int) -> datetime:
    """When the `n`-th session after business day `d` closes (`d`'s own close for n=0)."""
    for _ in range(n):
        d = next_business_day(d)
    return session_close(d)
