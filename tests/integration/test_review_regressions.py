"""Regressions for races found in review: each test fails on the code before its fix."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Self

import anyio
import pytest

from engine.brokers.base import BrokerOrder, OrderRequest, TradeUpdate
from engine.brokers.kinds import OrderState, UpdateKind
from engine.clock import SimClock
from engine.config import load_settings
from engine.recovery.reconcile import ReconcilePolicy, Reconciler
from engine.service import _handle_control
from events.catalogue import (
    AccountSnapshot,
    DiscrepancyFound,
    KillSwitchEngaged,
    OrderIntent,
    RiskRejected,
)
from events.store import EventLog, LogLockedError
from projections.orders import OrderStatus
from projections.state import Projections
from tests.execution.simworld import T0, mk_bar, sim_world
from tests.factories import approved, fill, submitted_chain

D = Decimal


async def test_engine_rebuilds_only_while_holding_the_writer_lock(tmp_path: Path,
                                                                  monkeypatch: Any) -> None:
    """An offline `halt` appended while the engine was starting must be in its state."""
    from engine import app

    log_path = tmp_path / "events.sqlite"
    async with EventLog.open(log_path) as log:
        await log.append(KillSwitchEngaged(ts=T0, actor="op", reason="before start"))
    real = app.rebuild_from_path
    tried: list[str] = []

    async def rebuild_checking_lock(path: Any, **kw: Any) -> Projections:
        with pytest.raises(LogLockedError):  # an operator's offline append can not slip in
            async with EventLog.open(path):
                pass
        tried.append("locked")
        return await real(path, **kw)

    monkeypatch.setattr(app, "rebuild_from_path", rebuild_checking_lock)
    settings = load_settings(data_dir=tmp_path, log_file=log_path)
    async with app.open_engine(settings, clock=SimClock(T0), strategies=[]) as engine:
        assert tried == ["locked"] and engine.proj.risk.kill_switch == "engaged"


class SlowBroker:
    """The sim, but a submit waits for the test: the order is in flight meanwhile."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = "slow"
        self.external = True
        self.release = anyio.Event()
        self.started = anyio.Event()

    async def submit(self, request: OrderRequest) -> BrokerOrder:
        self.started.set()
        await self.release.wait()
        return await self.inner.submit(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_reconciliation_leaves_a_submit_in_flight_alone(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        slow = SlowBroker(w.broker)
        w.execution._broker = slow  # type: ignore[assignment]
        await w.bar(mk_bar("AAPL", 0, "100"))
        reconciler = Reconciler(w.log, w.proj, slow, w.execution, w.clock, ReconcilePolicy())
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.order)
            await slow.started.wait()
            await reconciler.orders(startup=False)  # the broker does not have it yet
            (coid,) = [c for c, o in w.proj.orders.orders.items()
                       if o.status == OrderStatus.PENDING_SUBMIT]
            slow.release.set()
        await w.pump()
        assert w.proj.orders.orders[coid].status == OrderStatus.ACCEPTED  # not "rejected"


async def test_an_order_the_log_closed_but_the_broker_works_is_canceled(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        await w.bar(mk_bar("AAPL", 0, "100"))
        d = await w.order(order_type="limit", limit_price=D("95"))
        from events.catalogue import OrderRejected

        await w.log.append(OrderRejected(ts=T0, client_order_id=d.client_order_id,
                                         reason="closed by mistake", by_broker=False))
        reconciler = Reconciler(w.log, w.proj, w.broker, w.execution, w.clock, ReconcilePolicy())
        await reconciler.orders(startup=False)
        assert await w.broker.open_orders() == []
        kinds = [e.kind for e in await w.events() if isinstance(e, DiscrepancyFound)]
        assert kinds == ["open_at_broker_closed_in_log"]


def test_account_snapshot_is_not_double_counted_with_fills() -> None:
    p = Projections()
    p.apply(1, approved("b", qty="10", price="100"))
    for i, e in enumerate(submitted_chain("b"), 2):
        p.apply(i, e)
    asked = T0 + timedelta(seconds=10)
    # executed after the broker was asked, booked before its answer arrived: not in it
    p.apply(5, fill("b", "5", "100", ts=asked + timedelta(seconds=1), exec_id="late"))
    p.apply(6, AccountSnapshot(ts=asked + timedelta(seconds=2), equity=D(1000), cash=D(1000),
                               buying_power=D(1000), as_of=asked))
    assert p.account.cash_now == D(1000) - D(500)
    # executed before the broker was asked, booked after: already in its figures
    p.apply(7, fill("b", "5", "100", ts=asked - timedelta(seconds=1), exec_id="early"))
    assert p.account.cash_now == D(500)


async def test_a_replace_done_outside_the_engine_invents_no_order(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        await w.bar(mk_bar("AAPL", 0, "100"))
        d = await w.order(order_type="limit", limit_price=D("95"))
        o = w.proj.orders.orders[d.client_order_id]
        old = BrokerOrder(broker_order_id=o.broker_order_id or "", client_order_id=o.client_order_id,
                          symbol="AAPL", side="buy", order_type="limit", status="replaced",
                          state=OrderState.REPLACED, qty=D(10), replaced_by="web-edit-1")
        await w.execution.handle(TradeUpdate(kind=UpdateKind.REPLACED, event="replaced", order=old, timestamp=T0))
        await w.log.flush()
        assert w.proj.orders.open_ids == set()  # no phantom "-rx" order holding exposure
        assert w.proj.orders.orders[d.client_order_id].status == OrderStatus.CANCELED
        kinds = [e.kind for e in await w.events() if isinstance(e, DiscrepancyFound)]
        assert kinds == ["replaced_outside_engine"]


async def test_flatten_leaves_room_for_closing_orders_still_open(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        await w.bar(mk_bar("AAPL", 0, "100"))
        await w.order(qty="10")
        await w.bar(mk_bar("AAPL", 1, "100"))
        await w.order(side="sell", qty="10", order_type="limit", limit_price=D("105"))
        intent = OrderIntent(ts=w.clock.now(), intent_id="kill:AAPL:1", strategy="kill_switch",
                             symbol="AAPL", side="sell", qty=D(10), reduce_only=True)
        d = await w.gate.submit(intent, flatten=True)
        assert isinstance(d, RiskRejected)  # the open sell would close it too: no overshoot
        assert d.reasons[0].values["pending_closing_qty"] == "10"
        d2 = await w.gate.submit(OrderIntent(ts=w.clock.now(), intent_id="kill:AAPL:2",
                                             strategy="kill_switch", symbol="AAPL", side="sell",
                                             qty=D(10), reduce_only=True))
        assert isinstance(d2, RiskRejected)  # and without the flag it is an ordinary intent


class HungUpClient:
    def __init__(self) -> None:
        self.sent = False

    async def receive(self) -> bytes:
        return json.dumps({"cmd": "nope", "reason": "x"}).encode() + b"\n"

    async def send(self, data: bytes) -> None:
        raise anyio.BrokenResourceError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_a_control_client_that_hangs_up_does_not_stop_the_service() -> None:
    await _handle_control(None, HungUpClient())  # type: ignore[arg-type]

