"""The kill switch is only 'verified' when the broker itself shows nothing open (and flat when
flattening was asked) — with a broker that is slow to cancel, and one that refuses the first
cancel."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import anyio

from events.catalogue import KillSwitchEngaged, KillSwitchVerified
from projections.orders import OrderStatus
from tests.fake_alpaca import FakeAlpaca
from tests.integration.alpaca_world import alpaca_world
from tests.integration.test_alpaca_execution import RICH

D = Decimal



async def _resting_orders(w, n: int = 3) -> list[str]:  # type: ignore[no-untyped-def]
    coids = []
    for i in range(n):
        d = await w.order(symbol="F", qty="1", order_type="limit", limit_price=D("11.5"),
                          intent_id=f"rest-{i}")
        coids.append(d.client_order_id)
    await w.until(lambda: all(w.order_of(c).status == OrderStatus.ACCEPTED for c in coids))
    return coids


async def test_slow_cancels_are_waited_for(tmp_path: Path, fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        coids = await _resting_orders(w)
        fake.slow_cancels(True)  # accepted with 204, canceled only when we say so
        w.engine.kill._backoff = 0.05
        result: list[object] = []

        async def engage() -> None:
            result.append(await w.engine.kill.engage(actor="test", reason="slow"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(engage)
            await fake.async_wait_for(lambda: len(fake.orders("open")) == 3 and all(
                o["status"] == "pending_cancel" for o in fake.orders("open")))
            assert not result  # still open at the broker: not verified
            assert not [e for e in await w.events() if isinstance(e, KillSwitchVerified)]
            fake.complete_pending_cancels()
        assert result[0].verified and result[0].open_orders == 0  # type: ignore[attr-defined]
        assert fake.orders("open") == []
        await w.until(lambda: all(w.order_of(c).status == OrderStatus.CANCELED for c in coids))


async def test_first_cancel_refused_then_retried(tmp_path: Path, fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        await _resting_orders(w, 2)
        fake.reject_next_cancel(1, mode="422")
        w.engine.kill._backoff = 0.01
        res = await w.engine.kill.engage(actor="test", reason="refused")
        assert res.verified and res.attempts >= 2
        assert fake.orders("open") == []
        evs = await w.events()
        assert [type(e).__name__ for e in evs if isinstance(e, (KillSwitchEngaged,
                                                               KillSwitchVerified))] == [
            "KillSwitchEngaged", "KillSwitchVerified"]


async def test_flatten_closes_positions_and_verifies_flat(tmp_path: Path, fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        d = await w.order(qty="3")
        await w.until(lambda: w.order_of(d.client_order_id).status == OrderStatus.ACCEPTED)
        fake.fill(d.client_order_id, price="190")
        await w.until(lambda: w.order_of(d.client_order_id).status == OrderStatus.FILLED)
        fake.set_auto_fill(True)  # the flattening market sell fills when it arrives
        w.engine.kill._backoff = 0.02
        res = await w.engine.kill.engage(actor="test", reason="flatten", flatten=True)
        assert res.verified and res.flat
        assert fake.positions() == []
        await w.until(lambda: w.engine.proj.positions.positions["AAPL"].qty == 0)
        # while engaged, ordinary intents are refused
        refused = await w.order(qty="1")
        assert {r.code for r in refused.reasons} == {"KILL_SWITCH_ENGAGED"}
