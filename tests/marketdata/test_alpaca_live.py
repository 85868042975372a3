"""The live provider: the real alpaca-py StockDataStream against the fake data stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import anyio
import pytest

from engine.clock import LiveClock
from engine.marketdata import AlpacaHistory, AlpacaLiveProvider, BadInput, BarValidator
from engine.marketdata.types import MarketItem
from events.catalogue import BarReceived
from events.market import Bar

# Async tests run on asyncio (pytest-asyncio, auto mode): alpaca-py is asyncio-only.


def make_provider(fake, clock, **kw) -> AlpacaLiveProvider:
    return AlpacaLiveProvider(
        ["AAPL"], api_key=fake.api_key, secret_key=fake.api_secret, clock=clock,
        history=AlpacaHistory(fake.historical_client()), url_override=fake.data_stream_url,
        reconnect_backoff=(0.05, 0.2), **kw)


def bar_row(t: datetime, i: int) -> tuple:
    px = 100 + i
    return (t, px, px + 0.5, px - 0.5, px + 0.25, 1000 + i, 10 + i, px + 0.1)


async def next_item(items: AsyncIterator[MarketItem], timeout: float = 10) -> MarketItem:
    with anyio.fail_after(timeout):
        return await items.__anext__()


async def test_live_bars_then_silence_forces_reconnect_and_backfills_once(fake_alpaca):
    clock = LiveClock()
    t0 = clock.now().replace(second=0, microsecond=0) - timedelta(minutes=30)
    rows = [bar_row(t0 + timedelta(minutes=i), i) for i in range(6)]
    provider = make_provider(fake_alpaca, clock, silence_timeout=1.0, max_silence_timeout=4.0)
    got: list[MarketItem] = []
    async with provider, aclosing(provider.stream()) as items:
        await fake_alpaca.async_wait_for_data_subscription("AAPL")
        for r in rows[:2]:
            assert fake_alpaca.push_bar("AAPL", *r[:6], n=r[6], vw=r[7]) == 1
        got += [await next_item(items), await next_item(items)]
        assert provider.stats.forced_reconnects == 0

        # connected but mute: what is pushed now never arrives
        fake_alpaca.mute_data_stream()
        for r in rows[2:4]:
            assert fake_alpaca.push_bar("AAPL", *r[:6], n=r[6], vw=r[7]) == 0
        fake_alpaca.load_bars("AAPL", [rows[2], rows[3], rows[4]], timeframe="1Min")
        # the silence timer fails the socket, the SDK reconnects, history fills the hole
        got += [await next_item(items) for _ in range(3)]
        assert provider.stats.forced_reconnects >= 1
        assert provider.stats.backfilled == 3
        assert len(fake_alpaca.stream_connections(kind="data")) >= 2

        fake_alpaca.mute_data_stream(False)
        await fake_alpaca.async_wait_for(lambda: any(
            c["state"] == "open" and c["authenticated"] and "AAPL" in c["subscriptions"]["bars"]
            for c in fake_alpaca.stream_connections(kind="data")))
        # the stream repeats a bar the backfill delivered: it must not come twice
        repeated = fake_alpaca.push_bar("AAPL", *rows[4][:6], n=rows[4][6], vw=rows[4][7])
        fake_alpaca.load_bars("AAPL", [rows[5]], timeframe="1Min")  # delivered live or backfilled
        fake_alpaca.push_bar("AAPL", *rows[5][:6], n=rows[5][6], vw=rows[5][7])
        got.append(await next_item(items))
    assert all(isinstance(b, Bar) for b in got)
    assert [b.start for b in got] == [r[0] for r in rows]  # each bar once, in order
    assert (got[0].close, got[0].vwap, got[0].trade_count) == (D("100.25"), D("100.1"), 10)
    if repeated == 1:
        assert provider.stats.duplicates_dropped >= 1
    assert fake_alpaca.request_count(route="bars") >= 1
    # and the validator accepts every one of them
    v = BarValidator(clock)
    assert all(isinstance(e, BarReceived) for b in got for e in v.validate(b))


async def test_silence_timer_unsticks_a_server_that_never_says_connected(fake_alpaca):
    fake_alpaca.mute_data_stream(handshake=False)  # alpaca-py's handshake recv() would hang
    clock = LiveClock()
    provider = make_provider(fake_alpaca, clock, silence_timeout=0.5, max_silence_timeout=1.0)
    t = clock.now().replace(second=0, microsecond=0) - timedelta(minutes=5)
    async with provider, aclosing(provider.stream()) as items:
        await fake_alpaca.async_wait_for(
            lambda: len(fake_alpaca.stream_connections(kind="data")) >= 2, timeout=10)
        assert provider.stats.forced_reconnects >= 1
        fake_alpaca.mute_data_stream(False)
        await fake_alpaca.async_wait_for_data_subscription("AAPL", timeout=10)
        fake_alpaca.push_bar("AAPL", *bar_row(t, 0)[:6])
        item = await next_item(items)
    assert isinstance(item, Bar) and item.start == t


async def test_malformed_stream_bar_is_passed_on_as_bad_input(fake_alpaca):
    clock = LiveClock()
    t = clock.now().replace(second=0, microsecond=0) - timedelta(minutes=5)
    provider = make_provider(fake_alpaca, clock, silence_timeout=30)
    async with provider, aclosing(provider.stream()) as items:
        await fake_alpaca.async_wait_for_data_subscription("AAPL")
        fake_alpaca.push_data({"T": "b", "S": "AAPL", "t": t, "o": 10.0, "h": 9.0, "l": 8.0,
                               "c": 8.5, "v": 100, "n": 1, "vw": 9.0})
        fake_alpaca.push_bar("AAPL", t + timedelta(minutes=1), 10, 11, 9, 10.5, 100)
        bad, good = await next_item(items), await next_item(items)
    assert isinstance(bad, BadInput) and bad.reason == "HIGH_BELOW_OPEN_CLOSE"
    assert bad.symbol == "AAPL" and '"h": 9.0' in bad.raw
    assert isinstance(good, Bar) and good.start == t + timedelta(minutes=1)


def test_live_provider_arguments_are_checked():
    kw = {"api_key": "k", "secret_key": "s", "clock": LiveClock(), "history": None}
    with pytest.raises(ValueError, match="feed"):
        AlpacaLiveProvider(["AAPL"], feed="otc", **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="symbol"):
        AlpacaLiveProvider([], **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aware"):
        AlpacaLiveProvider(["AAPL"], backfill_since=datetime(2026, 1, 1), **kw)  # type: ignore[arg-type]
    assert AlpacaLiveProvider(["AAPL"], feed="sip", **kw).feed == "sip"  # type: ignore[arg-type]


async def test_stream_needs_the_provider_entered():
    p = AlpacaLiveProvider(["AAPL"], api_key="k", secret_key="s", clock=LiveClock(),
                           history=None, backfill_since=datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(RuntimeError, match="async with"):
        await p.stream().__anext__()


async def test_resume_from_backfills_from_the_last_bar_on_the_first_connection(fake_alpaca):
    clock = LiveClock()
    t0 = clock.now().replace(second=0, microsecond=0) - timedelta(minutes=20)
    rows = [bar_row(t0 + timedelta(minutes=i), i) for i in range(5)]
    fake_alpaca.load_bars("AAPL", rows, timeframe="1Min")  # t0 was seen by the last run
    provider = make_provider(fake_alpaca, clock, silence_timeout=30)
    provider.resume_from({"AAPL": t0, "MSFT": t0})  # MSFT: not ours, ignored
    async with provider, aclosing(provider.stream()) as items:
        got = [await next_item(items) for _ in range(4)]
    assert [b.start for b in got] == [r[0] for r in rows[1:]]  # from the bar after t0
    assert provider.stats.backfilled == 4


async def test_resume_from_reaches_back_at_most_max_backfill(fake_alpaca):
    clock = LiveClock()
    now = clock.now().replace(second=0, microsecond=0)
    old = now - timedelta(days=30)
    rows = [bar_row(now - timedelta(minutes=m), m) for m in (3, 2)]
    fake_alpaca.load_bars("AAPL", [bar_row(old + timedelta(minutes=1), 0), *rows],
                          timeframe="1Min")
    provider = make_provider(fake_alpaca, clock, silence_timeout=30)
    provider.resume_from({"AAPL": old}, max_backfill=timedelta(minutes=10))
    async with provider, aclosing(provider.stream()) as items:
        got = [await next_item(items) for _ in range(2)]
    assert [b.start for b in got] == [r[0] for r in rows]  # the month-old bar is not fetched
