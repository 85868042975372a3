"""New York session boundaries in UTC, computed once per day instead of once per bar.

Converting every bar's time to New York costs about a microsecond; comparing it with the
day's precomputed UTC instants costs a few tens of nanoseconds. DST is handled by computing
each day's instants from its own wall-clock times.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from projections.calendar import NEW_YORK


class SessionDay:
    """One New York calendar day: its UTC span and the UTC instants of the given times."""

    __slots__ = ("close", "day", "flat", "hi", "last_entry", "lo", "open")

    def __init__(self, day: date, open_: time, close: time, last_entry: time,
                 flat: time) -> None:
        def at(t: time, d: date = day) -> datetime:
            return datetime.combine(d, t, tzinfo=NEW_YORK).astimezone(UTC)

        self.day = day
        self.lo = at(time(0))
        self.hi = at(time(0), day + timedelta(days=1))
        self.open = at(open_)
        self.close = at(close)
        self.last_entry = at(last_entry)
        self.flat = at(flat)


class SessionClock:
    """`day_of(ts)` -> the `SessionDay` containing `ts`, cached for consecutive calls."""

    __slots__ = ("_close", "_current", "_flat", "_last_entry", "_open")

    def __init__(self, *, open_: time = time(9, 30), close: time = time(16, 0),
                 last_entry: time | None = None, flat: time | None = None) -> None:
        if not open_ < close:
            raise ValueError(f"session open {open_} must be before close {close}")
        self._open = open_
        self._close = close
        self._flat = flat if flat is not None else close
        self._last_entry = last_entry if last_entry is not None else self._flat
        self._current: SessionDay | None = None

    def day_of(self, ts: datetime) -> SessionDay:
        cur = self._current
        if cur is not None and cur.lo <= ts < cur.hi:
            return cur
        cur = self._current = SessionDay(ts.astimezone(NEW_YORK).date(), self._open,
                                         self._close, self._last_entry, self._flat)
        return cur
