"""AlpacaBroker end to end: the real alpaca-py client and TradingStream against the fake
Alpaca server (tests/fake_alpaca). Nothing of ours is mocked; faults are the fake's."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from engine.brokers.alpaca import AlpacaBroker, AlpacaTradeUpdates
from engine.brokers.base import (
    AmbiguousSubmitError,
    BrokerEvent,
    BrokerUnavailableError,
    CancelRejectedError,
    OrderNotFoundError,
    OrderRejectedError,
    OrderRequest,
    StreamConnected,
    TradeUpdate,
    UnparsedMessage,
)

from .conftest import busy_threads, fast_config, other_tasks
from .test_alpaca_vocab import EXPECTED_KINDS, EXPECTED_STATES

WAIT = 5.0


def market(cid: str, symbol: str = "AAPL", side: str = "buy", **kw: Any) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=symbol, side=side,  # type: ignore[arg-type]
                        order_type="market", **kw)


def limit(cid: str, qty: str, price: str, symbol: str = "AAPL", side: str = "buy",
          **kw: Any) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=symbol, side=side,  # type: ignore[arg-type]
                        order_type="limit", qty=D(qty), limit_price=D(price), **kw)


async def next_event(updates: AsyncIterator[BrokerEvent], timeout: float = WAIT) -> BrokerEvent:
    return await asyncio.wait_for(anext(updates), timeout)


async def next_update(updates: AsyncIterator[BrokerEvent], event: str) -> TradeUpdate:
    item = await next_event(updates)
    assert isinstance(item, TradeUpdate), item
    assert item.event == event, item
    # what the engine acts on: the neutral kind and state the adapter put on it
    assert item.kind is EXPECTED_KINDS[event], item
    for order in item.order.with_legs():
        assert order.state is EXPECTED_STATES[order.status], order
    return item


async def connected(broker: AlpacaBroker) -> AlpacaTradeUpdates:
    updates = broker.trade_updates()
    first = await next_event(updates)
    assert first == StreamConnected(since=None, reconnect=False)
    return updates


def push_raw_trade_frame(fake: Any, payload: str | bytes) -> int:
    """Send a raw frame to every listening trade socket. The fake has no public switch for
    this (requested in the report), so this runs on the fake's loop via its `_call`."""

    def run() -> int:
        conns = fake._listening_trade_conns()
        for conn in conns:
            conn.queue.put_nowait(("msg", payload))
        return len(conns)

    return int(fake._call(run))


def assert_utc(ts: datetime | None) -> None:
    assert ts is not None and ts.tzinfo is not None and ts.utcoffset().total_seconds() == 0


# ---------------------------------------------------------------- lifecycle over the stream


async def test_market_order_partial_then_full_fill(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(prices={"AAPL": "190"})
    broker = make_broker(fake)
    updates = await connected(broker)

    order = await broker.submit(market("mkt-1", qty=D(10)))
    assert (order.client_order_id, order.symbol, order.side, order.order_type) == (
        "mkt-1", "AAPL", "buy", "market")
    assert order.status == "pending_new" and order.qty == D(10) and order.filled_qty == 0
    assert_utc(order.submitted_at)

    new = await next_update(updates, "new")
    assert new.order.broker_order_id == order.broker_order_id and new.order.status == "new"

    fake.fill("mkt-1", qty="4", price="190.25")
    part = await next_update(updates, "partial_fill")
    assert (part.qty, part.price, part.position_qty) == (D(4), D("190.25"), D(4))
    assert part.order.filled_qty == D(4) and part.order.status == "partially_filled"
    assert part.execution_id and isinstance(part.order.filled_qty, D)
    assert_utc(part.timestamp)

    fake.fill("mkt-1", price="190.50")
    full = await next_update(updates, "fill")
    assert (full.qty, full.price) == (D(6), D("190.5"))
    assert full.order.filled_qty == D(10) and full.order.status == "filled"
    assert full.order.filled_avg_price == D("190.4")  # (4*190.25 + 6*190.5) / 10, exact
    assert full.execution_id != part.execution_id

    [position] = await broker.positions()
    assert (position.symbol, position.qty, position.avg_entry_price) == ("AAPL", D(10),
                                                                         D("190.4"))
    assert fake.order_count_by_client_id() == {"mkt-1": 1}
    assert await broker.open_orders() == []


async def test_limit_fractional_and_notional_orders(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(prices={"AAPL": "190", "F": "33"}, auto_fill=True)
    broker = make_broker(fake)
    updates = await connected(broker)

    # a resting limit order (below the price: not marketable, so no auto-fill)
    lim = await broker.submit(limit("lim-1", "2", "189.5"))
    assert (lim.order_type, lim.qty, lim.limit_price) == ("limit", D(2), D("189.5"))
    await next_update(updates, "new")
    [open_order] = await broker.open_orders()
    assert open_order.limit_price == D("189.5") and open_order.status == "new"

    frac = await broker.submit(market("frac-1", qty=D("0.125")))
    assert frac.qty == D("0.125")
    await next_update(updates, "new")
    fill = await next_update(updates, "fill")
    assert (fill.qty, fill.price, fill.order.filled_qty) == (D("0.125"), D(190), D("0.125"))

    notional = await broker.submit(market("ntl-1", symbol="F", notional=D(100)))
    assert notional.notional == D(100) and notional.qty is None
    await next_update(updates, "new")
    fill = await next_update(updates, "fill")
    # 100 / 33 floored to 9 decimals by the broker, carried exactly as a Decimal
    assert fill.qty == D("3.03030303") and fill.order.filled_qty == D("3.03030303")
    assert fill.order.notional == D(100)

    body = fake.requests_log(route="submit_order")[-1]["body"]
    assert body["notional"] == "100" and "qty" not in body  # sent as a decimal string
    assert fake.requests_log(route="submit_order")[0]["body"]["limit_price"] == "189.5"


async def test_cancel_paths(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(prices={"AAPL": "190"})
    broker = make_broker(fake)
    updates = await connected(broker)
    order = await broker.submit(limit("cx-1", "5", "180"))
    await next_update(updates, "new")

    await broker.cancel(order.broker_order_id)
    canceled = await next_update(updates, "canceled")
    assert canceled.order.status == "canceled"

    # already canceled: the broker refuses with 422
    with pytest.raises(CancelRejectedError, match="422"):
        await broker.cancel(order.broker_order_id)

    other = await broker.submit(limit("cx-2", "5", "180"))
    await next_update(updates, "new")
    fake.reject_next_cancel(mode="422")
    with pytest.raises(CancelRejectedError, match="not cancelable"):
        await broker.cancel(other.broker_order_id)
    # accepted (204) but refused later: reported on the stream
    fake.reject_next_cancel(mode="ignore")
    await broker.cancel(other.broker_order_id)
    rejected = await next_update(updates, "order_cancel_rejected")
    assert rejected.order.status == "new"

    with pytest.raises(OrderNotFoundError):
        await broker.cancel(str(uuid.uuid4()))
    with pytest.raises(OrderNotFoundError):
        await broker.cancel("not-a-uuid")
    assert fake.order(other.broker_order_id)["status"] == "new"


async def test_slow_cancel_with_a_fill_in_between(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(prices={"AAPL": "190"})
    broker = make_broker(fake)
    updates = await connected(broker)
    order = await broker.submit(limit("slow-1", "10", "185"))
    await next_update(updates, "new")

    fake.slow_cancels(True)
    await broker.cancel(order.broker_order_id)  # only a request: returns at once
    pending = await next_update(updates, "pending_cancel")
    assert pending.order.status == "pending_cancel"

    fake.fill("slow-1", qty="3", price="185")  # a fill can still arrive
    part = await next_update(updates, "partial_fill")
    assert part.order.filled_qty == D(3) and part.order.status == "pending_cancel"

    fake.complete_pending_cancels()
    done = await next_update(updates, "canceled")
    assert done.order.status == "canceled" and done.order.filled_qty == D(3)


async def test_broker_side_expiry_and_reject(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(prices={"AAPL": "190"})
    broker = make_broker(fake)
    updates = await connected(broker)
    await broker.submit(limit("exp-1", "1", "150"))
    await next_update(updates, "new")
    fake.expire("exp-1")
    expired = await next_update(updates, "expired")
    assert expired.order.status == "expired" and not expired.order.is_open

    await broker.submit(limit("rej-1", "1", "150"))
    await next_update(updates, "new")
    fake.reject("rej-1")
    rejected = await next_update(updates, "rejected")
    assert rejected.order.status == "rejected"


async def test_replace(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(prices={"AAPL": "190"})
    broker = make_broker(fake)
    updates = await connected(broker)
    old = await broker.submit(limit("rp-1", "5", "100"))
    await next_update(updates, "new")

    new = await broker.replace(old.broker_order_id, limit_price=D("101.5"),
                               client_order_id="rp-1b")
    assert new.replaces == old.broker_order_id and new.limit_price == D("101.5")
    assert new.client_order_id == "rp-1b" and new.qty == D(5)
    replaced = await next_update(updates, "replaced")
    assert replaced.order.broker_order_id == old.broker_order_id
    assert replaced.order.replaced_by == new.broker_order_id
    assert (await next_update(updates, "new")).order.broker_order_id == new.broker_order_id

    with pytest.raises(AmbiguousSubmitError) as dup:  # the id is taken: look it up
        await broker.replace(new.broker_order_id, qty=D(4), client_order_id="rp-1")
    assert dup.value.kind == "duplicate_id"
    with pytest.raises(OrderNotFoundError):
        await broker.replace(str(uuid.uuid4()), qty=D(1))
    with pytest.raises(OrderRejectedError):  # already replaced: the broker says no
        await broker.replace(old.broker_order_id, qty=D(1))


# ---------------------------------------------------------------- rejections (certain)


async def test_insufficient_buying_power_is_a_rejection(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(cash="200", prices={"AAPL": "190"})
    broker = make_broker(fake)
    with pytest.raises(OrderRejectedError) as err:
        await broker.submit(market("big-1", qty=D(10)))  # 1900 > 200
    assert (err.value.status, err.value.code) == (403, 40310000)
    assert "insufficient buying power" in str(err.value)
    assert fake.orders() == [] and await broker.get_order_by_client_id("big-1") is None


async def test_other_definite_rejections(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(prices={"AAPL": "190"})
    fake.add_asset("NOFR", fractionable=False)
    broker = make_broker(fake)
    with pytest.raises(OrderRejectedError) as err:
        await broker.submit(market("frac-no", symbol="NOFR", qty=D("0.5")))
    assert (err.value.status, err.value.code) == (422, 42210000)

    # refused locally, never sent: a 49-character id, both qty and notional
    with pytest.raises(OrderRejectedError, match="1..48"):
        await broker.submit(market("x" * 49, qty=D(1)))
    with pytest.raises(OrderRejectedError, match="exactly one"):
        await broker.submit(market("both", qty=D(1), notional=D(5)))
    assert fake.request_count("submit_order") == 1

    bad = make_broker(fake, secret_key="wrong-secret")
    with pytest.raises(OrderRejectedError) as unauth:
        await bad.submit(market("unauth-1", qty=D(1)))
    assert unauth.value.status == 401
    assert fake.orders() == []


# ---------------------------------------------------------------- ambiguous outcomes (F1/F9)


@pytest.mark.parametrize(
    ("fault", "kind"),
    [("delay", "timeout"), ("hang", "timeout"), ("close", "disconnect")],
)
async def test_created_but_no_answer_is_ambiguous_and_found_by_lookup(
    fake_alpaca_factory, make_broker, fault, kind
):
    fake = fake_alpaca_factory(prices={"AAPL": "190"})
    broker = make_broker(fake, request_timeout_s=0.3)
    if fault == "delay":
        fake.delay_next("submit_order", seconds=3)
    elif fault == "hang":
        fake.hang_next("submit_order")
    else:
        fake.close_next("submit_order")

    with pytest.raises(AmbiguousSubmitError) as err:
        await broker.submit(market("amb-1", qty=D(1)))
    assert err.value.kind == kind

    found = await broker.get_order_by_client_id("amb-1")
    assert found is not None and found.client_order_id == "amb-1"
    assert fake.order_count_by_client_id() == {"amb-1": 1}
    assert fake.submit_attempts_by_client_id() == {"amb-1": 1}
    fake.release_hung_requests()


async def test_gateway_timeout_after_create_is_ambiguous_not_retried(
    fake_alpaca_factory, make_broker
):
    """The SDK would retry this POST into a duplicate-id 422 (hiding the 504); with its
    retries off we see the 504 itself, classify it as ambiguous, and resolve by lookup."""
    fake = fake_alpaca_factory(prices={"AAPL": "190"})
    broker = make_broker(fake)
    fake.gateway_timeout_after_create()
    with pytest.raises(AmbiguousSubmitError) as err:
        await broker.submit(market("gw-1", qty=D(1)))
    assert err.value.kind == "server_error" and "504" in str(err.value)
    assert fake.submit_attempts_by_client_id() == {"gw-1": 1}  # no blind resubmit
    found = await broker.get_order_by_client_id("gw-1")
    assert found is not None and found.status in ("new", "pending_new")
    assert fake.order_count_by_client_id() == {"gw-1": 1}


async def test_duplicate_client_id_is_ambiguous(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(prices={"AAPL": "190"})
    broker = make_broker(fake)
    first = await broker.submit(market("dup-1", qty=D(1)))
    with pytest.raises(AmbiguousSubmitError) as err:
        await broker.submit(market("dup-1", qty=D(1)))
    assert err.value.kind == "duplicate_id"
    found = await broker.get_order_by_client_id("dup-1")
    assert found is not None and found.broker_order_id == first.broker_order_id
    assert fake.order_count_by_client_id() == {"dup-1": 1}


async def test_server_error_without_creation_then_lookup_none_and_safe_resubmit(
    fake_alpaca_factory, make_broker
):
    fake = fake_alpaca_factory(prices={"AAPL": "190"})
    broker = make_broker(fake)
    fake.fail_next("submit_order", 500)
    with pytest.raises(AmbiguousSubmitError) as err:
        await broker.submit(market("s5-1", qty=D(1)))
    assert err.value.kind == "server_error"
    assert await broker.get_order_by_client_id("s5-1") is None  # a genuine 404
    # the execution service may then resubmit with the same id: still one order
    await broker.submit(market("s5-1", qty=D(1)))
    assert fake.order_count_by_client_id() == {"s5-1": 1}

    fake.rate_limit_next("submit_order")
    with pytest.raises(AmbiguousSubmitError) as limited:
        await broker.submit(market("rl-1", qty=D(1)))
    assert limited.value.kind == "rate_limited"
    assert fake.submit_attempts_by_client_id()["rl-1"] == 1  # the SDK did not retry
    assert await broker.get_order_by_client_id("rl-1") is None


async def test_unparsable_submit_answer_is_ambiguous(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(prices={"AAPL": "190"})
    broker = make_broker(fake)
    fake.add_fault("submit_order", "error", phase="after", status=200, body="<html>ok</html>")
    with pytest.raises(AmbiguousSubmitError) as err:
        await broker.submit(market("junk-1", qty=D(1)))
    assert err.value.kind == "unparsable"
    assert fake.order_count_by_client_id() == {"junk-1": 1}


async def test_reads_retry_then_report_unavailable_never_none(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(prices={"AAPL": "190"})
    broker = make_broker(fake)  # read_retries=2: three attempts
    fake.rate_limit_next("account", n=2)
    account = await broker.account()
    assert account.cash == D(100000)
    assert fake.request_count("account") == 3

    await broker.submit(market("ro-1", qty=D(1)))
    fake.fail_next("get_order_by_client_id", 503, n=3)
    with pytest.raises(BrokerUnavailableError, match="503"):
        await broker.get_order_by_client_id("ro-1")  # not None: the order may well exist
    assert fake.request_count("get_order_by_client_id") == 3
    assert (await broker.get_order_by_client_id("ro-1")) is not None

    fake.fail_next("account", 401, n=1)  # not retryable
    with pytest.raises(BrokerUnavailableError, match="401"):
        await broker.account()
    assert fake.request_count("account") == 4


# ---------------------------------------------------------------- account, assets


async def test_account_pdt_fields_missing_or_present(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(cash="1234.56")
    broker = make_broker(fake)
    account = await broker.account()
    assert "pattern_day_trader" not in fake.account()
    assert account.daytrade_count is None and account.pattern_day_trader is None
    assert (account.cash, account.equity, account.buying_power) == (
        D("1234.56"), D("1234.56"), D("1234.56"))
    assert account.status == "ACTIVE" and not account.trading_blocked

    fake.set_account(pdt_fields=True, pattern_day_trader=True, daytrade_count=3,
                     trading_blocked=True)
    account = await broker.account()
    assert account.daytrade_count == 3 and account.pattern_day_trader is True
    assert account.trading_blocked

    # should an amount come as a JSON number, it is decoded as an exact Decimal
    fake.add_fault("account", "error", phase="after", status=200, body=(
        '{"id": "acct-1", "equity": 100.1, "cash": 0.1, "buying_power": 12345678.123456789,'
        ' "status": "ACTIVE", "daytrade_count": 2}'))
    numeric = await broker.account()
    assert (numeric.equity, numeric.cash) == (D("100.1"), D("0.1"))
    assert numeric.buying_power == D("12345678.123456789")
    assert numeric.daytrade_count == 2 and numeric.pattern_day_trader is None


async def test_assets_and_short_positions(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(prices={"TSLA": "200"})
    fake.add_asset("NOFR", fractionable=False, shortable=False)
    broker = make_broker(fake)
    aapl = await broker.asset("AAPL")
    assert aapl is not None and aapl.tradable and aapl.fractionable
    nofr = await broker.asset("NOFR")
    assert nofr is not None and not nofr.fractionable and not nofr.shortable
    assert await broker.asset("ZZZZ") is None

    fake.set_position("TSLA", "-5", avg_price="210.5")
    [short] = await broker.positions()
    assert (short.symbol, short.qty, short.avg_entry_price) == ("TSLA", D(-5), D("210.5"))
    assert short.market_value == D(-1000)


# ---------------------------------------------------------------- reconnect and gap fill


async def test_drop_between_partial_fills_reconnects_and_gap_fills(
    fake_alpaca_factory, make_broker
):
    fake = fake_alpaca_factory(prices={"AAPL": "50"})
    broker = make_broker(fake)
    updates = await connected(broker)
    order = await broker.submit(limit("gap-1", "10", "50"))
    await next_update(updates, "new")
    fake.fill("gap-1", qty="3", price="50")
    first = await next_update(updates, "partial_fill")

    fake.block_trade_stream()  # keeps the stream down while the second fill happens
    fake.drop_trade_streams()
    await fake.async_wait_for(lambda: fake.trade_listener_count() == 0)
    missed = fake.fill("gap-1", qty="4", price="50.5")
    assert fake.trade_updates_log()[-1]["delivered_to"] == []  # lost, as at Alpaca
    fake.block_trade_stream(False)

    reconnected = await next_event(updates)
    assert reconnected == StreamConnected(since=first.timestamp, reconnect=True)
    assert broker.stream_health.disconnects == 1 and broker.stream_health.connects == 2

    assert reconnected.since is not None
    [gap_order] = [o for o in await broker.orders_since(reconnected.since)
                   if o.broker_order_id == order.broker_order_id]
    assert gap_order.filled_qty == D(7) and gap_order.status == "partially_filled"
    fills = await broker.fills_since(reconnected.since)
    assert [(f.broker_order_id, f.qty, f.price, f.cum_qty) for f in fills] == [
        (order.broker_order_id, D(4), D("50.5"), D(7))]
    assert fills[0].qty == D(missed["qty"])

    fake.fill("gap-1", price="51")  # the stream carries on after the reconnect
    last = await next_update(updates, "fill")
    assert last.order.filled_qty == D(10) and last.qty == D(3)


async def test_gap_fill_covers_old_orders_finished_during_the_gap(
    fake_alpaca_factory, make_broker
):
    """An order submitted before `since` and completely filled in the gap is neither open
    nor submitted after `since`: orders_since finds it through its fill activity."""
    fake = fake_alpaca_factory(prices={"AAPL": "50", "MSFT": "300"})
    broker = make_broker(fake)
    updates = await connected(broker)
    old = await broker.submit(limit("old-1", "10", "50"))
    await next_update(updates, "new")
    fake.drop_stream_after_next_update()
    fake.fill("old-1", qty="2", price="50")
    seen = await next_update(updates, "partial_fill")  # sent, then the socket drops

    fake.block_trade_stream()
    await fake.async_wait_for(lambda: fake.trade_listener_count() == 0)
    fake.fill("old-1", price="49.5")  # completes during the gap
    external = fake.place_external_order("MSFT", "buy", qty="1", limit_price="290")
    fake.block_trade_stream(False)

    reconnected = await next_event(updates)
    assert isinstance(reconnected, StreamConnected) and reconnected.reconnect
    assert reconnected.since == seen.timestamp
    by_id = {o.broker_order_id: o for o in await broker.orders_since(seen.timestamp)}
    assert by_id[old.broker_order_id].status == "filled"
    assert by_id[old.broker_order_id].filled_qty == D(10)
    assert by_id[external["id"]].status == "new"


async def test_reconnect_without_any_update_still_says_where_the_gap_starts(
    fake_alpaca_factory, make_broker
):
    fake = fake_alpaca_factory()
    broker = make_broker(fake)
    updates = await connected(broker)
    fake.drop_trade_streams()
    again = await next_event(updates)
    assert isinstance(again, StreamConnected) and again.reconnect
    assert again.since is not None and again.since.tzinfo is not None


async def test_duplicate_and_out_of_order_updates_pass_through(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(prices={"AAPL": "100"})
    broker = make_broker(fake)
    updates = await connected(broker)
    await broker.submit(limit("dd-1", "10", "100"))
    await next_update(updates, "new")

    fake.duplicate_next_updates(1)
    fake.fill("dd-1", qty="1", price="100")
    a = await next_update(updates, "partial_fill")
    b = await next_update(updates, "partial_fill")
    assert a == b and a.execution_id == b.execution_id  # dedup is the receiver's job

    fake.reorder_next_update()
    fake.fill("dd-1", qty="2", price="100")  # held back
    fake.fill("dd-1", qty="3", price="100")  # sent first, then the held one
    later = await next_update(updates, "partial_fill")
    earlier = await next_update(updates, "partial_fill")
    assert later.order.filled_qty == D(6) and earlier.order.filled_qty == D(3)
    assert earlier.timestamp < later.timestamp
    # the watermark does not move backwards with the late update
    assert broker.stream_health.last_update_at == later.timestamp
    assert broker.stream_health.disconnects == 0


async def test_unparsable_frames_become_unparsed_messages(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(prices={"AAPL": "100"})
    broker = make_broker(fake)
    updates = await connected(broker)
    order_json = (await broker.submit(limit("up-1", "10", "100"))).broker_order_id
    await next_update(updates, "new")
    valid_order = fake.order("up-1")

    import json

    frames: list[tuple[str | bytes, str]] = [
        ("this is not json", "not JSON"),
        (b"\xff\xfe\x00", "not UTF-8"),
        ("[1, 2, 3]", "not a JSON object"),
        (json.dumps({"stream": "trade_updates", "data": {"event": "fill", "order": {"id": "x"},
                                                         "timestamp": "2026-01-01T00:00:00Z"}}),
         "order"),
        (json.dumps({"stream": "trade_updates",
                     "data": {"event": "fill", "order": valid_order,
                              "timestamp": "2026-01-01T00:00:00Z", "qty": "1"}}),
         "without execution_id"),
        (json.dumps({"stream": "trade_updates",
                     "data": {"event": "new", "order": valid_order, "timestamp": "yesterday"}}),
         "timestamp"),
        (json.dumps({"stream": "trade_updates",
                     "data": {"event": "partial_fill", "order": valid_order,
                              "execution_id": "e1", "timestamp": "2026-01-01T00:00:00Z",
                              "qty": "NaN", "price": "1"}}),
         "not finite"),
        (json.dumps({"stream": "something_else", "data": {}}), "unexpected message"),
    ]
    for payload, _ in frames:
        assert push_raw_trade_frame(fake, payload) == 1
    for payload, error in frames:
        item = await next_event(updates)
        assert isinstance(item, UnparsedMessage), item
        assert error in item.error
        expected = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
        assert item.raw == expected

    # a JSON number (not Alpaca's string) still becomes an exact Decimal, never a float
    push_raw_trade_frame(fake, json.dumps({"stream": "trade_updates", "data": {
        "event": "partial_fill", "order": valid_order, "execution_id": "e2",
        "timestamp": "2026-01-01T00:00:00.123456789Z", "qty": 1, "price": 0.1}}))
    numeric = await next_update(updates, "partial_fill")
    assert numeric.price == D("0.1") and numeric.qty == D(1)
    assert numeric.timestamp == datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)

    fake.fill("up-1", qty="1", price="100")  # the connection survived all of it
    assert (await next_update(updates, "partial_fill")).order.broker_order_id == order_json
    assert broker.stream_health.disconnects == 0


# ---------------------------------------------------------------- one connection per account


@pytest.mark.parametrize("mode", ["http429", "auth_error"])
async def test_second_trade_connection_refused_is_observable(
    fake_alpaca_factory, make_broker, caplog, mode
):
    fake = fake_alpaca_factory(prices={"AAPL": "100"}, trade_stream_limit=mode)
    first = make_broker(fake)
    second = make_broker(fake)
    first_updates = await connected(first)

    second_updates = second.trade_updates()
    refused = await next_event(second_updates)
    assert isinstance(refused, UnparsedMessage)
    assert refused.error.startswith("stream_refused: ")
    health = second.stream_health
    assert health.state == "refused" and health.refusals >= 1 and health.connects == 0
    assert any(r.levelno == logging.ERROR and "REFUSED" in r.getMessage()
               for r in caplog.records)

    # the first connection is unaffected
    await first.submit(limit("one-1", "1", "90"))
    await next_update(first_updates, "new")
    assert first.stream_health.state == "listening"

    # with only one broker per account, the refused one gets in once the other leaves
    await first_updates.aclose()
    joined = await next_event(second_updates)
    assert joined == StreamConnected(since=None, reconnect=False)
    assert second.stream_health.state == "listening"


async def test_one_iterator_per_broker(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory()
    broker = make_broker(fake)
    updates = await connected(broker)
    with pytest.raises(RuntimeError, match="one trade-updates connection"):
        broker.trade_updates()
    await updates.aclose()
    again = broker.trade_updates()  # a new iterator after a closed one is a reconnect
    item = await next_event(again)
    assert isinstance(item, StreamConnected) and item.reconnect and item.since is not None


# ---------------------------------------------------------------- shutdown and hygiene


async def test_closing_is_prompt_and_leaves_nothing_running(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory(prices={"AAPL": "100"})
    broker = make_broker(fake, request_timeout_s=0.5)
    updates = await connected(broker)

    # a consumer waiting for the next update is released by the close
    async def consume() -> list[BrokerEvent]:
        return [item async for item in updates]

    consumer = asyncio.create_task(consume())
    fake.hang_next("account")  # a REST thread stuck until its socket timeout
    stuck = asyncio.create_task(broker.account())
    await fake.async_wait_for(lambda: fake.request_count("account") >= 1)

    await asyncio.wait_for(broker.aclose(), 5)  # cancels the stream, no 5 s stop()
    assert await asyncio.wait_for(consumer, 1) == []
    with pytest.raises(BrokerUnavailableError):
        await stuck
    assert broker.inflight_requests == 0
    assert broker.stream_health.state == "closed"
    assert other_tasks() == []
    assert busy_threads() == []
    with pytest.raises(BrokerUnavailableError):
        await broker.account()
    assert fake.trade_listener_count() == 0 or await fake.async_wait_for(
        lambda: fake.trade_listener_count() == 0)


async def test_close_while_the_stream_is_down_is_prompt(fake_alpaca_factory, make_broker):
    fake = fake_alpaca_factory()
    fake.block_trade_stream()
    broker = make_broker(fake)
    updates = broker.trade_updates()
    pending = asyncio.create_task(next_event(updates, timeout=30))
    await fake.async_wait_for(
        lambda: len(fake.stream_connections(kind="trade", state="refused")) >= 2)
    assert broker.stream_health.state == "connecting"  # never listened yet
    assert broker.stream_health.failures >= 1 and "503" in (broker.stream_health.last_error or "")
    await asyncio.wait_for(updates.aclose(), 2)
    with pytest.raises(StopAsyncIteration):
        await pending


@pytest.mark.parametrize("silence", ["no_auth_reply", "no_listen_reply"])
async def test_silent_server_hits_the_handshake_timeout(make_broker, silence):
    """A server that accepts the websocket and never answers `authenticate` would hang the
    SDK's `_auth` forever; one that authorizes but never confirms `listen` would leave us
    connected and deaf. Both are failed attempts, retried with backoff."""
    accepted = [asyncio.Event(), asyncio.Event()]
    count = 0

    async def mute(ws: ServerConnection) -> None:
        nonlocal count
        if count < len(accepted):
            accepted[count].set()
        count += 1
        if silence == "no_listen_reply":
            await ws.recv()  # authenticate
            await ws.send('{"stream":"authorization","data":{"action":"authenticate",'
                          '"status":"authorized"}}')
        await ws.wait_closed()

    async with serve(mute, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]

        class Stub:
            api_key = "stub-key"
            api_secret = "stub-secret-0123456789"
            rest_url = "http://127.0.0.1:9"
            trading_stream_url = f"ws://127.0.0.1:{port}/stream"

        broker = make_broker(Stub(), handshake_timeout_s=0.3)
        updates = broker.trade_updates()
        pending = asyncio.create_task(next_event(updates, timeout=30))
        await asyncio.wait_for(accepted[1].wait(), WAIT)  # the SDK tried again
        health = broker.stream_health
        assert health.failures >= 1 and "TimeoutError" in (health.last_error or "")
        assert health.connects == 0 and health.state == "connecting"
        assert not pending.done()  # nothing was reported as connected
        await asyncio.wait_for(updates.aclose(), 2)
        with pytest.raises(StopAsyncIteration):
            await pending


async def test_secret_never_logged_raised_or_repred(fake_alpaca_factory, make_broker, caplog):
    secret = "sk-" + uuid.uuid4().hex + uuid.uuid4().hex
    wrong = "wrong-" + uuid.uuid4().hex + uuid.uuid4().hex
    caplog.set_level(logging.DEBUG)
    fake = fake_alpaca_factory(api_secret=secret, prices={"AAPL": "100"})
    broker = make_broker(fake, request_timeout_s=0.3)
    texts: list[str] = []

    updates = await connected(broker)
    order = await broker.submit(limit("sec-1", "5", "100"))
    fake.fill("sec-1", qty="1", price="100")
    fake.drop_trade_streams()
    seen: list[BrokerEvent] = []
    while not (isinstance(seen[-1:] and seen[-1], StreamConnected) and len(seen) > 1):
        seen.append(await next_event(updates))
    texts += [repr(e) for e in seen]

    async def capture(coro: Any) -> None:
        try:
            await coro
        except Exception as exc:  # noqa: BLE001 - we want every error's text
            texts.extend([str(exc), repr(exc), repr(exc.__cause__), repr(exc.__context__)])

    fake.delay_next("submit_order", seconds=2)
    await capture(broker.submit(market("sec-2", qty=D(1))))
    fake.fail_next("get_order_by_client_id", 500, n=3)
    await capture(broker.get_order_by_client_id("sec-2"))
    await capture(broker.cancel(order.broker_order_id))
    await capture(broker.cancel(order.broker_order_id))

    bad = make_broker(fake, secret_key=wrong)
    await capture(bad.account())
    await capture(bad.submit(market("sec-3", qty=D(1))))
    bad_updates = bad.trade_updates()
    texts.append(repr(await next_event(bad_updates)))  # refused: unauthorized
    texts += [repr(broker), repr(bad), repr(broker.stream_health), repr(bad.stream_health),
              repr(fast_config(fake)), str(fast_config(fake)),
              str(fast_config(fake).model_dump())]
    await updates.aclose()
    await bad_updates.aclose()

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    # the fake's own server side logs what it receives; only our side is under test
    ours = [r for r in caplog.records if not r.name.startswith(("websockets.server",
                                                                 "fake_alpaca"))]
    server_side = [r for r in caplog.records if r.name.startswith("websockets.server")]
    log_text = "\n".join(formatter.format(r) for r in ours)
    texts.append(log_text)
    # our authenticate frames were logged at DEBUG, redacted
    assert any("frame redacted" in r.getMessage() for r in ours), "DEBUG frames not captured"

    for s in (secret, wrong):
        chunks = [s[i:i + 10] for i in range(len(s) - 10)]
        for text in texts:
            assert not any(c in text for c in chunks), f"secret fragment leaked in: {text[:200]}"
    # the check can fail: the server side's DEBUG log of the same frames shows a fragment
    server_text = "\n".join(formatter.format(r) for r in server_side)
    assert any(c in server_text for c in [secret[i:i + 10] for i in range(len(secret) - 10)])


async def test_config_validation_and_live_warning(caplog):
    from engine.brokers.alpaca import AlpacaConfig
    from engine.clock import LiveClock

    with pytest.raises(ValueError, match="reconnect_max_backoff_s"):
        AlpacaConfig(key_id="k", secret_key="s", reconnect_min_backoff_s=5,
                     reconnect_max_backoff_s=1)
    cfg = AlpacaConfig(key_id="k", secret_key="s")
    with pytest.raises(ValueError):
        cfg.paper = False  # type: ignore[misc]  # frozen
    caplog.set_level(logging.WARNING)
    live = AlpacaBroker(AlpacaConfig(key_id="k", secret_key="s", paper=False), clock=LiveClock())
    assert any("LIVE" in r.getMessage() for r in caplog.records)
    await live.aclose()
