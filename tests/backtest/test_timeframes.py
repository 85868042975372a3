"""Daily, hourly and minute bars: the interval comes from the data; a date-only timestamp is
that day's regular session, known at its close; an order from a daily bar's signal fills at
the next session's open and never expires for want of an intraday bar."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from engine.config import load_settings
from engine.marketdata.parse import RowParser
from events.catalogue import BarReceived, FillReceived, OrderExpired, OrderIntent, RiskApproved
from events.store import LogReader
from projections.calendar import (
    NEW_YORK,
    business_days_from,
    early_closes,
    order_session,
    session_close,
)
from replay.backtest.driver import run_backtest
from tests.owndata import walk, write_csv, yahoo_daily

# Through Thanksgiving 2026 (a holiday) and the early close the day after it.
DAYS = business_days_from(date(2026, 9, 1), 80)


def _settings(tmp_path: Path, **data: object):
    return load_settings(data_dir=tmp_path, sim={"cash": "100000"}, data=data, strategies=[
        {"name": "sma_crossover", "params": {"fast": 3, "slow": 8}}])


async def _events(path: Path) -> list[object]:
    async with LogReader(path) as r:
        return [e async for _, e in r.read()]


def test_a_date_is_the_session_known_at_its_close() -> None:
    p = RowParser(provider="csv")
    start, length = p.when("2024-03-01")
    assert start == datetime(2024, 3, 1, 14, 30, tzinfo=UTC) and length == 6 * 3600 + 1800
    start, length = p.when("2026-11-27")  # the day after Thanksgiving closes at 13:00
    assert date(2026, 11, 27) in early_closes(2026)
    assert start + timedelta(seconds=length) == datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="NOT_A_TRADING_DAY.*weekend"):
        p.when("2024-03-02")


def test_a_day_order_sent_at_or_after_the_close_is_for_the_next_session() -> None:
    thu = date(2026, 11, 25)  # the day before Thanksgiving
    assert order_session(session_close(thu)) == date(2026, 11, 27)
    assert order_session(session_close(thu) - timedelta(minutes=1)) == thu
    assert order_session(datetime(2026, 11, 28, 15, tzinfo=UTC)) == date(2026, 11, 30)


async def test_daily_bars_with_date_only_timestamps_trade_at_the_next_open(tmp_path: Path) -> None:
    # Yahoo downloads: no symbol column (the file name says it), newest row first.
    files = [yahoo_daily(tmp_path / "acme.csv", DAYS, seed=21, newest_first=True),
             yahoo_daily(tmp_path / "BOLT_daily.csv", DAYS, seed=22)]
    res = await run_backtest(_settings(tmp_path), files, tmp_path / "d.sqlite")
    assert res.interval == "1d (one bar per session)" and sorted(res.default_assets) == [
        "ACME", "BOLT"]
    events = await _events(res.log_path)
    bars = [e.bar for e in events if isinstance(e, BarReceived)]
    assert len(bars) == 2 * len(DAYS)
    half = [b for b in bars if b.start.astimezone(NEW_YORK).date() == date(2026, 11, 27)]
    assert {b.interval_s for b in half} == {3 * 3600 + 1800}
    intents = {e.intent_id: e for e in events if isinstance(e, OrderIntent)}
    approved = {e.client_order_id: e for e in events if isinstance(e, RiskApproved)}
    fills = [e for e in events if isinstance(e, FillReceived)]
    assert len(fills) >= 6, "the crossover must trade on these bars"
    assert not [e for e in events if isinstance(e, OrderExpired)]
    by_start = {(b.symbol, b.start): b for b in bars}
    legs = {leg.client_order_id for a in approved.values() for leg in a.legs}
    # Protective stop legs fill where the stop is reached; the entries and exits are the
    # orders whose timing this test is about.
    fills = [f for f in fills if f.client_order_id not in legs]
    for f in fills:
        intent = intents[approved[f.client_order_id].intent_id]
        signal_day = intent.ts.astimezone(NEW_YORK).date()
        assert intent.ts == session_close(signal_day)  # decided at the session's close
        fill_bar = by_start[(f.symbol, f.broker_time)]
        assert fill_bar.start.astimezone(NEW_YORK).date() == DAYS[DAYS.index(signal_day) + 1]
        slip = Decimal(2) / 10_000  # the default 2 bps against us
        expected = fill_bar.open * (1 + slip if f.side == "buy" else 1 - slip)
        assert f.price == expected.quantize(Decimal("0.0001"))
    assert not res.open_orders


async def test_hourly_bars_trade_across_nights(tmp_path: Path) -> None:
    rows = []
    days = business_days_from(date(2026, 3, 2), 15)
    series = walk(31, len(days) * 7)
    for i, d in enumerate(days):
        for k in range(7):  # 09:30 .. 15:30 New York, as hourly exports stamp them
            ts = datetime.combine(d, datetime.min.time(), NEW_YORK) + timedelta(
                hours=9 + k, minutes=30)
            o, h, lo, c, v = series[i * 7 + k]
            rows.append(["HRLY", ts.isoformat(), str(o), str(h), str(lo), str(c), str(v)])
    path = write_csv(tmp_path / "hourly.csv", rows[::-1])
    res = await run_backtest(_settings(tmp_path), path, tmp_path / "h.sqlite")
    assert res.interval == "1h"
    events = await _events(res.log_path)
    fills = [e for e in events if isinstance(e, FillReceived)]
    assert len(fills) >= 4 and not [e for e in events if isinstance(e, OrderExpired)]
    starts = sorted(e.bar.start for e in events if isinstance(e, BarReceived))
    intents = {e.intent_id: e for e in events if isinstance(e, OrderIntent)}
    approved = {e.client_order_id: e for e in events if isinstance(e, RiskApproved)}
    overnight = 0
    for f in fills:  # at the open of the bar after the one whose close made the signal
        signal = intents[approved[f.client_order_id].intent_id].ts
        i = starts.index(f.broker_time)
        assert starts[i - 1] < signal <= starts[i]
        if f.broker_time.astimezone(NEW_YORK).date() != signal.astimezone(NEW_YORK).date():
            overnight += 1  # a signal on the day's last bar: a day order for the next session
            assert f.broker_time.astimezone(NEW_YORK).time() == datetime.min.time().replace(
                hour=9, minute=30)
    assert overnight >= 1, "the seed must give a signal at a session's last bar"


async def test_declared_timeframe_wins_over_the_inferred_one(tmp_path: Path) -> None:
    rows = []
    t0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    for k, (o, h, lo, c, v) in enumerate(walk(4, 60)):
        # a sparse feed: bars every 10 minutes although they are 5-minute bars
        ts = t0 + timedelta(minutes=10 * k)
        rows.append(["SPRS", ts.strftime("%Y-%m-%dT%H:%M:%SZ"), str(o), str(h), str(lo),
                     str(c), str(v)])
    path = write_csv(tmp_path / "sparse.csv", rows)
    inferred = await run_backtest(_settings(tmp_path), path, tmp_path / "i.sqlite")
    declared = await run_backtest(_settings(tmp_path, timeframe="5m"), path,
                                  tmp_path / "x.sqlite")
    assert inferred.interval == "10m" and declared.interval == "5m"


def test_staleness_of_daily_bars_counts_sessions_not_hours() -> None:
    from engine.risk.checks import _session_bar_fresh

    fri = date(2026, 11, 20)
    start = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)  # Friday's session bar
    two = Decimal(2)
    # Monday morning, 65 hours later: a weekend is not two missing bars
    assert _session_bar_fresh(start, 23400, datetime(2026, 11, 23, 15, tzinfo=UTC), two)
    # until Tuesday's close (two sessions after Friday) it is fresh; after it, stale
    tue_close = session_close(date(2026, 11, 24))
    assert _session_bar_fresh(start, 23400, tue_close, two)
    assert not _session_bar_fresh(start, 23400, tue_close + timedelta(seconds=1), two)
    # Thanksgiving is no session: Wednesday's bar stays fresh until Monday's close
    wed = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
    assert _session_bar_fresh(wed, 23400, session_close(date(2026, 11, 30)), two)
    # an intraday bar is judged in hours as before
    assert not _session_bar_fresh(datetime(2026, 11, 20, 15, tzinfo=UTC), 3600,
                                  datetime(2026, 11, 20, 16, tzinfo=UTC), two)
    assert fri.weekday() == 4
