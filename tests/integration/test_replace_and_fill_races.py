"""Review defects on the live path, through the real alpaca-py client and the fake Alpaca:
a replace whose stream messages beat its HTTP answer, and fills a strategy must hear at once.
Each test fails on the code before its fix."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from functools import partial
from pathlib import Path

import anyio

from engine.strategies.base import Strategy
from events.catalogue import FillReceived, OrderIntent, UnknownBrokerMessage
from events.market import Bar
from projections.orders import OrderStatus
from tests.fake_alpaca import FakeAlpaca
from tests.integration.alpaca_world import alpaca_world

D = Decimal
S = OrderStatus
RICH = {"risk": {"max_order_notional": 50000, "max_symbol_exposure": 60000,
                 "max_gross_exposure": 100000, "daily_loss_limit_pct": "0.5",
                 "weekly_loss_limit_pct": "0.5", "day_trade_mode": "off"}}



async def test_replace_stream_first_keeps_the_new_terms(tmp_path: Path, fake: FakeAlpaca) -> None:
    """`replaced` arrives before the HTTP answer (here: the answer never comes). The
    replacement must carry the requested qty/limit, so a partial fill of it stays open."""
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        lim = await w.order(qty="10", order_type="limit", limit_price=D("180"))
        coid = lim.client_order_id
        await w.until(lambda: w.order_of(coid).status == S.ACCEPTED)
        fake.hang_next("replace_order")
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(w.engine.execution.replace, coid, qty=D(15),
                                  limit_price=D("181")))
            await w.until(lambda: w.order_of(coid).status == S.REPLACED)
            new_coid = w.order_of(coid).replaced_by
            assert new_coid is not None
            new = w.order_of(new_coid)
            assert (new.qty, new.limit_price) == (D(15), D("181"))
            fake.fill(new_coid, qty="10", price="181")
            await w.until(lambda: w.order_of(new_coid).filled_qty == 10)
            assert w.order_of(new_coid).status == S.PARTIALLY_FILLED  # 5 still working
            assert w.engine.proj.orders.reserved["AAPL"].buy_qty == 5
            fake.release_hung_requests()
        # reconciliation agrees: nothing of ours to cancel, the remainder stays live
        await w.engine.reconciler.reconcile(startup=False)
        assert fake.order(new_coid)["status"] == "partially_filled"
        assert w.order_of(new_coid).is_open


async def test_replacement_fill_before_the_replace_answer_is_booked(tmp_path: Path,
                                                                    fake: FakeAlpaca) -> None:
    """The replacement's own fill arrives before `replaced` and before the HTTP answer: it
    is our order (we chose its client id), so the fill is booked at once, not 'unknown'."""
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        lim = await w.order(qty="10", order_type="limit", limit_price=D("180"))
        coid = lim.client_order_id
        await w.until(lambda: w.order_of(coid).status == S.ACCEPTED)
        fake.hang_next("replace_order")
        fake.reorder_next_update()  # `replaced` held back ...
        fake.reorder_next_update()  # ... and the replacement's `new`: both follow its fill
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(w.engine.execution.replace, coid, qty=D(12)))
            new_coid = await fake.async_wait_for(lambda: next(
                (o["client_order_id"] for o in fake.orders() if o["replaces"] is not None), None))
            fake.fill(new_coid, price="179")
            await w.until(lambda: "AAPL" in w.engine.proj.positions.positions)
            await w.until(lambda: new_coid in w.engine.proj.orders.orders
                          and w.order_of(new_coid).status == S.FILLED)
            fake.release_hung_requests()
        assert w.engine.proj.positions.positions["AAPL"].qty == 12
        assert w.order_of(coid).status == S.REPLACED
        events = await w.events()
        assert not [e for e in events if isinstance(e, UnknownBrokerMessage)]
        assert [e.qty for e in events if isinstance(e, FillReceived)] == [D(12)]


class HearsFills(Strategy):
    """Records every fill it hears; trades nothing by itself."""

    name = "test"

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[FillReceived] = []
        self.event = anyio.Event()

    def on_bar(self, bar: Bar, ctx: object) -> Sequence[OrderIntent] | None:
        return None

    def on_fill(self, fill: FillReceived, ctx: object) -> Sequence[OrderIntent] | None:
        self.heard.append(fill)
        self.event.set()
        return None


async def test_live_on_fill_is_delivered_when_the_fill_is_booked(tmp_path: Path,
                                                                 fake: FakeAlpaca) -> None:
    """No bar follows the fill: the strategy must hear it anyway."""
    strategy = HearsFills()
    async with alpaca_world(tmp_path / "log.sqlite", fake, strategies=[strategy], **RICH) as w:
        m = await w.order(qty="3")
        await w.until(lambda: w.order_of(m.client_order_id).status == S.ACCEPTED)
        fake.fill(m.client_order_id, price="190")
        with anyio.fail_after(5):
            await strategy.event.wait()
        assert [(f.client_order_id, f.qty) for f in strategy.heard] == [(m.client_order_id, 3)]
