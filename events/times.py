"""Times typed by people (CLI flags, snapshot files): ISO 8601 in, timezone-aware UTC out.

One parser for every entry point, so `--from` in a backtest and `--since` in forensics read a
time the same way; where they differ is only whether a time without a zone is allowed, and
that is the caller's explicit choice."""

from __future__ import annotations

from datetime import UTC, datetime


class TimeFormatError(ValueError):
    """A time that is not ISO 8601, or has no zone where one is required."""


def parse_utc(text: str, *, what: str = "time", naive_as_utc: bool) -> datetime:
    """`text` as an aware UTC datetime. A time without a zone is UTC when `naive_as_utc`
    (a backtest's date bounds, "2024-03-01"), and refused otherwise (forensics: a naive
    instant typed at an incident is too easily local time)."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TimeFormatError(f"{what}: {text!r} is not an ISO 8601 time "
                              "(e.g. 2026-11-23T15:00:00Z)") from None
    if t.tzinfo is None or t.tzinfo.utcoffset(t) is None:
        if not naive_as_utc:
            raise TimeFormatError(f"{what}: {text!r} has no time zone; add Z for UTC "
                                  "(e.g. 2026-11-23T15:00:00Z)")
        return t.replace(tzinfo=UTC)
    return t.astimezone(UTC)
