from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from engine.brokers.alpaca_vocab import update_kind
from engine.brokers.base import AmbiguousSubmitError, BrokerOrder, OrderRequest, TradeUpdate
from engine.brokers.kinds import OrderState as B
from engine.brokers.simulated import SimConfig
from events.catalogue import (
    FillReceived,
    IllegalTransition,
    OrderRejected,
    OrderSubmitAmbiguous,
    OrderSubmitRequested,
    RiskApproved,
)
from projections.orders import OrderStatus
from tests.execution.simworld import T0, mk_bar, sim_world

D = Decimal


async def test_market_order_fills_at_next_bar_open_not_signal_close(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        await w.bar(mk_bar("AAPL", 0, "100", c="105"))  # the signal bar closes at 105
        d = await w.order(qty="10")
        assert isinstance(d, RiskApproved)
        assert w.proj.positions.positions.get("AAPL") is None  # nothing fills on bar 0
        await w.bar(mk_bar("AAPL", 1, "101", h="110", lo="99", c="108"))
        pos = w.proj.positions.positions["AAPL"]
        assert pos.qty == 10 and pos.avg_cost == D(101)  # bar 1's open, not 105 or 108
        events = await w.events()
        fills = [e for e in events if isinstance(e, FillReceived)]
        assert [f.broker_time for f in fills] == [mk_bar("AAPL", 1, "101").start]
        assert not [e for e in events if isinstance(e, IllegalTransition)]  # a clean lifecycle
        assert w.proj.orders.orders[d.client_order_id].status == OrderStatus.FILLED


async def test_limit_order_fills_only_when_traded_through(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        await w.bar(mk_bar("AAPL", 0, "100"))
        d = await w.order(qty="5", order_type="limit", limit_price=D("98"))
        await w.bar(mk_bar("AAPL", 1, "100", h="101", lo="98.5"))
        assert w.proj.orders.orders[d.client_order_id].filled_qty == 0
        await w.bar(mk_bar("AAPL", 2, "99", h="99", lo="97"))
        assert w.proj.positions.positions["AAPL"].avg_cost == D(98)
        await w.bar(mk_bar("AAPL", 3, "97"))  # gaps below the limit: fills at the open
        d2 = await w.order(qty="1", order_type="limit", limit_price=D("98"))
        await w.bar(mk_bar("AAPL", 4, "96", h="97", lo="95"))
        assert w.proj.orders.orders[d2.client_order_id].avg_fill_price == D(96)


async def test_volume_cap_gives_partial_fills(log_path: Path) -> None:
    async with sim_world(log_path, config=SimConfig(volume_participation=D("0.1"))) as w:
        await w.bar(mk_bar("AAPL", 0, "100", v="300"))
        d = await w.order(qty="100")
        for i in range(1, 5):
            await w.bar(mk_bar("AAPL", i, str(100 + i), v="300"))
        fills = [e for e in await w.events() if isinstance(e, FillReceived)]
        assert [f.qty for f in fills] == [30, 30, 30, 10]
        assert [f.price for f in fills] == [101, 102, 103, 104]
        assert fills[-1].order_done and not fills[0].order_done
        order = w.proj.orders.orders[d.client_order_id]
        assert order.status == OrderStatus.FILLED and order.filled_qty == 100


async def test_fractional_notional_and_fees_slippage(log_path: Path) -> None:
    cfg = SimConfig(slippage_bps=D(10), fee_bps=D(5), min_fee=D("0.01"))
    async with sim_world(log_path, cash="200", config=cfg) as w:
        await w.bar(mk_bar("AAPL", 0, "600"))
        d = await w.order(qty=None, notional=D("150"))
        assert isinstance(d, RiskApproved) and d.qty is not None and d.qty < 1
        await w.bar(mk_bar("AAPL", 1, "600"))
        f = next(e for e in await w.events() if isinstance(e, FillReceived))
        assert f.price == D("600.6000") and f.qty == d.qty
        assert f.fee == (f.qty * f.price * D("0.0005")).quantize(D("0.01"))


async def _run_session(path: Path) -> str:
    async with sim_world(path, config=SimConfig(volume_participation=D("0.5"), slippage_bps=D(3))) as w:
        for i in range(30):
            await w.bar(mk_bar("AAPL", i, str(100 + (i * 7) % 5), v="40"))
            if i % 4 == 0:
                await w.order(qty=str(5 + i % 3), intent_id=f"s{i}")
            if i % 4 == 2 and w.proj.positions.positions.get("AAPL"):
                q = w.proj.positions.positions["AAPL"].qty
                if q > 0:
                    await w.order(side="sell", qty=str(min(q, D(4))), intent_id=f"x{i}")
        events = await w.events()
    enc = msgspec.msgpack.Encoder()
    return hashlib.sha256(b"".join(enc.encode(e) for e in events)).hexdigest()


async def test_same_input_gives_identical_fills(tmp_path: Path) -> None:
    a = await _run_session(tmp_path / "a.sqlite")
    b = await _run_session(tmp_path / "b.sqlite")
    assert a == b


async def test_duplicate_and_out_of_order_updates(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        await w.bar(mk_bar("AAPL", 0, "100"))
        d = await w.order(qty="10")
        o = w.proj.orders.orders[d.client_order_id]

        def upd(event: str, cum: str, exec_id: str | None = None, qty: str | None = None) -> TradeUpdate:
            order = BrokerOrder(broker_order_id=o.broker_order_id or "", symbol="AAPL",
                                client_order_id=o.client_order_id, side="buy",
                                order_type="market", qty=D(10), filled_qty=D(cum),
                                filled_avg_price=D(100),
                                status="filled" if cum == "10" else "partially_filled",
                                state=B.FILLED if cum == "10" else B.PARTIALLY_FILLED)
            kind = update_kind(event)
            assert kind is not None
            return TradeUpdate(kind=kind, event=event, order=order, timestamp=T0, execution_id=exec_id,
                               qty=D(qty) if qty else None, price=D(100))

        second = upd("fill", "10", "e2", "6")
        first = upd("partial_fill", "4", "e1", "4")
        for u in (second, second, first, first, upd("new", "0")):  # late, repeated, stale
            await w.execution.handle(u)
        await w.log.flush()
        assert o.filled_qty == 10 and w.proj.positions.positions["AAPL"].qty == 10
        assert o.status == OrderStatus.FILLED
        illegal = [e for e in await w.events() if isinstance(e, IllegalTransition)]
        assert [(e.from_state, e.event_type) for e in illegal] == [("filled", "order_accepted")]
        assert w.proj.orders.anomalies  # the projection recorded them too


class FlakyBroker:
    """Wraps the sim: the first submit really places the order, then reports a timeout."""

    def __init__(self, inner: Any, *, place: bool) -> None:
        self.inner = inner
        self.place = place
        self.name = "flaky"
        self.submits: list[str] = []

    async def submit(self, request: OrderRequest) -> BrokerOrder:
        self.submits.append(request.client_order_id)
        if len(self.submits) == 1:
            if self.place:
                await self.inner.submit(request)
            raise AmbiguousSubmitError("timeout", "read timed out")
        return await self.inner.submit(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_timed_out_submit_is_resolved_by_lookup_not_resubmitted(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        flaky = FlakyBroker(w.broker, place=True)
        w.execution._broker = flaky  # type: ignore[assignment]
        await w.bar(mk_bar("AAPL", 0, "100"))
        d = await w.order(qty="3")
        assert flaky.submits == [d.client_order_id]  # looked up, never sent twice
        assert w.proj.orders.orders[d.client_order_id].status == OrderStatus.ACCEPTED
        assert w.broker.submits == 1
        ev = await w.events()
        assert any(isinstance(e, OrderSubmitAmbiguous) and e.kind == "timeout" for e in ev)


async def test_genuinely_not_found_is_resubmitted_with_same_client_id(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        flaky = FlakyBroker(w.broker, place=False)
        w.execution._broker = flaky  # type: ignore[assignment]
        await w.bar(mk_bar("AAPL", 0, "100"))
        d = await w.order(qty="3")
        assert flaky.submits == [d.client_order_id, d.client_order_id]
        attempts = [e.attempt for e in await w.events() if isinstance(e, OrderSubmitRequested)]
        assert attempts == [1, 2]
        await w.bar(mk_bar("AAPL", 1, "100"))
        assert w.proj.positions.positions["AAPL"].qty == 3


async def test_broker_rejection_is_recorded_and_releases_the_reservation(log_path: Path) -> None:
    async with sim_world(log_path, cash="1000") as w:
        await w.bar(mk_bar("AAPL", 0, "100"))
        w.broker.cash = D(50)  # the broker knows better than our snapshot
        d = await w.order(qty="5")
        o = w.proj.orders.orders[d.client_order_id]
        assert o.status == OrderStatus.REJECTED and "insufficient buying power" in o.reason
        assert w.proj.orders.reserved["AAPL"].buy_qty == 0
        rej = [e for e in await w.events() if isinstance(e, OrderRejected)]
        assert len(rej) == 1 and rej[0].by_broker


async def test_cancel_and_cancel_rejected(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        await w.bar(mk_bar("AAPL", 0, "100"))
        d = await w.order(qty="5", order_type="limit", limit_price=D("95"))
        await w.execution.cancel(d.client_order_id, reason="test")
        await w.pump()
        assert w.proj.orders.orders[d.client_order_id].status == OrderStatus.CANCELED
        d2 = await w.order(qty="5")
        await w.bar(mk_bar("AAPL", 1, "100"))
        await w.execution.cancel(d2.client_order_id, reason="too late")
        await w.log.flush()
        assert w.proj.orders.orders[d2.client_order_id].status == OrderStatus.FILLED


async def test_day_orders_expire_next_session(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        await w.bar(mk_bar("AAPL", 0, "100"))
        d = await w.order(qty="5", order_type="limit", limit_price=D("95"))
        await w.bar(mk_bar("AAPL", 24 * 60, "100"))  # the next day
        assert w.proj.orders.orders[d.client_order_id].status == OrderStatus.EXPIRED


async def test_fill_at_signal_close_only_by_name_and_with_a_warning(
        log_path: Path, caplog: Any) -> None:
    import logging

    with caplog.at_level(logging.WARNING):
        async with sim_world(log_path, config=SimConfig(fill_at_signal_close=True)) as w:
            await w.bar(mk_bar("AAPL", 0, "100", c="105"))
            d = await w.order(qty="2")
            assert w.proj.orders.orders[d.client_order_id].avg_fill_price == D(105)
    assert "LOOK AHEAD" in caplog.text
    assert SimConfig().fill_at_signal_close is False  # the default never looks ahead
