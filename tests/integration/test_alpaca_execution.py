"""Order lifecycles end to end: engine -> real alpaca-py client -> fake Alpaca -> websocket ->
events -> projections. Nothing of ours is mocked."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from events.catalogue import (
    FillReceived,
    IllegalTransition,
    OrderSubmitAmbiguous,
    RiskApproved,
    UnknownBrokerMessage,
)
from projections.orders import OrderStatus
from tests.brokers.test_alpaca_broker import push_raw_trade_frame
from tests.fake_alpaca import FakeAlpaca
from tests.integration.alpaca_world import alpaca_world

D = Decimal
S = OrderStatus
RICH = {"risk": {"max_order_notional": 50000, "max_symbol_exposure": 60000,
                  "max_gross_exposure": 100000, "daily_loss_limit_pct": "0.5",
                  "weekly_loss_limit_pct": "0.5", "day_trade_mode": "off"}}



def fills_of(events: list[Any], coid: str) -> list[FillReceived]:
    return [e for e in events if isinstance(e, FillReceived) and e.client_order_id == coid]


async def test_market_limit_fractional_cancel_reject_expire(tmp_path: Path, fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        m = await w.order(qty="5")
        assert isinstance(m, RiskApproved)
        await w.until(lambda: w.order_of(m.client_order_id).status == S.ACCEPTED)
        fake.fill(m.client_order_id, price="190.10")
        await w.until(lambda: w.order_of(m.client_order_id).status == S.FILLED)
        assert w.engine.proj.positions.positions["AAPL"].qty == 5

        lim = await w.order(symbol="MSFT", qty="10", order_type="limit", limit_price=D("399"))
        await w.until(lambda: w.order_of(lim.client_order_id).status == S.ACCEPTED)
        fake.fill(lim.client_order_id, qty="4", price="399")
        await w.until(lambda: w.order_of(lim.client_order_id).status == S.PARTIALLY_FILLED)
        fake.fill(lim.client_order_id, qty="6", price="398.5")
        await w.until(lambda: w.order_of(lim.client_order_id).status == S.FILLED)
        o = w.order_of(lim.client_order_id)
        assert o.filled_qty == 10 and o.avg_fill_price == (4 * D(399) + 6 * D("398.5")) / 10

        frac = await w.order(qty=None, notional=D("50"))  # $50 of AAPL: a fractional qty
        assert isinstance(frac, RiskApproved) and frac.qty is not None and frac.qty < 1
        await w.until(lambda: w.order_of(frac.client_order_id).status == S.ACCEPTED)
        fake.fill(frac.client_order_id, price="190")
        await w.until(lambda: w.order_of(frac.client_order_id).status == S.FILLED)
        assert w.engine.proj.positions.positions["AAPL"].qty == 5 + frac.qty

        c = await w.order(symbol="F", qty="3", order_type="limit", limit_price=D("11.5"))
        await w.until(lambda: w.order_of(c.client_order_id).status == S.ACCEPTED)
        await w.engine.execution.cancel(c.client_order_id, reason="test")
        await w.until(lambda: w.order_of(c.client_order_id).status == S.CANCELED)

        fake.reject_next_submit(status=403, message="insufficient buying power")
        r = await w.order(symbol="F", qty="2")
        await w.until(lambda: w.order_of(r.client_order_id).status == S.REJECTED)
        assert "insufficient buying power" in w.order_of(r.client_order_id).reason

        e = await w.order(symbol="F", qty="2", order_type="limit", limit_price=D("11.6"))
        await w.until(lambda: w.order_of(e.client_order_id).status == S.ACCEPTED)
        fake.expire(e.client_order_id)
        await w.until(lambda: w.order_of(e.client_order_id).status == S.EXPIRED)

        events = await w.events()
        assert not [x for x in events if isinstance(x, IllegalTransition)]
        assert w.engine.proj.orders.open_ids == set()


@pytest.mark.parametrize("fault", ["timeout", "gateway_504", "disconnect"])
async def test_ambiguous_submit_ends_with_exactly_one_order(tmp_path: Path, fake: FakeAlpaca,
                                                            fault: str) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        if fault == "timeout":
            fake.delay_next("submit_order", seconds=3.0)  # created at once, answered too late
        elif fault == "gateway_504":
            fake.gateway_timeout_after_create()
        else:
            fake.close_next("submit_order", after_handling=True)
        d = await w.order(qty="2")
        assert isinstance(d, RiskApproved)
        await w.until(lambda: w.order_of(d.client_order_id).status == S.ACCEPTED)
        assert fake.order_count_by_client_id()[d.client_order_id] == 1
        assert fake.submit_attempts_by_client_id()[d.client_order_id] == 1
        ev = await w.events()
        amb = [x for x in ev if isinstance(x, OrderSubmitAmbiguous)]
        assert len(amb) == 1 and amb[0].client_order_id == d.client_order_id
        fake.fill(d.client_order_id, price="190")
        await w.until(lambda: w.order_of(d.client_order_id).status == S.FILLED)
        assert w.engine.proj.positions.positions["AAPL"].qty == 2
        fake.release_hung_requests()


async def test_stream_drop_between_partial_fills_books_both_once(tmp_path: Path,
                                                                 fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        d = await w.order(qty="10")
        await w.until(lambda: w.order_of(d.client_order_id).status == S.ACCEPTED)
        fake.drop_stream_after_next_update()
        fake.fill(d.client_order_id, qty="4", price="190")  # delivered, then the socket drops
        fake.suppress_updates(True)
        fake.fill(d.client_order_id, qty="6", price="191")  # happens while we are not listening
        fake.suppress_updates(False)
        await w.until(lambda: w.order_of(d.client_order_id).status == S.FILLED, timeout=15)
        fills = fills_of(await w.events(), d.client_order_id)
        assert sum(f.qty for f in fills) == 10 and len(fills) == 2
        assert {f.source for f in fills} == {"stream", "gap_fill"}
        assert w.engine.execution.gap_fills >= 1
        assert w.engine.proj.positions.positions["AAPL"].qty == 10
        assert w.engine.proj.positions.positions["AAPL"].avg_cost == (4 * 190 + 6 * 191) / D(10)


async def test_duplicate_and_out_of_order_updates_are_counted_once(tmp_path: Path,
                                                                   fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        d = await w.order(qty="10")
        await w.until(lambda: w.order_of(d.client_order_id).status == S.ACCEPTED)
        fake.duplicate_next_updates(2)
        fake.reorder_next_update()  # the first partial fill arrives after the second
        fake.fill(d.client_order_id, qty="3", price="190")
        fake.fill(d.client_order_id, qty="7", price="190.5")
        await w.until(lambda: w.order_of(d.client_order_id).filled_qty == 10)
        await w.tick("AAPL", "190")  # a later event: everything before it is processed
        fills = fills_of(await w.events(), d.client_order_id)
        assert sum(f.qty for f in fills) == 10
        assert len({f.execution_id for f in fills}) == len(fills)
        assert w.order_of(d.client_order_id).status == S.FILLED
        assert w.engine.proj.positions.positions["AAPL"].qty == 10


async def test_alpaca_words_the_engine_does_not_act_on_are_recorded_and_trading_goes_on(
        tmp_path: Path, fake: FakeAlpaca) -> None:
    """An event name Alpaca never documented, and a documented one nothing acts on yet
    (`stopped`), arrive over the real stream for a live order of ours: both end up in the log
    as UnknownBrokerMessage, the order does not move, and its next fill is booked."""
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        d = await w.order(qty="10", order_type="limit", limit_price=D("189"))
        await w.until(lambda: w.order_of(d.client_order_id).status == S.ACCEPTED)
        order_json = fake.order(d.client_order_id)

        for event in ("order_teleported", "stopped"):
            frame = json.dumps({"stream": "trade_updates", "data": {
                "event": event, "order": order_json, "timestamp": "2026-01-02T15:04:05Z"}})
            assert push_raw_trade_frame(fake, frame) == 1
        fake.fill(d.client_order_id, price="189")
        await w.until(lambda: w.order_of(d.client_order_id).status == S.FILLED)
        events = await w.events()
        recorded = [e for e in events if isinstance(e, UnknownBrokerMessage)]
        assert len(recorded) == 2, recorded
        assert "unknown event 'order_teleported'" in recorded[0].error
        assert "order_teleported" in recorded[0].raw  # the frame, verbatim
        assert "'stopped'" in recorded[1].raw and "not acted on" in recorded[1].error
        assert not [e for e in events if isinstance(e, IllegalTransition)]
        assert sum(f.qty for f in fills_of(events, d.client_order_id)) == 10
