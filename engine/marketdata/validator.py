"""The gate every bar passes before strategies or the risk gate may see it.

`BarValidator.validate(item)` turns one provider item into the events to record:

- a good bar: `[BarReceived]`, or `[DataGap, BarReceived]` when bars are missing before it
  (the gap is flagged, the bar still accepted);
- anything else: `[DataRejected]` with a stable reason code and the raw input.

Rules beyond the `Bar` contract (which providers already applied, see `BadInput`):

- per symbol, a bar must start after the last good bar: the same start is
  `DUPLICATE_TIMESTAMP`, an earlier one `OUT_OF_ORDER`;
- a bar is usable only once it has closed: `bar.end > clock.now()` is `FUTURE_BAR`. Live,
  the exchange's clock and ours differ a little, and a bar pushed the instant it closed can
  look a few hundred milliseconds early; `max_clock_skew` (default zero, right for
  backtests; give the runner the same value) accepts bars that close at most that much
  after our clock;
- a gap is flagged only within one New York calendar day (nights, weekends and holidays are
  not gaps). Sparse feeds (IEX has no bar for a minute without trades) flag gaps too: that is
  information, not an error.

A rejected bar never moves the per-symbol state, so the good bars around it are unaffected.
`last_good(symbol)` is the freshness input for the risk gate's staleness check (F8).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

import msgspec

from engine.clock import Clock
from events.base import Event
from events.catalogue import BarReceived, DataGap, DataRejected
from events.market import Bar, bar_length
from projections.calendar import NEW_YORK

from .types import BadInput, MarketItem

VALIDATOR_REJECT_CODES = ("DUPLICATE_TIMESTAMP", "OUT_OF_ORDER", "FUTURE_BAR")

_json = msgspec.json.Encoder()


def bar_raw(bar: Bar) -> str:
    """A bar rendered for `DataRejected.raw` (JSON; Decimals as strings)."""
    return _json.encode(bar).decode()


class BarValidator:
    """Stateful per symbol; one instance per stream of bars (not shared between runs)."""

    __slots__ = (
        "_clock",
        "_day_cache",
        "_ends",
        "_flag_gaps",
        "_floor",
        "_last",
        "_skew",
        "accepted",
        "gaps",
        "rejected",
    )

    def __init__(self, clock: Clock, *, flag_gaps: bool = True,
                 max_clock_skew: timedelta = timedelta(0)) -> None:
        if max_clock_skew < timedelta(0):
            raise ValueError("max_clock_skew must not be negative")
        self._clock = clock
        self._skew = max_clock_skew if max_clock_skew else None  # None: skip the add
        self._flag_gaps = flag_gaps
        self._last: dict[str, Bar] = {}
        # When each symbol's last good bar closed (its start + interval): the gap check's
        # "expected next start", computed once per bar by the FUTURE_BAR check.
        self._ends: dict[str, datetime] = {}
        # Ordering floors restored from a log (see `prime`): no Bar object, only its start.
        self._floor: dict[str, datetime] = {}
        # start -> New York date; bars of every symbol share starts, so this hits often.
        self._day_cache: dict[datetime, date] = {}
        self.accepted = 0
        self.rejected = 0
        self.gaps = 0

    # --- state ---------------------------------------------------------------------------

    def last_good(self, symbol: str) -> Bar | None:
        """The newest accepted bar of `symbol` (None before the first, or after `prime`)."""
        return self._last.get(symbol)

    def last_good_end(self, symbol: str) -> datetime | None:
        """When the newest accepted bar of `symbol` closed (None if there is none)."""
        return self._ends.get(symbol)

    def symbols(self) -> list[str]:
        return sorted(self._last)

    def prime(self, symbol: str, last_start: datetime) -> None:
        """Restore ordering after a restart (e.g. from `projections.market.last_bar`): bars
        starting at or before `last_start` are refused as duplicates/out of order."""
        if last_start.tzinfo is None:
            raise ValueError("prime() needs an aware datetime")
        self._floor[symbol] = last_start

    def prime_many(self, last_starts: Iterable[tuple[str, datetime]]) -> None:
        for symbol, start in last_starts:
            self.prime(symbol, start)

    # --- validation ----------------------------------------------------------------------

    def validate(self, item: MarketItem) -> list[Event]:
        now = self._clock.now()
        if type(item) is not Bar:
            return [self._reject_input(item, now)]
        bar: Bar = item
        sym = bar.symbol
        start = bar.start
        step = bar_length(bar.interval_s)
        end = start + step
        if end > (now if self._skew is None else now + self._skew):
            return [self._reject(bar, now, "FUTURE_BAR",
                                 f"{sym} bar {start.isoformat()} closes at "
                                 f"{end.isoformat()}, after now {now.isoformat()}")]
        last = self._last.get(sym)
        prev_start = last.start if last is not None else self._floor.get(sym)
        if prev_start is not None and start <= prev_start:
            if start == prev_start:
                return [self._reject(bar, now, "DUPLICATE_TIMESTAMP",
                                     f"{sym} already has a bar starting {start.isoformat()}")]
            return [self._reject(bar, now, "OUT_OF_ORDER",
                                 f"{sym} bar {start.isoformat()} is older than the last good "
                                 f"bar {prev_start.isoformat()}")]
        self._last[sym] = bar
        last_end = self._ends.get(sym)
        self._ends[sym] = end
        self.accepted += 1
        received = BarReceived(ts=now, bar=bar)
        if (last is not None and self._flag_gaps and start != last_end
                and last.interval_s == bar.interval_s):
            missing = (start - last.start) // step - 1
            if missing > 0 and self._ny_day(start) == self._ny_day(last.start):
                self.gaps += 1
                return [DataGap(ts=now, symbol=sym, previous_start=last.start, start=start,
                                missing_bars=missing), received]
        return [received]

    # --- helpers -------------------------------------------------------------------------

    def _ny_day(self, start: datetime) -> date:
        d = self._day_cache.get(start)
        if d is None:
            if len(self._day_cache) >= 8192:
                self._day_cache.clear()
            d = self._day_cache[start] = start.astimezone(NEW_YORK).date()
        return d

    def _reject(self, bar: Bar, now: datetime, reason: str, detail: str) -> DataRejected:
        self.rejected += 1
        return DataRejected(ts=now, reason=reason, detail=detail, symbol=bar.symbol,
                            provider=bar.provider, raw=bar_raw(bar))

    def _reject_input(self, item: Any, now: datetime) -> DataRejected:
        self.rejected += 1
        if not isinstance(item, BadInput):
            return DataRejected(ts=now, reason="UNSUPPORTED_MESSAGE",
                                detail=f"provider yielded {type(item).__name__}, not a Bar",
                                raw=repr(item)[:2000])
        return DataRejected(ts=now, reason=item.reason, detail=item.detail, symbol=item.symbol,
                            provider=item.provider, raw=item.raw)
