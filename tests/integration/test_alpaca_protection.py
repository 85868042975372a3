"""Protection at the broker, end to end: engine -> AlpacaBroker (alpaca-py) -> fake Alpaca ->
trade updates -> events -> projections. Legs are orders of their own in the log under our
leg ids, whatever Alpaca calls them."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from events.catalogue import (
    FillReceived,
    RiskApproved,
    StopLoss,
    TakeProfit,
    UnknownBrokerMessage,
    leg_client_order_id,
)
from projections.orders import OrderStatus
from tests.fake_alpaca import FakeAlpaca
from tests.integration.alpaca_world import AlpacaWorld, alpaca_world
from tests.integration.test_alpaca_execution import RICH

D = Decimal
S = OrderStatus



def legs_at_fake(fake: FakeAlpaca, coid: str) -> dict[str, dict[str, Any]]:
    """The fake's legs of our parent, by role."""
    return {("take_profit" if leg["type"] == "limit" else "stop_loss"): leg
            for leg in fake.legs(coid)}


async def bracket(w: AlpacaWorld, qty: str = "10", tp: str = "200", sl: str = "180",
                  **kw: Any) -> RiskApproved:
    d = await w.order(qty=qty, order_class="bracket", time_in_force="gtc",
                      take_profit=TakeProfit(limit_price=D(tp)),
                      stop_loss=StopLoss(stop_price=D(sl)), **kw)
    assert isinstance(d, RiskApproved), d
    return d


async def test_bracket_held_partial_fill_live_take_profit_fills_stop_canceled(
        tmp_path: Path, fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        d = await bracket(w)
        p = d.client_order_id
        tp, sl = leg_client_order_id(p, "take_profit"), leg_client_order_id(p, "stop_loss")
        await w.until(lambda: w.order_of(p).status == S.ACCEPTED)
        assert w.order_of(tp).status == w.order_of(sl).status == S.HELD
        at_fake = legs_at_fake(fake, p)
        # Alpaca's names for the legs are not ours; the log knows them by broker id
        assert at_fake["stop_loss"]["client_order_id"] != sl
        assert w.order_of(sl).broker_order_id == at_fake["stop_loss"]["id"]

        fake.fill(p, qty="4", price="190")
        await w.until(lambda: w.order_of(p).status == S.PARTIALLY_FILLED)
        assert w.order_of(tp).status == S.HELD  # legs wait for the whole parent
        fake.fill(p, price="190.5")
        await w.until(lambda: w.order_of(tp).status == S.ACCEPTED)  # take-profit live
        assert w.order_of(sl).is_open  # the stop works (Alpaca shows it held)
        fake.tick("AAPL", "201")
        await w.until(lambda: w.order_of(sl).status == S.CANCELED)
        assert w.order_of(tp).status == S.FILLED and w.order_of(tp).filled_qty == 10
        assert w.engine.proj.positions.positions["AAPL"].qty == 0
        events = await w.events()
        assert not [e for e in events if isinstance(e, UnknownBrokerMessage)]
        # reconciliation agrees with the broker: nothing open, no discrepancy
        assert await w.engine.reconciler.orders(startup=False) == 0


async def test_stop_loss_gap_fill_cancels_take_profit(tmp_path: Path, fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        d = await bracket(w, qty="5")
        p = d.client_order_id
        sl = leg_client_order_id(p, "stop_loss")
        await w.until(lambda: w.order_of(p).status == S.ACCEPTED)
        fake.fill(p, price="190")
        await w.until(lambda: w.order_of(leg_client_order_id(p, "take_profit")).status
                      == S.ACCEPTED)
        fake.tick("AAPL", "171.25")  # gapped far through the 180 stop
        await w.until(lambda: w.order_of(sl).status == S.FILLED)
        fills = [e for e in await w.events() if isinstance(e, FillReceived)
                 and e.client_order_id == sl]
        assert [(f.qty, f.price) for f in fills] == [(D(5), D("171.25"))]
        await w.until(lambda: w.order_of(leg_client_order_id(p, "take_profit")).status
                      == S.CANCELED)
        assert w.engine.proj.positions.positions["AAPL"].qty == 0


async def test_oco_on_an_existing_position(tmp_path: Path, fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        buy = await w.order(qty="6", stop_price=D("180"))
        await w.until(lambda: w.order_of(buy.client_order_id).status == S.ACCEPTED)
        fake.fill(buy.client_order_id, price="190")
        await w.until(lambda: w.order_of(buy.client_order_id).status == S.FILLED)
        oco = await w.order(side="sell", qty="6", order_type="limit", limit_price=D("200"),
                            order_class="oco", time_in_force="gtc",
                            take_profit=TakeProfit(limit_price=D("200")),
                            stop_loss=StopLoss(stop_price=D("181")))
        assert isinstance(oco, RiskApproved), oco
        p = oco.client_order_id
        sl = leg_client_order_id(p, "stop_loss")
        await w.until(lambda: w.order_of(p).status == S.ACCEPTED
                      and w.order_of(sl).status == S.ACCEPTED)
        fake.tick("AAPL", "180.5")
        await w.until(lambda: w.order_of(sl).status == S.FILLED)
        await w.until(lambda: w.order_of(p).status == S.CANCELED)
        assert w.engine.proj.positions.positions["AAPL"].qty == 0


async def test_oto_entry_with_a_stop_and_replace_of_the_stop(tmp_path: Path,
                                                             fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        d = await w.order(qty="4", order_class="oto", time_in_force="gtc",
                          stop_loss=StopLoss(stop_price=D("180")))
        assert isinstance(d, RiskApproved), d
        p = d.client_order_id
        sl = leg_client_order_id(p, "stop_loss")
        await w.until(lambda: w.order_of(p).status == S.ACCEPTED)
        fake.fill(p, price="190")
        await w.until(lambda: w.order_of(p).status == S.FILLED)
        new = await w.engine.execution.replace(sl, stop_price=D("185"))
        assert new is not None
        await w.until(lambda: new in w.engine.proj.orders.orders)
        assert w.order_of(sl).status == S.REPLACED
        assert w.order_of(new).stop_price == D("185") and w.order_of(new).qty == 4
        assert legs_at_fake(fake, p)["stop_loss"]["client_order_id"] == new
        fake.tick("AAPL", "184")
        await w.until(lambda: w.order_of(new).status == S.FILLED)
        assert w.engine.proj.positions.positions["AAPL"].qty == 0


async def test_a_rejected_leg_and_a_leg_of_an_unknown_parent(tmp_path: Path,
                                                             fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        d = await bracket(w, qty="2")
        p = d.client_order_id
        sl = leg_client_order_id(p, "stop_loss")
        await w.until(lambda: w.order_of(p).status == S.ACCEPTED)
        fake.fill(p, price="190")
        await w.until(lambda: w.order_of(leg_client_order_id(p, "take_profit")).status
                      == S.ACCEPTED)
        fake.reject(legs_at_fake(fake, p)["stop_loss"]["id"])
        await w.until(lambda: w.order_of(sl).status == S.REJECTED)

        # someone else's bracket at the broker: its legs' messages are unknown, recorded
        from alpaca.trading.requests import MarketOrderRequest, StopLossRequest, TakeProfitRequest
        other = fake.trading_client().submit_order(MarketOrderRequest(
            symbol="MSFT", qty=1, side="buy", time_in_force="gtc", order_class="bracket",
            take_profit=TakeProfitRequest(limit_price=420), stop_loss=StopLossRequest(
                stop_price=380)))
        fake.fill(str(other.id), price="400")  # its take-profit leg goes live: "new"
        # the engine keeps running: a new order goes through (its messages come after)
        m = await w.order(symbol="F", qty="1")
        await w.until(lambda: w.order_of(m.client_order_id).status == S.ACCEPTED)
        events = await w.events()
        unknown = [e.raw for e in events if isinstance(e, UnknownBrokerMessage)]
        assert any(other.client_order_id in raw for raw in unknown)  # the parent's messages
        assert any(str(other.legs[0].id) in raw or other.legs[0].client_order_id in raw
                   for raw in unknown)  # and its leg's


async def test_trailing_stop_moves_as_the_broker_reports_it(tmp_path: Path,
                                                             fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        buy = await w.order(qty="3", stop_price=D("180"))
        await w.until(lambda: w.order_of(buy.client_order_id).status == S.ACCEPTED)
        fake.fill(buy.client_order_id, price="190")
        await w.until(lambda: w.order_of(buy.client_order_id).status == S.FILLED)
        trail = await w.order(side="sell", qty="3", order_type="trailing_stop",
                              trail_percent=D("2"), time_in_force="gtc")
        assert isinstance(trail, RiskApproved), trail
        coid = trail.client_order_id
        await w.until(lambda: w.order_of(coid).status == S.ACCEPTED)
        fake.tick("AAPL", "200")  # Alpaca pushes nothing for this; a lookup shows it
        await w.engine.reconciler.orders(startup=False)
        await w.until(lambda: w.order_of(coid).hwm == D(200))
        assert w.order_of(coid).stop_price == D("196")
        fake.tick("AAPL", "195.5")
        await w.until(lambda: w.order_of(coid).status == S.FILLED)
        assert w.engine.proj.positions.positions["AAPL"].qty == 0


async def test_parent_canceled_partly_filled_leaves_legs_for_what_filled(
        tmp_path: Path, fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RICH) as w:
        d = await bracket(w, qty="10", order_type="limit", limit_price=D("189"))
        p = d.client_order_id
        tp, sl = leg_client_order_id(p, "take_profit"), leg_client_order_id(p, "stop_loss")
        await w.until(lambda: w.order_of(p).status == S.ACCEPTED)
        fake.fill(p, qty="4", price="189")
        await w.until(lambda: w.order_of(p).status == S.PARTIALLY_FILLED)
        await w.engine.execution.cancel(p, reason="test")
        await w.until(lambda: w.order_of(p).status == S.CANCELED)
        await w.until(lambda: w.order_of(tp).status == S.ACCEPTED
                      and w.order_of(sl).status == S.ACCEPTED)
        assert w.order_of(tp).qty == w.order_of(sl).qty == 4
        assert {leg["qty"] for leg in fake.legs(p)} == {"4"}
        fake.tick("AAPL", "179")
        await w.until(lambda: w.order_of(sl).status == S.FILLED)
        await w.until(lambda: w.order_of(tp).status == S.CANCELED)
        assert w.engine.proj.positions.positions["AAPL"].qty == 0
