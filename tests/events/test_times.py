"""The one parser for times people type: the same reading everywhere, and the zone rule each
caller chose."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from events.times import TimeFormatError, parse_utc


def test_an_offset_becomes_the_same_instant_in_utc() -> None:
    t = parse_utc("2026-11-23T10:00:00-05:00", naive_as_utc=False)
    assert t == datetime(2026, 11, 23, 15, tzinfo=UTC) and t.utcoffset() == timedelta(0)
    assert parse_utc(" 2026-11-23T15:00:00Z ", naive_as_utc=False).tzinfo is UTC


def test_a_naive_time_is_utc_only_when_the_caller_says_so() -> None:
    assert parse_utc("2024-03-01", what="--from", naive_as_utc=True) == datetime(
        2024, 3, 1, tzinfo=UTC)
    with pytest.raises(TimeFormatError, match=r"--since: '2026-11-23T15:00:00' has no time zone"):
        parse_utc("2026-11-23T15:00:00", what="--since", naive_as_utc=False)


def test_not_a_time_names_the_flag() -> None:
    for naive_as_utc in (True, False):
        with pytest.raises(TimeFormatError, match=r"--at: 'yesterday' is not an ISO 8601 time"):
            parse_utc("yesterday", what="--at", naive_as_utc=naive_as_utc)


def test_aware_inputs_keep_their_instant() -> None:
    tz = timezone(timedelta(hours=5, minutes=30))
    local = datetime(2026, 1, 2, 3, 4, 5, tzinfo=tz)
    assert parse_utc(local.isoformat(), naive_as_utc=True) == local
