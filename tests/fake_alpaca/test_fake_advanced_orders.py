# ruff: noqa: F811  (pytest fixtures imported by name)
"""Stop, stop-limit and trailing-stop orders and the bracket / OCO / OTO classes, driven by
the real alpaca-py request types against the fake (rules and sources: advanced.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderClass, OrderSide, OrderStatus, OrderType, TimeInForce
from alpaca.trading.models import Order, TradeUpdate
from alpaca.trading.requests import (
    GetOrderByIdRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLimitOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
    TrailingStopOrderRequest,
)

from tests.fake_alpaca import Collector, StreamThread
from tests.fake_alpaca.fixtures import (  # noqa: F401  (pytest fixtures)
    alpaca_trading_client,
    fake_alpaca,
)

GTC = TimeInForce.GTC


def bracket(qty: float = 10, tp: float = 110, sl: float = 95, sl_limit: float | None = None,
            tif: TimeInForce = GTC, cid: str | None = None,
            limit: float | None = None) -> MarketOrderRequest | LimitOrderRequest:
    legs = {"order_class": OrderClass.BRACKET, "take_profit": TakeProfitRequest(limit_price=tp),
            "stop_loss": StopLossRequest(stop_price=sl, limit_price=sl_limit)}
    if limit is not None:
        return LimitOrderRequest(symbol="AAPL", qty=qty, side=OrderSide.BUY, time_in_force=tif,
                                 limit_price=limit, client_order_id=cid, **legs)
    return MarketOrderRequest(symbol="AAPL", qty=qty, side=OrderSide.BUY, time_in_force=tif,
                              client_order_id=cid, **legs)


def events(fake, order_id: str) -> list[str]:
    return [u["event"] for u in fake.trade_updates_log() if u["order_id"] == order_id]


def api_error(fn, *args) -> APIError:
    with pytest.raises(APIError) as err:
        fn(*args)
    return err.value


def test_stop_and_stop_limit_trigger_on_price(fake_alpaca, alpaca_trading_client):
    c = alpaca_trading_client
    fake_alpaca.set_position("AAPL", 10, 100)
    fake_alpaca.set_price("AAPL", 100)
    stop = c.submit_order(StopOrderRequest(symbol="AAPL", qty=4, side=OrderSide.SELL,
                                           time_in_force=GTC, stop_price=95))
    stop_limit = c.submit_order(StopLimitOrderRequest(
        symbol="AAPL", qty=6, side=OrderSide.SELL, time_in_force=GTC, stop_price=94,
        limit_price=93.5))
    assert stop.type == OrderType.STOP and stop.stop_price == "95"
    assert stop_limit.type == OrderType.STOP_LIMIT and stop_limit.limit_price == "93.5"
    assert fake_alpaca.tick("AAPL", "95.5") == []  # above both stops: nothing
    assert fake_alpaca.tick("AAPL", "93") == [str(stop.id)]  # stop fills at the gap price;
    got = c.get_order_by_id(stop.id)  # the stop-limit triggered but 93 < its limit 93.5
    assert got.status == OrderStatus.FILLED and got.filled_avg_price == "93"
    assert c.get_order_by_id(stop_limit.id).status == OrderStatus.NEW
    assert fake_alpaca.tick("AAPL", "93.6") == [str(stop_limit.id)]  # now a working limit
    assert c.get_order_by_id(stop_limit.id).filled_avg_price == "93.6"
    assert fake_alpaca.positions() == []


def test_trailing_stop_ratchets_with_hwm_and_fills(fake_alpaca, alpaca_trading_client):
    c = alpaca_trading_client
    fake_alpaca.set_position("AAPL", 5, 100)
    fake_alpaca.set_price("AAPL", 100)
    pct = c.submit_order(TrailingStopOrderRequest(symbol="AAPL", qty=2, side=OrderSide.SELL,
                                                  time_in_force=GTC, trail_percent=2))
    usd = c.submit_order(TrailingStopOrderRequest(symbol="AAPL", qty=3, side=OrderSide.SELL,
                                                  time_in_force=GTC, trail_price=1.5))
    assert pct.type == OrderType.TRAILING_STOP and pct.trail_percent == "2"
    assert (pct.hwm, pct.stop_price, usd.stop_price) == ("100", "98", "98.5")
    fake_alpaca.tick("AAPL", 110)
    fake_alpaca.tick("AAPL", 109)  # lower: the mark and the stops stay
    now = c.get_order_by_id(pct.id)
    assert (now.hwm, now.stop_price) == ("110", "107.8")
    assert c.get_order_by_id(usd.id).stop_price == "108.5"
    assert fake_alpaca.tick("AAPL", 108) == [str(usd.id)]
    assert fake_alpaca.tick("AAPL", "107.7") == [str(pct.id)]
    assert fake_alpaca.positions() == []
    moved = c.submit_order(TrailingStopOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY,
                                                    time_in_force=GTC, trail_price=2))
    assert moved.stop_price == "109.7"  # a buy trails above the lowest price
    new = c.replace_order_by_id(moved.id, ReplaceOrderRequest(trail=1))
    assert new.trail_price == "1" and new.stop_price == "108.7" and new.replaces == moved.id


def test_bracket_legs_held_until_parent_fills_then_take_profit_cancels_stop(
        fake_alpaca, alpaca_trading_client):
    c = alpaca_trading_client
    fake_alpaca.set_price("AAPL", 100)
    parent = c.submit_order(bracket(cid="br-1"))
    assert parent.order_class == OrderClass.BRACKET and len(parent.legs) == 2
    tp, sl = parent.legs
    assert (tp.type, tp.limit_price, tp.side) == (OrderType.LIMIT, "110", OrderSide.SELL)
    assert (sl.type, sl.stop_price) == (OrderType.STOP, "95")
    assert tp.status == sl.status == OrderStatus.HELD
    assert tp.client_order_id != "br-1" and sl.client_order_id != tp.client_order_id

    flat = c.get_orders(GetOrdersRequest(status="open"))
    assert len(flat) == 3 and all(o.legs is None for o in flat)  # not nested: legs listed
    nested = c.get_orders(GetOrdersRequest(status="open", nested=True))
    assert [o.id for o in nested] == [parent.id]
    assert {leg.id for leg in nested[0].legs} == {tp.id, sl.id}

    fake_alpaca.fill("br-1", qty=4, price=100)  # partly filled: legs stay held
    assert c.get_order_by_id(parent.id).legs is None  # a single order nests only if asked
    nested_one = c.get_order_by_id(parent.id, GetOrderByIdRequest(nested=True))
    assert {leg.status for leg in nested_one.legs} == {OrderStatus.HELD}
    assert fake_alpaca.tick("AAPL", 94) == []  # held legs do not work yet
    fake_alpaca.fill("br-1", price=100)
    legs = {str(leg.id): leg for leg in c.get_order_by_id(
        parent.id, GetOrderByIdRequest(nested=True)).legs}
    assert legs[str(tp.id)].status == OrderStatus.NEW  # take-profit live
    assert legs[str(sl.id)].status == OrderStatus.HELD  # stop-loss waits for its trigger
    assert legs[str(tp.id)].qty == "10"
    # nested, the filled parent is listed open while its legs work
    assert [o.id for o in c.get_orders(GetOrdersRequest(status="open", nested=True))] \
        == [parent.id]
    assert fake_alpaca.tick("AAPL", 111) == [str(tp.id)]
    assert c.get_order_by_id(sl.id).status == OrderStatus.CANCELED
    assert c.get_orders(GetOrdersRequest(status="open", nested=True)) == []
    assert events(fake_alpaca, str(tp.id)) == ["new", "fill"]
    assert events(fake_alpaca, str(sl.id)) == ["canceled"]
    assert fake_alpaca.positions() == []


def test_bracket_stop_loss_gap_fill_cancels_take_profit(fake_alpaca, alpaca_trading_client):
    c = alpaca_trading_client
    fake_alpaca.set_price("AAPL", 100)
    parent = c.submit_order(bracket(cid="br-2"))
    tp, sl = parent.legs
    fake_alpaca.fill("br-2", price=100)
    assert fake_alpaca.tick("AAPL", "90.25") == [str(sl.id)]  # gapped through 95
    got = c.get_order_by_id(sl.id)
    assert got.status == OrderStatus.FILLED and got.filled_avg_price == "90.25"
    assert c.get_order_by_id(tp.id).status == OrderStatus.CANCELED


def test_bracket_leg_updates_on_the_stream_carry_leg_ids(fake_alpaca, alpaca_trading_client):
    fake_alpaca.set_price("AAPL", 100)
    stream = fake_alpaca.trading_stream()
    got = Collector()
    stream.subscribe_trade_updates(got.handler)
    with StreamThread(stream, fake_alpaca):
        fake_alpaca.wait_for_trade_listeners(1)
        parent = alpaca_trading_client.submit_order(bracket(cid="br-3"))
        fake_alpaca.fill("br-3", price=100)
        fake_alpaca.tick("AAPL", 94)
        updates = got.wait_count(5)
    assert all(isinstance(u, TradeUpdate) for u in updates)
    tp, sl = parent.legs
    seen = [(u.event, str(u.order.id)) for u in updates]
    assert seen == [("new", str(parent.id)), ("fill", str(parent.id)), ("new", str(tp.id)),
                    ("fill", str(sl.id)), ("canceled", str(tp.id))]
    assert {leg.id for leg in updates[1].order.legs} == {tp.id, sl.id}  # parent lists legs


def test_oco_on_an_existing_position(fake_alpaca, alpaca_trading_client):
    c = alpaca_trading_client
    fake_alpaca.set_position("AAPL", 10, 100)
    fake_alpaca.set_price("AAPL", 100)
    oco = c.submit_order(LimitOrderRequest(
        symbol="AAPL", qty=10, side=OrderSide.SELL, time_in_force=GTC, limit_price=110,
        order_class=OrderClass.OCO, take_profit=TakeProfitRequest(limit_price=110),
        stop_loss=StopLossRequest(stop_price=95)))
    (stop,) = oco.legs
    assert oco.order_class == OrderClass.OCO and stop.type == OrderType.STOP
    assert c.get_order_by_id(oco.id).status == c.get_order_by_id(stop.id).status == "new"
    # both hold the same 10 shares once: another sell of 1 is refused
    err = api_error(c.submit_order, LimitOrderRequest(
        symbol="AAPL", qty=1, side=OrderSide.SELL, time_in_force=GTC, limit_price=120))
    assert err.status_code == 403 and "insufficient qty" in str(err)
    assert fake_alpaca.tick("AAPL", 94) == [str(stop.id)]
    assert c.get_order_by_id(oco.id).status == OrderStatus.CANCELED


def test_oto_entry_with_one_stop_leg(fake_alpaca, alpaca_trading_client):
    c = alpaca_trading_client
    fake_alpaca.set_price("AAPL", 100)
    oto = c.submit_order(MarketOrderRequest(
        symbol="AAPL", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
        order_class=OrderClass.OTO, stop_loss=StopLossRequest(stop_price=97)))
    (leg,) = oto.legs
    assert leg.status == OrderStatus.HELD and leg.side == OrderSide.SELL
    fake_alpaca.fill(str(oto.id), price=100)
    assert c.get_order_by_id(leg.id).status == OrderStatus.HELD  # a working stop, shown held
    assert fake_alpaca.tick("AAPL", 96) == [str(leg.id)]


def test_replace_a_stop_leg_keeps_it_in_the_bracket(fake_alpaca, alpaca_trading_client):
    c = alpaca_trading_client
    fake_alpaca.set_price("AAPL", 100)
    parent = c.submit_order(bracket(cid="br-4"))
    tp, sl = parent.legs
    fake_alpaca.fill("br-4", price=100)
    moved = c.replace_order_by_id(sl.id, ReplaceOrderRequest(stop_price=98,
                                                             client_order_id="br-4-sl-r1"))
    assert moved.replaces == sl.id and moved.stop_price == "98" and moved.qty == "10"
    assert c.get_order_by_id(sl.id).status == OrderStatus.REPLACED
    assert {leg.id for leg in c.get_order_by_id(parent.id, GetOrderByIdRequest(nested=True)).legs} \
        == {tp.id, moved.id}
    err = api_error(c.replace_order_by_id, tp.id, ReplaceOrderRequest(stop_price=90))
    assert err.status_code == 422 and "limit orders must not have stop_price" in str(err)
    assert fake_alpaca.tick("AAPL", "97.5") == [str(moved.id)]
    assert c.get_order_by_id(tp.id).status == OrderStatus.CANCELED  # sibling of the new leg


def test_cancels_take_legs_and_siblings_with_them(fake_alpaca, alpaca_trading_client):
    c = alpaca_trading_client
    fake_alpaca.set_price("AAPL", 100)
    held = c.submit_order(bracket(cid="br-5", limit=99))
    c.cancel_order_by_id(held.id)  # parent canceled unfilled: legs go too
    assert {c.get_order_by_id(leg.id).status for leg in held.legs} == {OrderStatus.CANCELED}

    live = c.submit_order(bracket(cid="br-6"))
    fake_alpaca.fill("br-6", price=100)
    tp, sl = live.legs
    c.cancel_order_by_id(sl.id)  # one leg canceled by hand: Alpaca cancels the other
    assert c.get_order_by_id(tp.id).status == OrderStatus.CANCELED

    part = c.submit_order(bracket(cid="br-7", limit=100))
    fake_alpaca.fill("br-7", qty=4, price=100)
    c.cancel_order_by_id(part.id)  # partly filled parent canceled: legs work for 4
    legs = [c.get_order_by_id(leg.id) for leg in part.legs]
    assert [(leg.status, leg.qty) for leg in legs] == [("new", "4"), ("new", "4")]


@pytest.mark.parametrize(("request_", "status", "message"), [
    (bracket(qty=1.5, tif=TimeInForce.DAY), 422,
     "fractional orders are not supported for bracket orders"),
    (bracket(tp=100.005), 422, "sub-penny increment"),
    (bracket(tp=100), 422, "take_profit.limit_price must be >= base_price + 0.01"),
    (bracket(sl=99.995), 422, "sub-penny increment"),
    (bracket(sl=100), 422, "stop price must be less than base_price - 0.01"),
    (bracket(limit=99, tp=99), 422, "take_profit.limit_price must be >= base_price + 0.01"),
    (bracket(tif=TimeInForce.IOC), 422, "time_in_force must be day or gtc"),
    (StopOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=GTC,
                      stop_price=99, order_class=OrderClass.BRACKET,
                      take_profit=TakeProfitRequest(limit_price=110),
                      stop_loss=StopLossRequest(stop_price=90)),
     422, "bracket orders must be market or limit orders"),
    (StopOrderRequest(symbol="AAPL", qty=1, side=OrderSide.SELL, time_in_force=GTC,
                      stop_price=101), 422, "must be below the current price"),
    (TrailingStopOrderRequest(symbol="AAPL", qty=0.5, side=OrderSide.SELL,
                              time_in_force=TimeInForce.DAY, trail_percent=1),
     422, "fractional orders must be market, limit, stop or stop_limit"),
    (StopOrderRequest(symbol="AAPL", qty=0.5, side=OrderSide.SELL, time_in_force=GTC,
                      stop_price=95), 422, "fractional orders must be DAY orders"),
])
def test_alpaca_refuses_what_alpaca_refuses(fake_alpaca, alpaca_trading_client, request_,
                                            status, message):
    fake_alpaca.set_position("AAPL", 10, 100)
    fake_alpaca.set_price("AAPL", 100)
    err = api_error(alpaca_trading_client.submit_order, request_)
    assert err.status_code == status and message in str(err)
    assert len(fake_alpaca.orders()) == 0


def test_fractional_stop_day_order_is_accepted(fake_alpaca, alpaca_trading_client):
    fake_alpaca.set_position("AAPL", "0.5", 100)
    fake_alpaca.set_price("AAPL", 100)
    order = alpaca_trading_client.submit_order(StopOrderRequest(
        symbol="AAPL", qty=0.5, side=OrderSide.SELL, time_in_force=TimeInForce.DAY,
        stop_price=95))
    assert isinstance(order, Order) and order.qty == "0.5"


def test_trail_percent_zero_and_both_trails_are_refused(fake_alpaca, alpaca_trading_client):
    fake_alpaca.set_position("AAPL", 10, 100)
    fake_alpaca.set_price("AAPL", 100)
    c = alpaca_trading_client
    for body in ({"trail_percent": "0"}, {"trail_price": "1", "trail_percent": "1"}):
        with pytest.raises(APIError) as err:
            c.post("/orders", {"symbol": "AAPL", "qty": "1", "side": "sell",
                               "type": "trailing_stop", "time_in_force": "gtc", **body})
        assert err.value.status_code == 422
    assert Decimal(fake_alpaca.account()["cash"]) == 100000 and fake_alpaca.orders() == []
