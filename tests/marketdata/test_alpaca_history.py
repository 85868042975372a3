"""Alpaca history through the real alpaca-py client against the fake data REST API."""

from __future__ import annotations

from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from engine.marketdata import AlpacaHistory, AlpacaHistoryProvider, BadInput
from events.market import Bar

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def minute_bars(n: int, base: float = 10.0) -> list[tuple]:
    return [(T0 + timedelta(minutes=i), base + i / 10, base + i / 10 + 0.2, base + i / 10 - 0.1,
             base + i / 10 + 0.1, 100 * (i + 1), 5 + i, base + i / 10 + 0.05) for i in range(n)]


async def test_history_pages_are_merged_in_time_order(fake_alpaca):
    fake_alpaca.load_bars("AAPL", minute_bars(7), timeframe="1Min")
    fake_alpaca.load_bars("MSFT", minute_bars(5, base=400.0), timeframe="1Min")
    fake_alpaca.set_bars_page_size(3)  # forces next_page_token round trips
    provider = AlpacaHistoryProvider(fake_alpaca.historical_client(), ["MSFT", "AAPL"],
                                     T0, T0 + timedelta(hours=1), feed="sip")
    async with provider, aclosing(provider.stream()) as items:
        got = [b async for b in items]
    assert all(isinstance(b, Bar) for b in got)
    assert [(b.start.minute, b.symbol) for b in got][:4] == [
        (0, "AAPL"), (0, "MSFT"), (1, "AAPL"), (1, "MSFT")]
    assert len(got) == 12
    first = got[0]
    # floats on the wire become the decimal they were printed from
    assert (first.open, first.high, first.low, first.close, first.vwap) == (
        Decimal("10.0"), Decimal("10.2"), Decimal("9.9"), Decimal("10.1"), Decimal("10.05"))
    assert first.volume == 100 and first.trade_count == 5 and first.provider == "alpaca-history"
    requests = fake_alpaca.requests_log(route="bars")
    assert len(requests) >= 4 and requests[0]["query"]["feed"] == "sip"
    assert requests[0]["query"]["timeframe"] == "1Min"


async def test_history_is_asked_for_in_chunks(fake_alpaca):
    fake_alpaca.load_bars("AAPL", minute_bars(30), timeframe="1Min")
    provider = AlpacaHistoryProvider(fake_alpaca.historical_client(), ["AAPL"], T0,
                                     T0 + timedelta(minutes=30), chunk=timedelta(minutes=10))
    async with aclosing(provider.stream()) as items:
        got = [b async for b in items]
    assert [b.start for b in got] == [T0 + timedelta(minutes=i) for i in range(30)]
    assert fake_alpaca.request_count(route="bars") == 3  # no overlap, no duplicates


async def test_bad_history_bar_becomes_bad_input(fake_alpaca):
    fake_alpaca.load_bars("AAPL", [(T0, 10, 9.8, 9.5, 9.6, 100, 1, 9.7)])  # high < open
    got = await AlpacaHistory(fake_alpaca.historical_client()).fetch(
        ["AAPL"], T0, T0 + timedelta(minutes=5))
    (bad,) = got
    assert isinstance(bad, BadInput) and bad.reason == "HIGH_BELOW_OPEN_CLOSE"
    assert bad.symbol == "AAPL" and '"h": 9.8' in bad.raw
