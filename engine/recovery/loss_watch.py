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
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import anyio

from engine.clock import Clock
from engine.recovery.killswitch import KillSwitch
from engine.risk.limits import RiskLimits
from events.catalogue import AccountSnapshot, BarReceived, FillReceived
from projections.calendar import trading_day
from projections.risk import realized_on
from projections.state import Projections

log = logging.getLogger(__name__)
_TRIGGERS = (FillReceived, BarReceived, AccountSnapshot)


class LossLimitWatch:
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

    def on_event(self, seq: int, event: Any) -> None:
        """A log subscriber: note that something the check depends on changed."""
        if type(event) in _TRIGGERS:
            self._dirty = True
            if self._wake is not None:
                self._wake.set()

    def breach(self) -> tuple[Decimal, Decimal] | None:
        """(today's realized P&L, the limit) if the limit is reached, else None."""
        today = realized_on(self._proj.risk, trading_day(self._clock.now()))
        if today >= 0:
            # Limits are > 0 (validated) wherever equity is: a day not in loss can not reach
            # one, and most bars land on such days; marking equity is the costly part.
            return None
        equity = self._proj.equity()
        if equity <= 0:
            return None
        limit = self._limits.daily_limit(equity)
        return (today, limit) if today <= -limit else None

    async def check(self, *, attempts: int | None = None) -> bool:
        """Engage the kill switch if the limit is reached; True if this call engaged it.
        `attempts` bounds the broker verification (step mode passes 1: no time passes
        within a step, so waiting for a flatten order to fill would wait forever)."""
        if not self._dirty:
            return False
        self._dirty = False
        risk = self._proj.risk
        if attempts is not None and risk.kill_switch == "engaged" \
                and risk.kill_actor == "loss-limit":
            # Step mode: the flatten orders the trip sent fill on later bars; once the broker
            # shows nothing open (and flat, if asked) the halt is verified. Only looking:
            # canceling and re-sending them each bar would keep them from ever filling.
            await self._kill.verify(flatten=risk.kill_flatten)
            return False
        if not self.enabled or risk.kill_switch != "off":
            return False
        hit = self.breach()
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
