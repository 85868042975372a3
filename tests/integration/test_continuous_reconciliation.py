"""While the engine runs, a position changed by hand at the broker is noticed and recorded
(F4) — after it is seen twice in a row, so a fill still on its way is not mistaken for one —
and a large enough mismatch trips the kill switch."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import anyio

from engine.service import _reconcile_loop
from events.catalogue import DiscrepancyFound, KillSwitchEngaged, PositionAdjusted
from projections.orders import OrderStatus
from tests.fake_alpaca import FakeAlpaca
from tests.integration.alpaca_world import alpaca_world
from tests.integration.test_alpaca_execution import RICH

D = Decimal



async def test_hand_trade_at_the_broker_is_noticed(tmp_path: Path, fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        d = await w.order(qty="10")
        await w.until(lambda: w.order_of(d.client_order_id).status == OrderStatus.ACCEPTED)
        fake.fill(d.client_order_id, price="190")
        await w.until(lambda: w.order_of(d.client_order_id).status == OrderStatus.FILLED)
        fake.set_position("AAPL", "7", "190")  # 3 shares sold by hand, no trade update
        w.engine.reconciler.policy = type(w.engine.reconciler.policy)(
            confirmations=2, max_mismatch_value=D(100_000))
        async with anyio.create_task_group() as tg:
            tg.start_soon(_reconcile_loop, w.engine, 0.05)
            await w.until(lambda: w.engine.proj.positions.positions["AAPL"].qty == 7, timeout=10)
            tg.cancel_scope.cancel()
        events = await w.events()
        disc = [e for e in events if isinstance(e, DiscrepancyFound)]
        assert [(e.kind, e.ours, e.broker) for e in disc] == [("position_mismatch", "10", "7")]
        adj = [e for e in events if isinstance(e, PositionAdjusted)]
        assert len(adj) == 1 and adj[0].qty_before == 10 and adj[0].qty_after == 7


async def test_large_mismatch_trips_the_kill_switch(tmp_path: Path, fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        fake.set_position("MSFT", "20", "400")  # $8,000 appeared that no order explains
        w.engine.reconciler.policy = type(w.engine.reconciler.policy)(
            confirmations=1, max_mismatch_value=D(1000))
        w.engine.kill._backoff = 0.01
        async with anyio.create_task_group() as tg:
            tg.start_soon(_reconcile_loop, w.engine, 0.05)
            await w.until(lambda: w.engine.proj.risk.kill_switch == "verified", timeout=10)
            tg.cancel_scope.cancel()
        engaged = [e for e in await w.events() if isinstance(e, KillSwitchEngaged)]
        assert engaged and engaged[0].actor == "reconciliation"
        assert "8000" in engaged[0].reason.replace(",", "")
