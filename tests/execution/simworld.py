"""A real engine slice for execution tests: on-disk log, projections, gate, execution and a
SimulatedBroker, stepped bar by bar."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from engine.brokers.base import BrokerAsset
from engine.brokers.simulated import SimConfig, SimulatedBroker
from engine.clock import SimClock
from engine.execution.router import OrderRouter
from engine.execution.service import ExecutionService
from engine.risk.gate import RiskGate
from engine.risk.limits import RiskLimits
from events.catalogue import (
    AccountSnapshot,
    AssetInfo,
    BarReceived,
    FillReceived,
    OrderIntent,
    RunStarted,
    TradingStateChanged,
)
from events.market import Bar
from events.store import EventLog, LogReader
from projections.state import Projections

T0 = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)  # Monday 09:30 New York
D = Decimal
ASSETS = {
    "AAPL": BrokerAsset(symbol="AAPL", tradable=True, fractionable=True, shortable=True),
    "WHOLE": BrokerAsset(symbol="WHOLE", tradable=True, fractionable=False),
}
WIDE = RiskLimits(max_order_notional=D(10**7), max_symbol_exposure=D(10**7),
                  max_gross_exposure=D(10**7), max_open_positions=50,
                  daily_loss_limit_pct=D(1), weekly_loss_limit_pct=D(1),
                  max_orders_per_minute=10**6, day_trade_mode="off")


def mk_bar(symbol: str, i: int, o: str, h: str | None = None, lo: str | None = None,
           c: str | None = None, v: str = "1000000") -> Bar:
    op = D(o)
    cl = D(c) if c is not None else op
    return Bar(symbol=symbol, start=T0 + timedelta(minutes=i), interval_s=60, open=op,
               high=D(h) if h else max(op, cl), low=D(lo) if lo else min(op, cl), close=cl,
               volume=D(v))


@dataclass
class SimWorld:
    log: EventLog
    proj: Projections
    clock: SimClock
    broker: SimulatedBroker
    gate: RiskGate
    execution: ExecutionService
    router: OrderRouter
    n: int = 0

    async def bar(self, bar: Bar) -> None:
        """One step of the market, in the step driver's order (replay/backtest/stepper.py): the bar
        is recorded, then the broker fills what it allows and the engine books those fills."""
        self.clock.set(bar.end)
        await self.log.append(BarReceived(ts=bar.end, bar=bar))
        self.broker.on_bar(bar)
        await self.pump()

    async def pump(self) -> None:
        for u in self.broker.drain_updates():
            await self.execution.handle(u)
        await self.log.flush()  # broker facts are appended, not awaited: let them fold

    async def order(self, symbol: str = "AAPL", side: str = "buy", qty: str | None = "10",
                    **kw: Any) -> Any:
        self.n += 1
        intent = OrderIntent(ts=self.clock.now(), intent_id=kw.pop("intent_id", f"o{self.n}"),
                             strategy="t", symbol=symbol, side=side,
                             qty=D(qty) if qty is not None else None, **kw)
        d = await self.router.route(intent)
        await self.pump()
        return d

    def gate_view_protection(self, symbol: str) -> list[Any]:
        from projections.orders import armed_stops
        return armed_stops(self.proj.orders, symbol)

    def fills(self) -> list[FillReceived]:
        return [o for o in self._fills]

    async def events(self) -> list[Any]:
        await self.log.flush()
        async with LogReader(self.log.path) as r:
            return [e async for _, e in r.read()]


@asynccontextmanager
async def sim_world(path: Path, *, cash: str = "100000", config: SimConfig | None = None,
                    limits: RiskLimits = WIDE, broker: Any = None) -> AsyncIterator[SimWorld]:
    clock = SimClock(T0)
    proj = Projections()
    sim = SimulatedBroker(clock=clock, assets=ASSETS, cash=D(cash), config=config or SimConfig())
    async with EventLog.open(path) as log:
        log.subscribe(proj.apply)
        seed: list[Any] = [RunStarted(ts=T0, run_id="r", code_version="t", settings_hash="h",
                                      mode="test"),
                           AccountSnapshot(ts=T0, equity=D(cash), cash=D(cash),
                                           buying_power=D(cash))]
        seed += [AssetInfo(ts=T0, symbol=a.symbol, tradable=a.tradable,
                           fractionable=a.fractionable, shortable=a.shortable)
                 for a in ASSETS.values()]
        seed.append(TradingStateChanged(ts=T0, state="active", reason="test"))
        await log.append_many(seed)
        gate = RiskGate(log, proj, limits, clock)
        execution = ExecutionService(log, proj, broker or sim, clock, lookup_backoff_s=0)
        async with anyio.create_task_group() as tg:
            await tg.start(gate.run)
            try:
                yield SimWorld(log, proj, clock, sim, gate, execution,
                               OrderRouter(gate, execution))
            finally:
                gate.close()
