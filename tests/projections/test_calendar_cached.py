"""The calendar's per-day caches (`day_keys`, `order_session`'s session edges) give what
the plain formulas give, for any instant in any year the calendar computes: across DST
changes, weekends, holidays, early closes and the exact close itself."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.calendar import (
    day_keys,
    is_business_day,
    iso_week,
    next_business_day,
    order_session,
    session_close,
    trading_day,
)


def plain_order_session(ts: datetime) -> date:
    d = trading_day(ts)
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
