"""The loss-limit kill switch: one code path for backtests and live.

It looks again whenever the log books something that can move the day's loss or its limit —
a fill (realized P&L) or a bar or account snapshot (the marks and equity a percentage limit
is taken of) — never on a timer. Live, a task waits for such an event; in step mode
(backtests, the demo) the engine calls `check()` inline after each bar's fills are booked,
before any strategy sees that bar. Either way the trip engages the ordinary kill switch, so a
backtest that hits its daily loss limit stays halted on the following days exactly as the
live service does, until a person releases it.

The measure is the projection's realized P&L for the current New York trading day (the same
figure `status` and the gate show); the limit is `risk.daily_limit(marked equity)`.

A step driver looks on every bar, so the look is O(1) and synchronous (`look()`): the day's
key is cached with the UTC bounds of that New York day (no time-zone conversion until the
clock leaves it), and a day not in loss is settled by one dictionary read. On a day in loss
a verdict short of the limit is remembered with the loss it was reached for and the equity
it was reached at. It holds while that loss stands and nothing but marks moved equity: the
bars of a flat account on such a day are settled without marking equity, and a held
symbol's bar by marking it alone, without the limit — the limit never shrinks as equity
grows (a share of equity, a dollar amount, or the smaller of the two), so a loss short of
the limit at some equity is short of it at any higher equity. A fill, an account snapshot or
a position adjustment forgets the verdict. Only a look that finds work starts the coroutine
(`act()`); `check()` is both.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import anyio

from engine.clock import Clock
from engine.recovery.killswitch import KillSwitch
from engine.risk.limits import RiskLimits
from events.catalogue import AccountSnapshot, BarReceived, FillReceived, PositionAdjusted
from events.vocabulary import ZERO
from projections.calendar import day_span, trading_day
from projections.state import Projections

log = logging.getLogger(__name__)


class TradingDayKey:
    """`trading_day(ts).isoformat()` (the risk projection's day key), remembered with the
    UTC bounds of that New York day, so a clock that stays within one day costs two
    comparisons instead of a time-zone conversion."""

    __slots__ = ("_from", "_key", "_until")

    def __init__(self) -> None:
        # An empty span until the first call (no instant is in it).
        self._from = self._until = datetime.min.replace(tzinfo=UTC)
        self._key = ""

    def __call__(self, ts: datetime) -> str:
        if self._from <= ts < self._until:
            return self._key
        day = trading_day(ts)
        span = day_span(day)
        if span is None:
            return day.isoformat()  # the calendar's last days: no bounds to keep
        self._from, self._until = span
        self._key = day.isoformat()
        return self._key


class LossLimitWatch:
    # What can move the day's loss or its limit (see the module docstring).
    TRIGGERS: ClassVar[tuple[type, ...]] = (FillReceived, BarReceived, AccountSnapshot,
                                            PositionAdjusted)

    def __init__(self, projections: Projections, kill: KillSwitch, clock: Clock,
                 limits: RiskLimits, *, enabled: bool, flatten: bool) -> None:
        self._proj = projections
        self._kill = kill
        self._clock = clock
        self._limits = limits
        self.enabled = enabled
        self._flatten = flatten
        self._dirty = False
        self._wake: anyio.Event | None = None
        self._day_key = TradingDayKey()
        # What the last `look()` found to do: "verify" (a trip's halt), or a breach to trip.
        self._verify = False
        self._hit: tuple[Decimal, Decimal] | None = None
        # The day's loss (the very Decimal) last found short of the limit, while cash and
        # positions stand; the equity it was found at (None: not above zero, where only the
        # same equity keeps the verdict), and whether a held symbol's mark moved since.
        self._clear: Decimal | None = None
        self._clear_at: Decimal | None = None
        self._marked = False

    def on_event(self, seq: int, event: Any) -> None:
        """A log subscriber: note that something the check depends on changed."""
        t = type(event)
        if t in self.TRIGGERS:
            self._dirty = True
            if self._clear is not None:
                if t is not BarReceived:
                    self._clear = None  # cash or a position moved
                elif self._held(event):
                    self._marked = True  # only equity's marks moved
            if self._wake is not None:
                self._wake.set()

    def _held(self, e: BarReceived) -> bool:
        """Is the bar's symbol held (its close marks equity)? Asked after the projections
        folded the bar (they subscribe first), so the position is current."""
        pos = self._proj.positions.positions.get(e.bar.symbol)
        return pos is not None and bool(pos.qty)

    def today(self) -> Decimal:
        """Realized P&L of the clock's New York trading day (the risk projection's figure)."""
        return self._proj.risk.realized_by_day.get(self._day_key(self._clock.now()), ZERO)

    def breach(self) -> tuple[Decimal, Decimal] | None:
        """(today's realized P&L, the limit) if the limit is reached, else None."""
        return self._breach(self.today())

    def _breach(self, today: Decimal) -> tuple[Decimal, Decimal] | None:
        if today >= 0:
            # Limits are > 0 (validated) wherever equity is: a day not in loss can not reach
            # one, and most bars land on such days; marking equity is the costly part.
            return None
        return self._breach_at(today, self._proj.equity())

    def _breach_at(self, today: Decimal, equity: Decimal) -> tuple[Decimal, Decimal] | None:
        if equity <= 0:
            return None
        limit = self._limits.daily_limit(equity)
        return (today, limit) if today <= -limit else None

    async def check(self, *, attempts: int | None = None) -> bool:
        """Engage the kill switch if the limit is reached; True if this call engaged it.
        `attempts` bounds the broker verification (step mode passes 1: no time passes
        within a step, so waiting for a flatten order to fill would wait forever)."""
        if not self.look(stepping=attempts is not None):
            return False
        return await self.act(attempts=attempts)

    def look(self, *, stepping: bool) -> bool:
        """The synchronous half of `check()`: has anything it depends on changed, and is
        there something to do (a trip's halt to verify while `stepping`, or the limit
        reached)? False settles the change; True means `act()` must run now."""
        self._verify, self._hit = False, None
        if not self._dirty:
            return False
        self._dirty = False
        risk = self._proj.risk
        if stepping and risk.kill_switch == "engaged" and risk.kill_actor == "loss-limit":
            self._verify = True
            return True
        if not self.enabled or risk.kill_switch != "off":
            return False
        # `today()` inline, and a day not in loss settled here (most bars): this runs per bar,
        # so the day key's own bounds test is inline too (no call while the day lasts).
        now, key = self._clock.now(), self._day_key
        day = key._key if key._from <= now < key._until else key(now)
        today = risk.realized_by_day.get(day, ZERO)
        if today >= ZERO:
            return False
        equity: Decimal | None = None
        if today is self._clear:
            # The very loss already found short of the limit (a loss is replaced, never
            # changed in place, so the same object is the same amount, whatever day it is),
            # with cash and positions unchanged since (`on_event` forgets it otherwise).
            if not self._marked:
                return False  # equity unchanged: the same verdict
            self._marked = False
            equity = self._proj.equity()
            at = self._clear_at
            if at is not None and equity >= at:
                return False  # equity no lower, so the limit no smaller (module docstring)
        if equity is None:
            equity = self._proj.equity()
        self._hit = self._breach_at(today, equity)
        if self._hit is None:
            self._clear, self._clear_at, self._marked = today, equity if equity > 0 else None, False
            return False
        # Reached: no verdict short of the limit is kept (a later look, once the switch is
        # released with the loss still standing, must find the limit reached again).
        self._clear, self._clear_at, self._marked = None, None, False
        return True

    async def act(self, *, attempts: int | None = None) -> bool:
        """What the `look()` just before found to do; True if it engaged the kill switch."""
        verify, hit = self._verify, self._hit
        self._verify, self._hit = False, None
        if verify:
            # Step mode: the flatten orders the trip sent fill on later bars; once the broker
            # shows nothing open (and flat, if asked) the halt is verified. Only looking:
            # canceling and re-sending them each bar would keep them from ever filling.
            await self._kill.verify(flatten=self._proj.risk.kill_flatten)
            return False
        if hit is None:
            return False
        today, limit = hit
        log.warning("daily loss %s reached the limit %s: engaging the kill switch", today, limit)
        await self._kill.engage(actor="loss-limit",
                                reason=f"daily loss {today} reached the limit {limit}",
                                flatten=self._flatten, attempts=attempts)
        return True

    async def run(self) -> None:
        """Live: check each time a trigger event is booked."""
        if not self.enabled:
            return
        while True:
            self._wake = anyio.Event()
            if not self._dirty:
                await self._wake.wait()
            await self.check()
