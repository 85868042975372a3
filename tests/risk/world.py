"""A small, real trading world for gate tests: a SQLite log on disk, projections folded from
it, a simulated clock, and a running RiskGate."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from engine.clock import SimClock
from engine.risk.gate import RiskGate
from engine.risk.limits import RiskLimits
from events.catalogue import (
    AccountSnapshot,
    AssetInfo,
    OrderIntent,
    RiskApproved,
    RiskRejected,
    RunStarted,
    TradingStateChanged,
)
from events.store import EventLog
from projections.risk import Decision
from projections.state import Projections
from tests.factories import bar, fill, submitted_chain

NOW = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)  # Monday 11:00 New York
D = Decimal
_ids = itertools.count()

ASSETS = {
    "AAPL": {"fractionable": True, "shortable": True},
    "MSFT": {"fractionable": True, "shortable": True},
    "BIG": {"fractionable": True},  # the $600 share
    "WHOLE": {"fractionable": False},
    "HALT": {"fractionable": True, "tradable": False},
}
PRICES = {"AAPL": "100", "MSFT": "50", "BIG": "600", "WHOLE": "20", "HALT": "10"}


@dataclass
class World:
    log: EventLog
    proj: Projections
    gate: RiskGate
    clock: SimClock
    decisions: list[Decision] = field(default_factory=list)

    async def submit(self, **kw: Any) -> Decision:
        d = await self.gate.submit(intent(**kw))
        self.decisions.append(d)
        return d

    async def hold(self, symbol: str, qty: str, price: str, *, side: str = "buy",
                   at: datetime | None = None, at_risk: str = "0") -> None:
        """Book a filled order directly in the log, as if it had traded at `at`."""
        from tests.factories import approved

        coid = f"held-{next(_ids)}"
        ts = at or self.clock.now()
        for e in [approved(coid, symbol=symbol, side=side, qty=qty, price=price, ts=ts,
                           at_risk=at_risk),
                  *submitted_chain(coid, ts),
                  fill(coid, qty, price, side=side, symbol=symbol, ts=ts, done=True)]:
            await self.log.append(e)

    def gate_view(self) -> Any:
        from engine.risk.view import GateView
        return GateView(self.proj, self.clock.now())

    async def tick(self, symbol: str, close: str) -> None:
        """A fresh bar ending now."""
        now = self.clock.now()
        await self.log.append(bar(symbol, now - timedelta(minutes=1), close=close, ts=now))


def intent(symbol: str = "AAPL", side: str = "buy", qty: str | None = "1",
           notional: str | None = None, **kw: Any) -> OrderIntent:
    fields: dict[str, Any] = {
        "ts": kw.pop("ts", NOW), "intent_id": kw.pop("intent_id", f"t-{next(_ids)}"),
        "strategy": "test", "symbol": symbol, "side": side,
        "qty": D(qty) if qty is not None else None,
        "notional": D(notional) if notional is not None else None,
    }
    for k in ("limit_price", "stop_price", "trail_price", "trail_percent"):
        if k in kw and kw[k] is not None:
            kw[k] = D(kw[k])
    fields.update(kw)
    return OrderIntent(**fields)


def codes(d: Decision) -> set[str]:
    assert isinstance(d, RiskRejected), f"expected a rejection, got {d}"
    return {r.code for r in d.reasons}


def approved_(d: Decision) -> RiskApproved:
    assert isinstance(d, RiskApproved), f"expected an approval, got {d}"
    return d


def generous(**over: Any) -> RiskLimits:
    base: dict[str, Any] = {"max_order_notional": D(100_000), "max_symbol_exposure": D(100_000),
                                "max_gross_exposure": D(100_000), "max_open_positions": 50,
                                "daily_loss_limit_pct": D(1), "weekly_loss_limit_pct": D(1),
                                "max_orders_per_minute": 100_000, "day_trade_mode": "off"}
    base.update(over)
    return RiskLimits(**base)


@asynccontextmanager
async def trading_world(path: Path, *, cash: str = "200", limits: RiskLimits | None = None,
                        prices: Mapping[str, str] = PRICES, now: datetime = NOW,
                        state: str = "active", pdt: tuple[int, bool] | None = None,
                        buying_power: str | None = None) -> AsyncIterator[World]:
    clock = SimClock(now)
    proj = Projections()
    async with EventLog.open(path) as log:
        log.subscribe(proj.apply)
        seed: list[Any] = [
            RunStarted(ts=now, run_id="run-1", code_version="test", settings_hash="x", mode="test"),
            AccountSnapshot(ts=now, equity=D(cash), cash=D(cash),
                            buying_power=D(buying_power or cash),
                            daytrade_count=pdt[0] if pdt else None,
                            pattern_day_trader=pdt[1] if pdt else None),
        ]
        for sym, flags in ASSETS.items():
            seed.append(AssetInfo(ts=now, symbol=sym, tradable=flags.get("tradable", True),
                                  fractionable=flags["fractionable"],
                                  shortable=flags.get("shortable", False)))
        for sym, px in prices.items():
            seed.append(bar(sym, now - timedelta(minutes=1), close=px, ts=now))
        if state != "recovering":
            seed.append(TradingStateChanged(ts=now, state=state, reason="test"))  # type: ignore[arg-type]
        await log.append_many(seed)
        gate = RiskGate(log, proj, limits or generous(), clock)
        async with anyio.create_task_group() as tg:
            await tg.start(gate.run)
            try:
                yield World(log, proj, gate, clock)
            finally:
                gate.close()
