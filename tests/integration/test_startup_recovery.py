"""Startup recovery: the log and the broker diverged while the engine was down; after startup
the projections equal the broker and the log explains every difference.

The broker here is the deterministic SimulatedBroker kept alive across "restarts" (the
engine's log is closed and reopened, its projections rebuilt from disk). The same protocol
runs against Alpaca (through the fake server) in test_alpaca_recovery.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.brokers.base import OrderRequest
from engine.brokers.simulated import SimulatedBroker
from engine.clock import SimClock
from engine.execution.router import OrderRouter
from engine.execution.service import ExecutionService
from engine.rebuild import rebuild_from_path
from engine.recovery.killswitch import KillSwitch
from engine.recovery.reconcile import ReconcilePolicy, Reconciler
from engine.recovery.startup import RecoveryReport, recover
from engine.risk.gate import RiskGate
from events.catalogue import (
    AssetInfo,
    DiscrepancyFound,
    FillReceived,
    OrderCanceled,
    OrderIntent,
    OrderSubmitRequested,
    PositionAdjusted,
    RiskApproved,
    RunSealed,
)
from events.store import EventLog, LogReader
from projections.orders import OrderStatus
from projections.state import Projections
from tests.execution.simworld import ASSETS, T0, WIDE, mk_bar

D = Decimal


@dataclass
class Engine:
    log: EventLog
    proj: Projections
    gate: RiskGate
    execution: ExecutionService
    router: OrderRouter
    kill: KillSwitch
    report: RecoveryReport | None


DEFAULT_POLICY = ReconcilePolicy()


class Env:
    """A broker that outlives engine restarts, and a log on disk."""

    def __init__(self, path: Path, policy: ReconcilePolicy = DEFAULT_POLICY) -> None:
        self.path = path
        self.clock = SimClock(T0)
        self.broker = SimulatedBroker(clock=self.clock, assets=ASSETS, cash=D(100_000))
        self.policy = policy
        self.runs = 0

    @asynccontextmanager
    async def engine(self, *, recover_first: bool = True) -> AsyncIterator[Engine]:
        self.runs += 1
        proj = await rebuild_from_path(self.path) if self.path.exists() else Projections()
        async with EventLog.open(self.path) as log:
            log.subscribe(proj.apply)
            gate = RiskGate(log, proj, WIDE, self.clock)
            execution = ExecutionService(log, proj, self.broker, self.clock, lookup_backoff_s=0)
            router = OrderRouter(gate, execution)
            # Verification waits on the (simulated) clock between checks: only the market
            # moving on can fill a flattening order.
            kill = KillSwitch(log, proj, self.broker, execution, router, self.clock,
                              verify_backoff_s=1)
            reconciler = Reconciler(log, proj, self.broker, execution, self.clock, self.policy)
            report = None
            if recover_first:
                if not proj.market.assets:
                    for a in ASSETS.values():
                        await log.append(AssetInfo(ts=self.clock.now(), symbol=a.symbol,
                                                   tradable=True, fractionable=a.fractionable))
                report = await recover(log, proj, self.clock, reconciler, WIDE,
                                       run_id=f"run-{self.runs}", code_version="test",
                                       settings_hash="h", mode="test")
            async with anyio.create_task_group() as tg:
                await tg.start(gate.run)
                try:
                    yield Engine(log, proj, gate, execution, router, kill, report)
                finally:
                    gate.close()

    async def bar(self, e: Engine, i: int, price: str = "100") -> None:
        b = mk_bar("AAPL", i, price)
        self.clock.set(b.end)
        self.broker.on_bar(b)
        for u in self.broker.drain_updates():
            await e.execution.handle(u)
        await e.log.flush()
        from events.catalogue import BarReceived

        await e.log.append(BarReceived(ts=b.end, bar=b))

    async def events(self) -> list[Any]:
        async with LogReader(self.path) as r:
            return [e async for _, e in r.read()]


async def positions_equal_broker(env: Env) -> None:
    proj = await rebuild_from_path(env.path)
    ours = {s: p.qty for s, p in proj.positions.positions.items() if p.qty}
    theirs = {p.symbol: p.qty for p in await env.broker.positions()}
    assert ours == theirs


def intent(iid: str, qty: str = "10", side: str = "buy", **kw: Any) -> OrderIntent:
    return OrderIntent(ts=T0, intent_id=iid, strategy="t", symbol="AAPL", side=side, qty=D(qty),
                       **kw)


async def test_fill_while_down_is_booked_once_as_inferred(tmp_path: Path) -> None:
    env = Env(tmp_path / "log.sqlite")
    async with env.engine() as e:
        await env.bar(e, 0)
        d = await e.router.route(intent("a"))
        assert isinstance(d, RiskApproved)
    # engine down; the market moves and the order fills at the broker, unheard
    env.broker.on_bar(mk_bar("AAPL", 1, "101"))
    env.broker.drain_updates()
    async with env.engine() as e:
        assert e.report is not None and e.report.enabled
        o = e.proj.orders.orders[d.client_order_id]
        assert o.status == OrderStatus.FILLED and o.filled_qty == 10
    await positions_equal_broker(env)
    fills = [x for x in await env.events() if isinstance(x, FillReceived)]
    assert len(fills) == 1 and fills[0].execution_id.startswith("inferred-")
    assert fills[0].price == D(101) and fills[0].source == "reconcile"
    # a second restart books nothing new
    async with env.engine() as e:
        assert e.report is not None and e.report.discrepancies == 0
    assert len([x for x in await env.events() if isinstance(x, FillReceived)]) == 1


async def test_cancel_while_down_is_recorded(tmp_path: Path) -> None:
    env = Env(tmp_path / "log.sqlite")
    async with env.engine() as e:
        await env.bar(e, 0)
        d = await e.router.route(intent("a", order_type="limit", limit_price=D(95)))
        for u in env.broker.drain_updates():
            await e.execution.handle(u)
    o = await env.broker.get_order_by_client_id(d.client_order_id)
    assert o is not None
    await env.broker.cancel(o.broker_order_id)  # canceled by hand at the broker
    env.broker.drain_updates()
    async with env.engine() as e:
        assert e.proj.orders.orders[d.client_order_id].status == OrderStatus.CANCELED
    assert any(isinstance(x, OrderCanceled) for x in await env.events())


async def test_crash_between_submit_requested_and_answer(tmp_path: Path) -> None:
    env = Env(tmp_path / "log.sqlite")
    async with env.engine() as e:
        await env.bar(e, 0)
        # What a crash mid-submit leaves behind: approval and submit-requested durable, the
        # order at the broker, no answer recorded.
        d = await e.gate.submit(intent("a"))
        assert isinstance(d, RiskApproved)
        await e.log.append(OrderSubmitRequested(ts=T0, client_order_id=d.client_order_id,
                                                intent_id="a", symbol="AAPL"))
        await env.broker.submit(OrderRequest(client_order_id=d.client_order_id, symbol="AAPL",
                                             side="buy", order_type="market", qty=D(10)))
        env.broker.drain_updates()
        d2 = await e.gate.submit(intent("b"))
        assert isinstance(d2, RiskApproved)
        await e.log.append(OrderSubmitRequested(ts=T0, client_order_id=d2.client_order_id,
                                                intent_id="b", symbol="AAPL"))
        d3 = await e.gate.submit(intent("c"))  # approved, never sent
    async with env.engine() as e:
        orders = e.proj.orders.orders
        assert orders[d.client_order_id].status == OrderStatus.ACCEPTED  # found by client id
        assert orders[d2.client_order_id].status == OrderStatus.REJECTED  # not there: closed
        assert "not found at the broker" in orders[d2.client_order_id].reason
        assert orders[d3.client_order_id].status == OrderStatus.CANCELED  # stale approval
        # re-sending intent "a" never creates a second order
        again = await e.router.route(intent("a"))
        assert again == d
    assert env.broker.submits == 1


@pytest.mark.parametrize("policy", ["adopt", "refuse"])
async def test_position_changed_by_hand(tmp_path: Path, policy: str) -> None:
    env = Env(tmp_path / "log.sqlite", ReconcilePolicy(unexplained_position=policy))  # type: ignore[arg-type]
    async with env.engine() as e:
        await env.bar(e, 0)
        await e.router.route(intent("a"))
        await env.bar(e, 1)
        assert e.proj.positions.positions["AAPL"].qty == 10
    env.broker.set_position("AAPL", D(4), D(100))  # sold 6 by hand in the broker's app
    async with env.engine() as e:
        assert e.report is not None
        disc = [x for x in await env.events() if isinstance(x, DiscrepancyFound)]
        assert disc and disc[-1].kind == "position_mismatch" and disc[-1].broker == "4"
        if policy == "adopt":
            assert e.report.enabled
            assert e.proj.positions.positions["AAPL"].qty == 4
            adj = [x for x in await env.events() if isinstance(x, PositionAdjusted)]
            assert len(adj) == 1 and "unexplained" in adj[0].reason
            assert not [x for x in await env.events()
                        if isinstance(x, FillReceived) and x.side == "sell"]  # no invented fill
        else:
            assert not e.report.enabled and e.proj.risk.trading_state == "halted"
    if policy == "adopt":
        await positions_equal_broker(env)
        async with env.engine() as e:  # idempotent: nothing new to adjust
            assert e.report is not None and e.report.discrepancies == 0


async def test_foreign_and_orphan_orders(tmp_path: Path) -> None:
    env = Env(tmp_path / "log.sqlite", ReconcilePolicy(foreign_orders="cancel"))
    async with env.engine() as e:
        await env.bar(e, 0)
    await env.broker.submit(OrderRequest(client_order_id="manual-1", symbol="AAPL", side="buy",
                                         order_type="limit", qty=D(1), limit_price=D(90)))
    await env.broker.submit(OrderRequest(client_order_id="mqd-lost-tail", symbol="AAPL",
                                         side="buy", order_type="limit", qty=D(2),
                                         limit_price=D(91)))
    env.broker.drain_updates()
    async with env.engine() as e:
        assert e.proj.orders.orders["mqd-lost-tail"].status == OrderStatus.ACCEPTED  # adopted
        remaining = {o.client_order_id for o in await env.broker.open_orders()}
        assert remaining == {"mqd-lost-tail"}  # the foreign one was canceled per policy
    kinds = {x.kind for x in await env.events() if isinstance(x, DiscrepancyFound)}
    assert {"foreign_order", "orphan_order_ours"} <= kinds


async def test_crashed_run_is_sealed_and_kill_switch_survives_restart(tmp_path: Path) -> None:
    env = Env(tmp_path / "log.sqlite")
    async with env.engine() as e:
        await env.bar(e, 0)
        await e.router.route(intent("a"))
        await env.bar(e, 1)
        result: list[Any] = []

        async def engage() -> None:
            result.append(await e.kill.engage(actor="test", reason="panic", flatten=True))

        async with anyio.create_task_group() as tg:
            tg.start_soon(engage)
            await anyio.wait_all_tasks_blocked()  # it is waiting for the market to move
            assert not result and len(await env.broker.open_orders()) == 1
            await env.bar(e, 2, "99")  # the flattening sell fills at this bar's open
        assert result[0].verified and result[0].flat
        last = e.log.last_seq
    assert await env.broker.positions() == []
    async with env.engine() as e:  # the previous run never appended RunEnded: it crashed
        sealed = [x for x in await env.events() if isinstance(x, RunSealed)]
        assert [(s.run_id, s.last_seq) for s in sealed] == [("run-1", last)]
        assert e.report is not None and not e.report.enabled
        assert e.proj.risk.trading_state == "halted" and e.proj.risk.kill_switch == "verified"
        await env.bar(e, 3)
        d = await e.router.route(intent("b"))
        assert {r.code for r in d.reasons} == {"KILL_SWITCH_ENGAGED"}  # type: ignore[union-attr]
        await e.kill.release(actor="person", reason="checked")
        env.clock.advance(timedelta(seconds=1))
        d = await e.router.route(intent("c"))
        assert isinstance(d, RiskApproved)
