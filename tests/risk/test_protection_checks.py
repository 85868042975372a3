"""The gate's protection rules: each check is shown refusing on its condition alone (the
same intent with that one thing fixed is approved), approvals carry their legs, and the
loss budget counts what live stops allow."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from events.catalogue import OrderAccepted, StopLoss, TakeProfit, leg_client_order_id
from projections.orders import OrderStatus
from tests.factories import approved, fill, submitted_chain
from tests.risk.world import PRICES, approved_, codes, generous, trading_world

D = Decimal


def bracket(sl: str = "98", tp: str = "110", **kw: Any) -> dict[str, Any]:
    return dict(order_class="bracket", stop_loss=StopLoss(stop_price=D(sl)),
                take_profit=TakeProfit(limit_price=D(tp)), **kw)


async def test_bracket_is_approved_with_its_legs_and_budget_to_its_stop(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        a = approved_(await w.submit(qty="2", **bracket()))
        assert a.order_class == "bracket" and a.risk_stop == D(98) and not a.protective
        assert [(leg.client_order_id, leg.role, leg.side, leg.order_type, leg.qty) for leg in a.legs] == [
            (leg_client_order_id(a.client_order_id, "take_profit"), "take_profit", "sell",
             "limit", D(2)),
            (leg_client_order_id(a.client_order_id, "stop_loss"), "stop_loss", "sell", "stop",
             D(2))]
        # 2 x (100.50 - 98) + 0.5% gap allowance of 2 x 100.50 = 6.005
        assert a.at_risk == D("6.00")
        legs = [w.proj.orders.orders[leg.client_order_id] for leg in a.legs]
        assert [o.status for o in legs] == [OrderStatus.HELD, OrderStatus.HELD]


async def test_stop_loss_on_the_wrong_side_alone_refuses(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        assert codes(await w.submit(**bracket(sl="100"))) == {"STOP_WRONG_SIDE"}
        approved_(await w.submit(**bracket(sl="99.99")))
        # A plain sell stop above the market would trigger at once.
        await w.hold("MSFT", "3", "50")
        assert codes(await w.submit(symbol="MSFT", side="sell", qty="3", order_type="stop",
                                    stop_price="50.5")) == {"STOP_WRONG_SIDE"}
        a = approved_(await w.submit(symbol="MSFT", side="sell", qty="3", order_type="stop",
                                     stop_price="49"))
        assert a.protective and a.stop_price == D(49) and a.at_risk == 0


async def test_take_profit_on_the_wrong_side_alone_refuses(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        assert codes(await w.submit(**bracket(tp="99"))) == {"TAKE_PROFIT_WRONG_SIDE"}
        approved_(await w.submit(**bracket(tp="100.01")))


async def test_take_profit_closer_than_a_cent_refuses(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000", prices={**PRICES, "MSFT": "0.5"}) as w:
        kw = {"symbol": "MSFT", "qty": "10", "order_class": "oto",
                  "order_type": "limit", "limit_price": "0.5"}
        assert codes(await w.submit(**kw, take_profit=TakeProfit(limit_price=D("0.505")))) == {
            "TAKE_PROFIT_TOO_CLOSE"}
        approved_(await w.submit(**kw, take_profit=TakeProfit(limit_price=D("0.51"))))


async def test_trail_zero_alone_refuses(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        await w.hold("AAPL", "5", "100")
        kw = {"side": "sell", "qty": "5", "order_type": "trailing_stop", "time_in_force": "gtc"}
        assert codes(await w.submit(**kw, trail_percent="0")) == {"TRAIL_NOT_POSITIVE"}
        assert codes(await w.submit(**kw, trail_price="-1")) == {"TRAIL_NOT_POSITIVE"}
        a = approved_(await w.submit(**kw, trail_percent="2"))
        assert a.order_type == "trailing_stop" and a.trail_percent == D(2) and a.protective


async def test_fractional_bracket_alone_refuses(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        assert codes(await w.submit(qty="1.5", **bracket())) == {"ADVANCED_ORDER_WHOLE_SHARES"}
        approved_(await w.submit(qty="1", **bracket()))
        assert codes(await w.submit(qty=None, notional="150", **bracket())) == {
            "ADVANCED_ORDER_WHOLE_SHARES"}


async def test_advanced_order_time_in_force_alone_refuses(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        assert codes(await w.submit(**bracket(time_in_force="ioc"))) == {
            "ADVANCED_ORDER_TIME_IN_FORCE"}
        approved_(await w.submit(**bracket(time_in_force="gtc")))


async def test_sub_penny_price_alone_refuses(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        assert codes(await w.submit(**bracket(sl="98.005"))) == {"SUB_PENNY_PRICE"}
        approved_(await w.submit(**bracket(sl="98.01")))
        assert codes(await w.submit(order_type="limit", limit_price="100.123")) == {
            "SUB_PENNY_PRICE"}


async def test_require_protection_refuses_unprotected_entries_only(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000",
                             limits=generous(require_protection=True)) as w:
        assert codes(await w.submit(qty="1")) == {"PROTECTION_REQUIRED"}
        approved_(await w.submit(qty="1", **bracket()))
        # Reducing orders always pass.
        await w.hold("MSFT", "4", "50")
        approved_(await w.submit(symbol="MSFT", side="sell", qty="4"))
        # A fractional entry can not carry a broker-held stop: its own code.
        assert codes(await w.submit(qty="0.5")) == {"FRACTIONAL_PROTECTION_UNAVAILABLE"}


async def test_engine_side_protection_is_recorded_when_allowed(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000", limits=generous(
            require_protection=True, engine_side_protection=True)) as w:
        a = approved_(await w.submit(qty="0.5"))
        assert a.engine_side


async def test_position_budget_is_what_its_live_stop_allows(log_path: Path) -> None:
    """A long of 10 at 100 recorded with a 20.00 budget: once a stop at 95 is live at the
    broker, the budget is 10 x (100 - 95) + the gap allowance (5.00) = 55.00, so an order
    whose own risk fits under the old figure (20 + 1 + 5) is refused under the true one."""
    limits = generous(daily_loss_limit=D(60), weekly_loss_limit=D(1000),
                      daily_loss_limit_pct=None)
    async with trading_world(log_path, cash="10000", limits=limits) as w:
        await w.hold("AAPL", "10", "100", at_risk="20")
        approved_(await w.submit(symbol="MSFT", qty="1"))  # 1.00 of budget: 21 <= 60
        stop = "stop-1"
        for e in [approved(stop, side="sell", qty="10", order_type="stop",
                           stop_price=D(95), protective=True, reduce_only=True,
                           ts=w.clock.now()), *submitted_chain(stop, w.clock.now())]:
            await w.log.append(e)
        assert [o.client_order_id for o in w.gate_view().protection("AAPL")] == [stop]
        d = await w.submit(symbol="MSFT", qty="5")  # 5.03 more: 55 + 1 + 5.03 > 60
        assert "DAILY_LOSS_LIMIT" in codes(d)
        # The stop fills: flat, no budget held.
        await w.log.append(fill(stop, "10", "95", side="sell", done=True, ts=w.clock.now()))
        approved_(await w.submit(symbol="MSFT", qty="5"))


async def test_held_leg_of_an_unfilled_parent_protects_nothing(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        a = approved_(await w.submit(qty="2", **bracket()))
        assert w.gate_view().protection("AAPL") == []
        for e in [*submitted_chain(a.client_order_id, w.clock.now()),
                  fill(a.client_order_id, "2", "100", done=True, ts=w.clock.now()),
                  OrderAccepted(ts=w.clock.now(), client_order_id=a.legs[0].client_order_id,
                                broker_order_id="b-tp")]:
            await w.log.append(e)
        assert [o.leg_role for o in w.gate_view().protection("AAPL")] == ["stop_loss"]


async def test_a_second_stop_for_a_guarded_position_alone_refuses(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        await w.hold("MSFT", "4", "50")
        kw = {"symbol": "MSFT", "side": "sell", "order_type": "stop", "time_in_force": "gtc"}
        first = approved_(await w.submit(qty="3", stop_price="48", **kw))
        assert codes(await w.submit(qty="2", stop_price="47", **kw)) == {
            "PROTECTION_EXCEEDS_POSITION"}
        approved_(await w.submit(qty="1", stop_price="47", **kw))  # the unguarded share
        assert first.protective
