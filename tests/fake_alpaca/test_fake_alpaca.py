# ruff: noqa: F811  (pytest fixtures imported by name)
"""The fake Alpaca driven by the real alpaca-py 0.44 clients."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgpack
import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.models import Bar, BarSet
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import (
    Asset,
    ClosePositionResponse,
    Order,
    TradeAccount,
    TradeActivity,
    TradeUpdate,
)
from alpaca.trading.requests import (
    ClosePositionRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
)
from websockets.legacy.client import connect as legacy_connect

from tests.fake_alpaca import (
    Collector,
    FakeAlpacaControlError,
    StreamThread,
    start_stream_task,
    stop_stream_task,
)
from tests.fake_alpaca.fixtures import (  # noqa: F401  (pytest fixtures)
    alpaca_historical_client,
    alpaca_trading_client,
    fake_alpaca,
    fake_alpaca_factory,
    fake_alpaca_process,
)

T0 = datetime(2026, 8, 3, 14, 30, tzinfo=UTC)


def mkt(
    symbol: str = "AAPL",
    qty: float | None = 1,
    side: str = "buy",
    cid: str | None = None,
    notional: float | None = None,
) -> MarketOrderRequest:
    return MarketOrderRequest(
        symbol=symbol,
        qty=qty,
        notional=notional,
        side=side,
        time_in_force=TimeInForce.DAY,
        client_order_id=cid,
    )


def lmt(
    symbol: str = "AAPL",
    qty: float = 1,
    price: float = 100.0,
    side: str = "buy",
    cid: str | None = None,
) -> LimitOrderRequest:
    return LimitOrderRequest(
        symbol=symbol,
        qty=qty,
        limit_price=price,
        side=side,
        time_in_force=TimeInForce.DAY,
        client_order_id=cid,
    )


# =========================================================================== account / auth


def test_account_omits_pdt_fields_by_default_and_sdk_validates(fake_alpaca, alpaca_trading_client):
    raw = alpaca_trading_client.get("/account")
    for gone in ("pattern_day_trader", "daytrade_count", "daytrading_buying_power"):
        assert gone not in raw
    acct = alpaca_trading_client.get_account()
    assert isinstance(acct, TradeAccount)
    assert acct.pattern_day_trader is None and acct.daytrade_count is None
    assert Decimal(acct.cash) == Decimal(acct.buying_power) == Decimal(acct.equity) == 100000

    fake_alpaca.set_account(pdt_fields=True, daytrade_count=2, cash="250", multiplier="2")
    acct = alpaca_trading_client.get_account()
    assert acct.pattern_day_trader is False and acct.daytrade_count == 2
    assert acct.cash == "250" and acct.buying_power == "500"
    assert alpaca_trading_client.get_account_configurations().pdt_check is not None


def test_wrong_keys_get_401(fake_alpaca):
    from alpaca.trading.client import TradingClient

    bad = TradingClient("nope", "nope", paper=True, url_override=fake_alpaca.rest_url)
    with pytest.raises(APIError) as err:
        bad.get_account()
    assert err.value.status_code == 401 and err.value.code == 40110000
    assert fake_alpaca.requests_log(route="account")[-1]["status"] == 401


def test_assets_clock_calendar(fake_alpaca, alpaca_trading_client):
    fake_alpaca.add_asset(
        "XYZ",
        fractionable=False,
        shortable=False,
        easy_to_borrow=False,
        tradable=True,
        exchange="NYSE",
    )
    asset = alpaca_trading_client.get_asset("XYZ")
    assert isinstance(asset, Asset)
    assert (
        asset.symbol,
        asset.fractionable,
        asset.shortable,
        asset.easy_to_borrow,
        asset.tradable,
        asset.status.value,
    ) == ("XYZ", False, False, False, True, "active")
    assert alpaca_trading_client.get_asset(asset.id).symbol == "XYZ"  # by asset id
    with pytest.raises(APIError) as err:
        alpaca_trading_client.get_asset("NOPE")
    assert err.value.status_code == 404 and err.value.code == 40410000
    assert "XYZ" in {a.symbol for a in alpaca_trading_client.get_all_assets()}

    fake_alpaca.set_clock(is_open=False, next_open="2026-08-04T13:30:00Z")
    clock = alpaca_trading_client.get_clock()
    assert clock.is_open is False and clock.next_open == datetime(2026, 8, 4, 13, 30, tzinfo=UTC)
    assert alpaca_trading_client.get_calendar()[0].open.hour == 9


# =========================================================================== orders


def test_order_routes(fake_alpaca, alpaca_trading_client):
    c = alpaca_trading_client
    fake_alpaca.set_now(T0)
    a = c.submit_order(mkt(cid="a"))
    fake_alpaca.advance_time(1)
    b = c.submit_order(lmt(qty=3, price=99.5, cid="b"))
    fake_alpaca.advance_time(1)
    m = c.submit_order(lmt(symbol="MSFT", qty=2, price=300, cid="m"))
    assert isinstance(a, Order) and a.status == OrderStatus.PENDING_NEW  # POST answer
    assert c.get_order_by_id(a.id).status == OrderStatus.NEW  # then accepted (auto_accept)
    assert c.get_order_by_client_id("b").limit_price == "99.5"
    assert [o.client_order_id for o in c.get_orders()] == ["m", "b", "a"]  # open, desc
    asc = c.get_orders(GetOrdersRequest(direction="asc", limit=2))
    assert [o.client_order_id for o in asc] == ["a", "b"]
    mid = c.get_orders(
        GetOrdersRequest(after=T0 + timedelta(seconds=0.5), until=T0 + timedelta(seconds=1.5))
    )
    assert [o.client_order_id for o in mid] == ["b"]
    assert [o.client_order_id for o in c.get_orders(GetOrdersRequest(symbols=["MSFT"]))] == ["m"]
    assert [o.client_order_id for o in c.get_orders(GetOrdersRequest(side=OrderSide.BUY))] == [
        "m",
        "b",
        "a",
    ]

    assert c.cancel_order_by_id(a.id) is None  # 204
    assert c.get_order_by_id(a.id).status == OrderStatus.CANCELED
    closed = c.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED))
    assert [o.client_order_id for o in closed] == ["a"]
    with pytest.raises(APIError) as err:
        c.cancel_order_by_id(a.id)
    assert err.value.status_code == 422

    new_b = c.replace_order_by_id(b.id, ReplaceOrderRequest(qty=5, limit_price=98))
    assert new_b.replaces == b.id and new_b.qty == "5" and new_b.limit_price == "98"
    old_b = c.get_order_by_id(b.id)
    assert old_b.status == OrderStatus.REPLACED and old_b.replaced_by == new_b.id

    responses = c.cancel_orders()
    assert sorted(str(r.id) for r in responses) == sorted([str(new_b.id), str(m.id)])
    assert all(r.status == 200 for r in responses)
    assert len(c.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))) == 4
    with pytest.raises(APIError) as err:
        c.get_order_by_client_id("never-sent")
    assert err.value.status_code == 404
    conns = fake_alpaca.http_connections()  # requests.Session keeps the connection alive
    assert conns["opened"] == 1 and fake_alpaca.request_count() > 15


def test_client_order_id_unique_forever_and_max_48(alpaca_trading_client):
    c = alpaca_trading_client
    first = c.submit_order(lmt(cid="intent-1"))
    c.cancel_order_by_id(first.id)
    with pytest.raises(APIError) as err:
        c.submit_order(lmt(cid="intent-1"))
    assert (err.value.status_code, err.value.code) == (422, 40010001)
    assert err.value.message == "client_order_id must be unique"
    with pytest.raises(APIError) as err:
        c.submit_order(lmt(cid="x" * 49))
    assert (err.value.status_code, err.value.code) == (422, 40010001)
    assert c.submit_order(lmt(cid="y" * 48)).client_order_id == "y" * 48


def test_fills_position_cash_activities(fake_alpaca, alpaca_trading_client):
    c = alpaca_trading_client
    fake_alpaca.set_now(T0)
    order = c.submit_order(mkt(qty=10, cid="f1"))
    fills = [fake_alpaca.fill("f1", qty=4, price=100)]
    fake_alpaca.advance_time(60)
    fills.append(fake_alpaca.fill(str(order.id), qty=None, price=101))  # the rest
    got = c.get_order_by_id(order.id)
    assert got.status == OrderStatus.FILLED and got.filled_qty == "10"
    assert Decimal(got.filled_avg_price) == Decimal("100.6")
    pos = c.get_open_position("AAPL")
    assert (pos.qty, pos.side.value, Decimal(pos.avg_entry_price)) == (
        "10",
        "long",
        Decimal("100.6"),
    )
    assert Decimal(c.get_account().cash) == 100000 - 4 * 100 - 6 * 101

    # FILL activities: TradingClient 0.44 has no method; use the generic get()
    acts = c.get("/account/activities/FILL", {"direction": "asc"})
    parsed = [TradeActivity(**a) for a in acts]
    assert [(a.type.value, a.qty, a.price, a.cum_qty, a.leaves_qty) for a in parsed] == [
        ("partial_fill", 4, 100, 4, 6),
        ("fill", 6, 101, 10, 0),
    ]
    assert acts[0]["order_status"] == "partially_filled"
    assert [a["id"] for a in c.get("/account/activities/FILL")] == [acts[1]["id"], acts[0]["id"]]
    page1 = c.get("/account/activities/FILL", {"direction": "asc", "page_size": 1})
    page2 = c.get(
        "/account/activities/FILL",
        {"direction": "asc", "page_size": 1, "page_token": page1[0]["id"]},
    )
    assert [page1[0]["id"], page2[0]["id"]] == [a["id"] for a in acts]
    after = c.get("/account/activities/FILL", {"after": (T0 + timedelta(seconds=30)).isoformat()})
    until = c.get("/account/activities/FILL", {"until": (T0 + timedelta(seconds=30)).isoformat()})
    assert [a["id"] for a in after] == [acts[1]["id"]] and [a["id"] for a in until] == [
        acts[0]["id"]
    ]
    assert len(c.get("/account/activities", {"activity_types": "FILL"})) == 2
    assert c.get("/account/activities/FILL", {"order_id": str(order.id)}) == list(reversed(acts))
    assert len({f["execution_id"] for f in fills}) == 2


def test_notional_auto_fill_and_buying_power(fake_alpaca, alpaca_trading_client):
    c = alpaca_trading_client
    fake_alpaca.set_account(cash="200")
    fake_alpaca.set_auto_fill(True, prices={"AAPL": "600", "F": "33"})
    with pytest.raises(APIError) as err:  # a $200 account cannot buy a $600 share
        c.submit_order(mkt("AAPL", qty=1, cid="too-big"))
    assert (err.value.status_code, err.value.code) == (403, 40310000)
    assert err.value.message == "insufficient buying power"
    assert fake_alpaca.order_count_by_client_id() == {}
    order = c.submit_order(mkt("F", qty=None, notional=100, cid="frac"))
    assert order.notional == "100" and order.qty is None
    filled = c.get_order_by_client_id("frac")
    assert filled.status == OrderStatus.FILLED
    assert filled.filled_qty == "3.03030303"  # 100/33 floored to 9 decimals: 3.030303030
    pos = c.get_open_position("F")
    assert pos.qty == "3.03030303"
    fake_alpaca.add_asset("NOFRAC", fractionable=False)
    fake_alpaca.set_price("NOFRAC", 10)
    with pytest.raises(APIError) as err:
        c.submit_order(mkt("NOFRAC", qty=0.5))
    assert err.value.status_code == 422


def test_positions_external_orders_broker_side_events(fake_alpaca, alpaca_trading_client):
    c = alpaca_trading_client
    fake_alpaca.set_position("MSFT", 5, 300)  # traded by hand: no trade update
    fake_alpaca.set_price("MSFT", 310)
    pos = c.get_open_position("MSFT")
    assert (pos.qty, pos.avg_entry_price, pos.market_value, pos.unrealized_pl) == (
        "5",
        "300",
        "1550",
        "50",
    )
    assert fake_alpaca.trade_updates_log() == []
    ext = fake_alpaca.place_external_order(
        "MSFT", "sell", qty=2, limit_price=400, client_order_id="dashboard-123"
    )
    assert c.get_order_by_client_id("dashboard-123").id.hex == ext["id"].replace("-", "")
    assert c.get_open_position("MSFT").qty_available == "3"
    fake_alpaca.cancel("dashboard-123")
    for action, status in (("expire", OrderStatus.EXPIRED), ("reject", OrderStatus.REJECTED)):
        o = c.submit_order(lmt(cid=action))
        getattr(fake_alpaca, action)(action)
        assert c.get_order_by_id(o.id).status == status
    assert [u["event"] for u in fake_alpaca.trade_updates_log()] == [
        "new",
        "canceled",
        "new",
        "expired",
        "new",
        "rejected",
    ]

    fake_alpaca.set_auto_fill(True, prices={"AAPL": "100"})
    c.submit_order(mkt("AAPL", qty=4))
    half = c.close_position("AAPL", ClosePositionRequest(percentage="50"))
    assert half.qty == "2" and half.side == OrderSide.SELL
    results = c.close_all_positions(cancel_orders=True)
    assert all(isinstance(r, ClosePositionResponse) and r.status == 200 for r in results)
    assert {r.symbol for r in results} == {"AAPL", "MSFT"}
    assert c.get_all_positions() == []  # both close orders auto-filled
    with pytest.raises(APIError) as err:
        c.get_open_position("TSLA")
    assert err.value.status_code == 404


# =========================================================================== REST faults


def test_504_after_create_sdk_retry_hits_duplicate_id(fake_alpaca, alpaca_trading_client):
    fake_alpaca.gateway_timeout_after_create()
    with pytest.raises(APIError) as err:
        alpaca_trading_client.submit_order(mkt(cid="amb-1"))
    assert (err.value.status_code, err.value.code) == (422, 40010001)
    assert fake_alpaca.order_count_by_client_id() == {"amb-1": 1}
    assert fake_alpaca.submit_attempts_by_client_id() == {"amb-1": 2}
    assert [r["status"] for r in fake_alpaca.requests_log(route="submit_order")] == [504, 422]
    # the engine's resolution path: look it up by client id
    assert alpaca_trading_client.get_order_by_client_id("amb-1").status == OrderStatus.NEW


def test_5xx_before_and_after_handling(fake_alpaca, alpaca_trading_client):
    c = alpaca_trading_client
    fake_alpaca.fail_next("submit_order", 503)
    with pytest.raises(APIError) as err:
        c.submit_order(mkt(cid="s1"))
    assert err.value.status_code == 503 and fake_alpaca.order_count_by_client_id() == {}
    assert c.submit_order(mkt(cid="s1")).client_order_id == "s1"  # id was never taken

    fake_alpaca.fail_next("submit_order", 500, after_handling=True)
    with pytest.raises(APIError) as err:
        c.submit_order(mkt(cid="s2"))
    assert err.value.status_code == 500 and err.value.code == 50010000
    assert c.get_order_by_client_id("s2").client_order_id == "s2"  # ambiguous: it exists

    fake_alpaca.fail_next("get_order_by_client_id", 500, n=2)
    for _ in range(2):
        with pytest.raises(APIError):
            c.get_order_by_client_id("s2")
    assert c.get_order_by_client_id("s2")
    assert [f["hits"] for f in fake_alpaca.faults()] == [1, 1, 2]


def test_429_is_retried_by_the_sdk(fake_alpaca):
    c = fake_alpaca.trading_client(retry_wait=0.01)
    fake_alpaca.rate_limit_next("submit_order", n=2)
    assert c.submit_order(mkt(cid="r1")).client_order_id == "r1"
    assert [r["status"] for r in fake_alpaca.requests_log(route="submit_order")] == [429, 429, 200]
    fake_alpaca.rate_limit_next("*", n=4)  # 1 try + 3 retries, all 429
    with pytest.raises(APIError) as err:
        c.get_account()
    assert err.value.status_code == 429 and err.value.code == 42910000
    assert fake_alpaca.request_count(route="account") == 4
    fake_alpaca.fail_next("clock", 504, n=4)  # 504 is retried too; its body is HTML
    with pytest.raises(APIError) as err:
        c.get_clock()
    assert err.value.status_code == 504 and "Gateway Time-out" in str(err.value)
    with pytest.raises(ValueError):  # APIError.code json-decodes the body
        _ = err.value.code


def test_reject_next_submit_keeps_id_free(fake_alpaca, alpaca_trading_client):
    fake_alpaca.reject_next_submit(422, "wash trade detected")
    with pytest.raises(APIError) as err:
        alpaca_trading_client.submit_order(mkt(cid="w1"))
    assert (err.value.status_code, err.value.code, err.value.message) == (
        422,
        42210000,
        "wash trade detected",
    )
    assert alpaca_trading_client.submit_order(mkt(cid="w1"))


async def test_accept_but_time_out_delay(fake_alpaca):
    client, other = fake_alpaca.trading_client(), fake_alpaca.trading_client()
    fake_alpaca.delay_next("submit_order", seconds=0.6)
    call = asyncio.ensure_future(asyncio.to_thread(client.submit_order, mkt(cid="slow-1")))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(call), 0.15)  # the engine's own timeout fires
    found = await asyncio.to_thread(other.get_order_by_client_id, "slow-1")
    assert found.client_order_id == "slow-1"  # ...but the order is at the broker
    late = await call  # the late answer still arrives
    assert late.id == found.id


def test_hang_and_close_without_answer(fake_alpaca):
    client, other = fake_alpaca.trading_client(), fake_alpaca.trading_client()
    # requests has no default timeout; an engine must set one, e.g. like this:
    client._session.request = functools.partial(client._session.request, timeout=0.2)
    fake_alpaca.hang_next("submit_order")
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.submit_order(mkt(cid="hang-1"))
    assert other.get_order_by_client_id("hang-1")
    assert fake_alpaca.requests_log(route="submit_order")[0]["outcome"] == "hung"
    assert fake_alpaca.release_hung_requests() == 1

    fake_alpaca.close_next("submit_order")
    with pytest.raises(requests.exceptions.ConnectionError):
        client.submit_order(mkt(cid="close-1"))
    assert other.get_order_by_client_id("close-1")
    fake_alpaca.close_next("submit_order", after_handling=False)
    with pytest.raises(requests.exceptions.ConnectionError):
        client.submit_order(mkt(cid="close-2"))
    assert "close-2" not in fake_alpaca.order_count_by_client_id()
    assert fake_alpaca.request_count(route="submit_order") == 3


def test_slow_and_rejected_cancels(fake_alpaca, alpaca_trading_client):
    c = alpaca_trading_client
    fake_alpaca.slow_cancels()
    o = c.submit_order(lmt(qty=10, cid="c1"))
    assert c.cancel_order_by_id(o.id) is None
    assert c.get_order_by_id(o.id).status == OrderStatus.PENDING_CANCEL
    fake_alpaca.fill("c1", qty=3, price=100)  # a fill racing the cancel
    assert fake_alpaca.complete_pending_cancels() == 1
    final = c.get_order_by_id(o.id)
    assert final.status == OrderStatus.CANCELED and final.filled_qty == "3"

    fake_alpaca.slow_cancels(delay=0.1)
    o2 = c.submit_order(lmt(cid="c2"))
    c.cancel_order_by_id(o2.id)
    fake_alpaca.wait_for_order_status("c2", "canceled", timeout=3)

    fake_alpaca.slow_cancels(False)
    fake_alpaca.reject_next_cancel(mode="422")
    o3 = c.submit_order(lmt(cid="c3"))
    with pytest.raises(APIError) as err:
        c.cancel_order_by_id(o3.id)
    assert err.value.status_code == 422
    fake_alpaca.reject_next_cancel(mode="ignore")
    c.cancel_order_by_id(o3.id)  # 204...
    assert c.get_order_by_id(o3.id).status == OrderStatus.NEW  # ...but still open
    c.cancel_order_by_id(o3.id)
    assert c.get_order_by_id(o3.id).status == OrderStatus.CANCELED
    events = [u["event"] for u in fake_alpaca.trade_updates_log() if u["client_order_id"] == "c3"]
    assert events == ["new", "order_cancel_rejected", "canceled"]


# =========================================================================== trade updates stream


def test_trading_stream_in_a_thread(fake_alpaca, alpaca_trading_client):
    stream = fake_alpaca.trading_stream()
    got = Collector()
    stream.subscribe_trade_updates(got.handler)
    with StreamThread(stream, fake_alpaca):
        fake_alpaca.wait_for_trade_listeners(1)
        rec = fake_alpaca.stream_connections(kind="trade")[0]
        assert rec["authenticated"] and rec["listening"]
        alpaca_trading_client.submit_order(mkt(qty=5, cid="ts-1"))
        fake_alpaca.fill("ts-1", qty=2, price=100)
        fake_alpaca.fill("ts-1", price=101)
        updates = got.wait_count(3)
    assert all(isinstance(u, TradeUpdate) for u in updates)
    assert [u.event for u in updates] == ["new", "partial_fill", "fill"]
    assert [(u.qty, u.price, u.position_qty) for u in updates[1:]] == [(2, 100, 2), (3, 101, 5)]
    assert len({u.execution_id for u in updates}) == 3
    assert updates[-1].order.status == OrderStatus.FILLED and updates[-1].order.filled_qty == "5"
    assert fake_alpaca.stream_connections(kind="trade")[0]["state"] == "closed"


async def test_trading_stream_on_our_own_loop(fake_alpaca):
    stream = fake_alpaca.trading_stream(raw_data=True)
    got = Collector()
    stream.subscribe_trade_updates(got.handler)
    task = start_stream_task(stream)
    try:
        await fake_alpaca.async_wait_for_trade_listeners(1)
        ext = fake_alpaca.place_external_order(
            "AAPL", "buy", qty=1, limit_price=10, client_order_id="foreign"
        )
        fake_alpaca.fill(ext["id"], price=10)
        raw = await got.async_wait_count(2)
    finally:
        await stop_stream_task(stream, task)
    assert [m["data"]["event"] for m in raw] == ["new", "fill"]
    assert (
        raw[0]["stream"] == "trade_updates"
        and raw[0]["data"]["order"]["client_order_id"] == "foreign"
    )
    await fake_alpaca.async_wait_for(lambda: fake_alpaca.trade_listener_count() == 0)


def test_duplicate_and_reordered_updates(fake_alpaca):
    stream = fake_alpaca.trading_stream(raw_data=True)
    got = Collector()
    stream.subscribe_trade_updates(got.handler)
    with StreamThread(stream, fake_alpaca):
        fake_alpaca.wait_for_trade_listeners(1)
        o = fake_alpaca.place_external_order("AAPL", "buy", qty=3, limit_price=10)
        fake_alpaca.duplicate_next_updates(1)
        fake_alpaca.fill(o["id"], qty=1, price=10)
        fake_alpaca.reorder_next_update()
        fake_alpaca.fill(o["id"], qty=1, price=10)
        fake_alpaca.fill(o["id"], qty=1, price=10)
        msgs = got.wait_count(5)
    events = [(m["data"]["event"], m["data"]["order"]["filled_qty"]) for m in msgs]
    assert events == [
        ("new", "0"),
        ("partial_fill", "1"),
        ("partial_fill", "1"),
        ("fill", "3"),
        ("partial_fill", "2"),
    ]
    assert msgs[1]["data"]["execution_id"] == msgs[2]["data"]["execution_id"]
    log = fake_alpaca.trade_updates_log()
    assert len(log[1]["delivered_to"]) == 2 and log[2]["held"]


def test_dropped_stream_loses_updates_and_reconnect_sees_later_ones(
    fake_alpaca, alpaca_trading_client
):
    stream = fake_alpaca.trading_stream()
    got = Collector()
    stream.subscribe_trade_updates(got.handler)
    with StreamThread(stream, fake_alpaca):
        fake_alpaca.wait_for_trade_listeners(1)
        alpaca_trading_client.submit_order(mkt(qty=3, cid="d1"))
        got.wait_count(1)
        fake_alpaca.block_trade_stream()  # the stream stays down until unblocked
        fake_alpaca.drop_stream_after_next_update()
        fake_alpaca.fill("d1", qty=1, price=100)  # delivered, then the socket drops
        fake_alpaca.wait_for(lambda: fake_alpaca.trade_listener_count() == 0)
        fake_alpaca.fill("d1", qty=1, price=101)  # produced while down: lost for good
        fake_alpaca.wait_for_stream_connections("trade", 1, state="refused")  # SDK retried
        fake_alpaca.block_trade_stream(False)
        fake_alpaca.wait_for_trade_listeners(1, timeout=5)
        fake_alpaca.fill("d1", qty=1, price=102)
        updates = got.wait_count(3)
    assert [(u.event, u.price) for u in updates] == [
        ("new", None),
        ("partial_fill", 100),
        ("fill", 102),
    ]
    lost = fake_alpaca.trade_updates_log()[2]
    assert lost["price"] == "101" and lost["delivered_to"] == []
    # still visible through REST: the order and the FILL activities
    order = alpaca_trading_client.get_order_by_client_id("d1")
    assert order.filled_qty == "3"
    acts = alpaca_trading_client.get("/account/activities/FILL", {"direction": "asc"})
    assert [a["price"] for a in acts] == ["100", "101", "102"]


def test_suppressed_updates_are_never_delivered(fake_alpaca):
    stream = fake_alpaca.trading_stream(raw_data=True)
    got = Collector()
    stream.subscribe_trade_updates(got.handler)
    with StreamThread(stream, fake_alpaca):
        fake_alpaca.wait_for_trade_listeners(1)
        fake_alpaca.suppress_updates()
        o = fake_alpaca.place_external_order("AAPL", "buy", qty=2, limit_price=10)
        fake_alpaca.fill(o["id"], qty=1, price=10)
        fake_alpaca.suppress_updates(False)
        fake_alpaca.fill(o["id"], qty=1, price=11)
        msgs = got.wait_count(1)
    assert [m["data"]["event"] for m in msgs] == ["fill"]
    assert [u["suppressed"] for u in fake_alpaca.trade_updates_log()] == [True, True, False]


def test_second_trade_connection_is_refused(fake_alpaca):
    first = fake_alpaca.trading_stream()
    got = Collector()
    first.subscribe_trade_updates(got.handler)
    second = fake_alpaca.trading_stream()
    second.subscribe_trade_updates(Collector().handler)
    with StreamThread(first, fake_alpaca):
        fake_alpaca.wait_for_trade_listeners(1)
        with StreamThread(second):
            # alpaca-py logs the 429 and keeps retrying with backoff, forever
            fake_alpaca.wait_for_stream_connections("trade", 3, state="refused")
        refused = fake_alpaca.stream_connections(kind="trade", state="refused")
        assert refused[0]["refused_reason"] == "connection limit exceeded (HTTP 429)"
        assert fake_alpaca.trade_listener_count() == 1  # the first one is untouched
        fake_alpaca.place_external_order("AAPL", "buy", qty=1, limit_price=10)
        assert got.wait_count(1)[0].event == "new"


async def test_trade_stream_limit_modes_raw(fake_alpaca):
    url = fake_alpaca.trading_stream_url
    auth = json.dumps(
        {
            "action": "authenticate",
            "data": {"key_id": fake_alpaca.api_key, "secret_key": fake_alpaca.api_secret},
        }
    )
    async with legacy_connect(url) as one:
        await one.send(auth)
        reply = json.loads(await one.recv())
        assert reply == {
            "stream": "authorization",
            "data": {"action": "authenticate", "status": "authorized"},
        }
        await one.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        listening = await one.recv()
        assert isinstance(listening, bytes)  # binary frames, like Alpaca's paper stream
        assert json.loads(listening) == {
            "stream": "listening",
            "data": {"streams": ["trade_updates"]},
        }
        fake_alpaca.set_trade_stream_limit("auth_error")
        async with legacy_connect(url) as two:
            await two.send(auth)
            reply = json.loads(await two.recv())
            assert reply["data"]["status"] == "unauthorized"
            assert reply["data"]["message"] == "connection limit exceeded"
        fake_alpaca.set_trade_stream_limit("kick_old")
        async with legacy_connect(url) as three:
            await three.send(auth)
            assert json.loads(await three.recv())["data"]["status"] == "authorized"
            await fake_alpaca.async_wait_for(
                lambda: fake_alpaca.stream_connections(kind="trade")[0]["state"] == "closed"
            )
    async with legacy_connect(url) as bad:
        await bad.send(
            json.dumps({"action": "authenticate", "data": {"key_id": "x", "secret_key": "y"}})
        )
        assert json.loads(await bad.recv())["data"]["status"] == "unauthorized"


# =========================================================================== market data


def test_data_stream_bars_drop_and_second_connection(fake_alpaca):
    stream = fake_alpaca.data_stream()
    bars = Collector()
    stream.subscribe_bars(bars.handler, "AAPL")
    with StreamThread(stream, fake_alpaca):
        fake_alpaca.wait_for_data_subscription("AAPL")
        assert fake_alpaca.push_bar("AAPL", T0, 10, 11, 9.5, 10.5, 1200, n=7, vw=10.2) == 1
        assert fake_alpaca.push_bar("MSFT", T0, 1, 1, 1, 1, 1) == 0  # not subscribed
        bar = bars.wait_count(1)[0]
        assert isinstance(bar, Bar)
        assert (
            bar.symbol,
            bar.timestamp,
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume,
            bar.trade_count,
            bar.vwap,
        ) == ("AAPL", T0, 10, 11, 9.5, 10.5, 1200, 7, 10.2)
        fake_alpaca.drop_data_streams()
        fake_alpaca.wait_for(
            lambda: (
                len(fake_alpaca.stream_connections(kind="data", state="open")) == 1
                and fake_alpaca.data_subscribed("AAPL")
            )
        )
        fake_alpaca.push_bar("AAPL", T0 + timedelta(minutes=1), 10, 11, 9.5, 10.5, 1200)
        assert bars.wait_count(2)[1].timestamp == T0 + timedelta(minutes=1)

        # a second data connection gets 406 after auth (alpaca-py retries it)
        other = fake_alpaca.data_stream()
        other.subscribe_bars(Collector().handler, "MSFT")
        with StreamThread(other):
            fake_alpaca.wait_for_stream_connections("data", 2, state="refused")
        refused = fake_alpaca.stream_connections(kind="data", state="refused")
        assert refused[0]["refused_reason"] == "connection limit exceeded (406)"


async def test_data_stream_mute_and_data_timeout(fake_alpaca):
    stream = fake_alpaca.data_stream(data_timeout=0.4)
    bars = Collector()
    stream.subscribe_bars(bars.handler, "AAPL")
    task = start_stream_task(stream)
    try:
        await fake_alpaca.async_wait_for_data_subscription("AAPL")
        fake_alpaca.mute_data_stream()
        assert fake_alpaca.push_bar("AAPL", T0, 1, 1, 1, 1, 1) == 0  # swallowed
        # alpaca-py notices silence only because data_timeout is set: it reconnects
        await fake_alpaca.async_wait_for(
            lambda: len(fake_alpaca.stream_connections(kind="data")) >= 2, timeout=5
        )
        seen = len(fake_alpaca.stream_connections(kind="data"))
        fake_alpaca.mute_data_stream(False)
        # wait for a connection made after unmuting (an older one may still go stale)
        await fake_alpaca.async_wait_for(
            lambda: (
                len(conns := fake_alpaca.stream_connections(kind="data")) > seen
                and conns[-1]["state"] == "open"
                and fake_alpaca.data_subscribed("AAPL")
            )
        )
        assert fake_alpaca.push_bar("AAPL", T0 + timedelta(minutes=1), 2, 2, 2, 2, 2) == 1
        got = await bars.async_wait_count(1)
        assert got[0].close == 2
    finally:
        await stop_stream_task(stream, task)
    assert fake_alpaca.data_messages_log()[0]["muted"] is True


async def test_data_stream_sdk_hangs_if_server_never_says_connected(fake_alpaca):
    fake_alpaca.mute_data_stream(handshake=False)
    stream = fake_alpaca.data_stream(data_timeout=0.1)  # data_timeout does not cover this
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(stream._start_ws(), 0.3)  # recv() without a timeout
    await stream.close()
    assert fake_alpaca.stream_connections(kind="data")[0]["authenticated"] is False


async def test_data_stream_raw_protocol(fake_alpaca):
    async with legacy_connect(fake_alpaca.data_stream_url) as ws:
        assert msgpack.unpackb(await ws.recv()) == [{"T": "success", "msg": "connected"}]
        await ws.send(
            msgpack.packb(
                {"action": "auth", "key": fake_alpaca.api_key, "secret": fake_alpaca.api_secret}
            )
        )
        assert msgpack.unpackb(await ws.recv()) == [{"T": "success", "msg": "authenticated"}]
        await ws.send(msgpack.packb({"action": "subscribe", "bars": ["SPY"], "trades": ["SPY"]}))
        sub = msgpack.unpackb(await ws.recv())[0]
        assert sub["T"] == "subscription" and sub["bars"] == ["SPY"] and sub["trades"] == ["SPY"]
        fake_alpaca.push_bar("SPY", T0, 1, 2, 0.5, 1.5, 100)
        bar = msgpack.unpackb(await ws.recv())[0]
        assert bar["T"] == "b" and isinstance(bar["t"], msgpack.Timestamp)
        assert bar["t"].to_datetime() == T0 and {"n", "vw"} <= set(bar)
    async with legacy_connect(fake_alpaca.data_stream_url) as ws:
        await ws.recv()
        await ws.send(msgpack.packb({"action": "auth", "key": "bad", "secret": "bad"}))
        assert msgpack.unpackb(await ws.recv()) == [
            {"T": "error", "code": 402, "msg": "auth failed"}
        ]


def test_historical_bars(fake_alpaca, alpaca_historical_client):
    minute = [
        (T0 + timedelta(minutes=i), 10 + i, 11 + i, 9 + i, 10.5 + i, 100 * (i + 1), 5, 10 + i)
        for i in range(5)
    ]
    fake_alpaca.load_bars("AAPL", minute, timeframe="1Min")
    fake_alpaca.load_bars("MSFT", minute[:3], timeframe="1Min")
    fake_alpaca.load_bars(
        "AAPL",
        [{"t": T0.replace(hour=0, minute=0), "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 10}],
        timeframe="1Day",
    )
    req = StockBarsRequest(
        symbol_or_symbols=["AAPL", "MSFT"],
        timeframe=TimeFrame.Minute,
        start=T0 + timedelta(minutes=1),
        end=T0 + timedelta(minutes=3),
        feed=DataFeed.IEX,
    )
    barset = alpaca_historical_client.get_stock_bars(req)
    assert isinstance(barset, BarSet)
    assert [b.timestamp for b in barset["AAPL"]] == [T0 + timedelta(minutes=i) for i in (1, 2, 3)]
    assert len(barset["MSFT"]) == 2 and barset["AAPL"][0].trade_count == 5
    q = fake_alpaca.requests_log(route="bars")[-1]["query"]
    assert (q["feed"], q["timeframe"], q["symbols"]) == ("iex", "1Min", "AAPL,MSFT")
    assert q["start"].startswith("2026-08-03T14:31:00")

    fake_alpaca.set_bars_page_size(2)
    all_aapl = alpaca_historical_client.get_stock_bars(
        StockBarsRequest(symbol_or_symbols="AAPL", timeframe=TimeFrame.Minute)
    )
    assert len(all_aapl["AAPL"]) == 5
    pages = fake_alpaca.requests_log(route="bars")[-3:]
    assert [bool(p["query"].get("page_token")) for p in pages] == [False, True, True]
    limited = alpaca_historical_client.get_stock_bars(
        StockBarsRequest(symbol_or_symbols="AAPL", timeframe=TimeFrame.Minute, limit=3)
    )
    assert len(limited["AAPL"]) == 3
    daily = alpaca_historical_client.get_stock_bars(
        StockBarsRequest(symbol_or_symbols="AAPL", timeframe=TimeFrame.Day)
    )
    assert [b.close for b in daily["AAPL"]] == [1.5]


# =========================================================================== subprocess mode


def test_subprocess_control_api(fake_alpaca_process):
    fake = fake_alpaca_process
    info = json.loads(fake.port_file.read_text())
    assert info["rest_url"] == fake.rest_url and info["pid"] == fake.pid
    client = fake.trading_client()
    order = client.submit_order(mkt(qty=2, cid="proc-1"))
    fake.fill("proc-1", qty=2, price=123.5)
    assert fake.order("proc-1")["status"] == "filled"
    # a "restarted engine" (new client, new session) sees the state the fake kept
    again = fake.trading_client()
    assert again.get_order_by_id(order.id).filled_avg_price == "123.5"
    assert again.get_open_position("AAPL").qty == "2"
    fake.gateway_timeout_after_create()
    with pytest.raises(APIError) as err:
        again.submit_order(mkt(cid="proc-2"))
    assert err.value.code == 40010001
    assert fake.submit_attempts_by_client_id()["proc-2"] == 2
    with pytest.raises(FakeAlpacaControlError):
        fake.fill("no-such-order")
    done = threading.Event()

    def later() -> None:
        fake.place_external_order("MSFT", "buy", qty=1, limit_price=1)
        done.set()

    threading.Timer(0.05, later).start()
    fake.wait_for(lambda: len(fake.orders()) == 3, timeout=5)
    assert done.wait(5)


def test_factory_options_text_frames_and_pdt(fake_alpaca_factory):
    fake = fake_alpaca_factory(pdt_fields=True, trade_stream_binary=False, cash="500")
    assert fake.trading_client().get_account().daytrade_count == 0
    stream = fake.trading_stream()
    got = Collector()
    stream.subscribe_trade_updates(got.handler)
    with StreamThread(stream, fake):
        fake.wait_for_trade_listeners(1)
        fake.place_external_order("SPY", "buy", qty=1, limit_price=400)
        assert got.wait_count(1)[0].order.symbol == "SPY"
