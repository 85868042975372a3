"""The calendar's per-day caches (`trading_day`'s last day, `day_keys`, `order_session`'s
session edges) give what the plain formulas give, for any instant in any year the calendar
computes: across DST changes, weekends, holidays, early closes and the exact close itself."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.calendar import (
    NEW_YORK,
    day_keys,
    is_business_day,
    iso_week,
    next_business_day,
    order_session,
    session_close,
    trading_day,
)


def plain_order_session(ts: datetime) -> date:
    d = ts.astimezone(NEW_YORK).date()  # not the cached `trading_day`: this is the reference
    if is_business_day(d) and ts < session_close(d):
        return d
    return next_business_day(d)


instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31),
                        timezones=st.just(UTC))


@settings(max_examples=2000, deadline=None)
@given(instants)
def test_order_session_is_the_plain_rule(ts: datetime) -> None:
    assert order_session(ts) == plain_order_session(ts)


@settings(max_examples=300, deadline=None)
@given(st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31)),
       st.sampled_from([timedelta(0), -timedelta(microseconds=1), timedelta(microseconds=1)]))
def test_order_session_at_the_close(d: date, nudge: timedelta) -> None:
    """Right at, just before and just after each day's close (13:00 on early closes)."""
    ts = session_close(d).astimezone(UTC) + nudge
    assert order_session(ts) == plain_order_session(ts)


@settings(max_examples=500, deadline=None)
@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31)))
def test_day_keys_are_the_iso_words(d: date) -> None:
    assert day_keys(d) == (d.isoformat(), iso_week(d))


@settings(max_examples=500, deadline=None)
@given(st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31)),
       st.lists(st.integers(min_value=-36 * 60, max_value=36 * 60), min_size=1, max_size=40),
       st.lists(st.booleans(), min_size=40, max_size=40))
def test_trading_day_is_the_conversion_in_any_order(day: date, minutes: list[int],
                                                     elsewhere: list[bool]) -> None:
    """Asked in any order around a New York midnight (forwards, backwards, across the
    day's edges and DST changes, times in other zones between), the remembered day never
    answers for a time outside it."""
    midnight = datetime.combine(day, datetime.min.time(), NEW_YORK).astimezone(UTC)
    for m, other in zip(minutes, elsewhere, strict=False):
        ts = midnight + timedelta(minutes=m)
        if other:
            ts = ts.astimezone(timezone(timedelta(hours=-5)))
        assert trading_day(ts) == ts.astimezone(NEW_YORK).date()


def test_trading_day_at_the_ends_of_time() -> None:
    """The remembered day needs the next midnight; at the calendar's last instants there is
    none, and the answer is the conversion's all the same."""
    for ts in (datetime.max.replace(tzinfo=UTC), datetime(9999, 12, 31, 4, 59, tzinfo=UTC),
               datetime(9999, 12, 30, 12, tzinfo=UTC), datetime(1, 1, 2, tzinfo=UTC)):
        assert trading_day(ts) == ts.astimezone(NEW_YORK).date()


def test_order_session_on_the_calendars_last_day() -> None:
    """Before the last day's close the order is that day's; the next session is only
    looked for when needed (there is none after the calendar's end)."""
    last = date(9999, 12, 31)  # a Friday
    ts = session_close(last).astimezone(UTC) - timedelta(hours=1)
    assert order_session(ts) == plain_order_session(ts) == last
