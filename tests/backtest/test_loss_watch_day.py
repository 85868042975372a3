"""The loss watch's O(1) day key must name the same New York trading day as the projection
(`trading_day(ts).isoformat()`) for any sequence of clock readings: forwards bar by bar,
across midnights and both DST changes, and jumping backwards or far ahead."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.recovery.loss_watch import TradingDayKey
from events.base import UTC
from projections.calendar import trading_day

_instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1),
                         timezones=st.just(UTC))


@settings(max_examples=300)
@given(st.lists(_instants, min_size=1, max_size=40))
def test_the_cached_key_is_the_trading_day_for_any_clock_readings(readings: list[datetime]) -> None:
    key = TradingDayKey()
    for ts in readings:
        assert key(ts) == trading_day(ts).isoformat()


@settings(max_examples=100)
@given(_instants, st.integers(min_value=1, max_value=3 * 24 * 60))
def test_minute_steps_across_midnight_and_dst(start: datetime, minutes: int) -> None:
    key = TradingDayKey()
    for m in range(0, minutes, 7):
        ts = start + timedelta(minutes=m)
        assert key(ts) == trading_day(ts).isoformat()


def test_the_instants_around_a_new_york_midnight_and_the_dst_changes() -> None:
    key = TradingDayKey()
    # 2026-03-08 (clocks forward) and 2026-11-01 (clocks back) in New York.
    for day, offset_h in (("2026-03-07", 5), ("2026-03-08", 5), ("2026-03-09", 4),
                          ("2026-10-31", 4), ("2026-11-01", 4), ("2026-11-02", 5)):
        y, mo, d = map(int, day.split("-"))
        midnight = datetime(y, mo, d, offset_h, tzinfo=UTC)  # 00:00 in New York
        before = midnight - timedelta(microseconds=1)
        assert key(before) == trading_day(before).isoformat()
        assert key(midnight) == day
        assert key(before) != day


def test_the_calendars_last_days_have_their_key_without_bounds() -> None:
    # The day after 9999-12-31 does not exist: the key is still the day's, uncached.
    key = TradingDayKey()
    for ts in (datetime.max.replace(tzinfo=UTC), datetime(9999, 12, 30, 12, tzinfo=UTC)):
        assert key(ts) == trading_day(ts).isoformat()
