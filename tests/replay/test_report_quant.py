"""What a quant needs from a report, against hand calculations: the buy-and-hold benchmark
(curve, total and excess return, beta, correlation), won/lost/break-even, daily and monthly
returns, annualised figures only with enough trading days, the fill model in the header,
trading-time plots, and an HTML page that opens with no network."""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from events.base import UTC
from events.catalogue import AccountSnapshot
from projections.calendar import NEW_YORK
from replay.backtest.plots import _sample, _session_ticks, render_plots, trades_png, write_html
from replay.backtest.report import build_report_async, render_table, summary_rows
from tests.backtest.test_fill_model import COSTED, two_sessions_backtest
from tests.factories import approved, bar, fill, submitted_chain
from tests.replay.test_report import (
    AAPL,
    HAND_CURVE,
    MSFT,
    PPY,
    constructed_events,
    write_log,
)

D = Decimal


def ny(day: date, hh: int, mm: int) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=NEW_YORK).astimezone(UTC)


def trade(coid: str, side: str, qty: str, price: str, ts: datetime, fee: str = "0",
          symbol: str = "AAPL") -> list[Any]:
    return [approved(coid, symbol=symbol, side=side, qty=qty, price=price, ts=ts),
            *submitted_chain(coid, ts),
            fill(coid, qty, price, side=side, symbol=symbol, ts=ts, fee=fee, done=True)]


async def test_benchmark_against_a_hand_calculation(tmp_path: Path) -> None:
    path = tmp_path / "bt.sqlite"
    await write_log(path, constructed_events())
    r = await build_report_async(path)
    b = r.benchmark
    assert b is not None and b.symbols == ["AAPL", "MSFT"]
    # Equal halves of 10,000 bought at the first opens (100 and 50), held to 108 and 53.
    assert b.entry_prices == {"AAPL": D(100), "MSFT": D(50)}
    assert b.total_return == pytest.approx((108 / 100 + 53 / 50) / 2 - 1, abs=1e-15)  # 7%
    hand = [10000.0] + [10000 * (float(a) / 100 + float(m) / 50) / 2 for a, m in zip(AAPL, MSFT,
                                                                                     strict=True)]
    assert b.curve == pytest.approx(hand, rel=1e-12)
    assert r.total_return == pytest.approx(9969 / 10000 - 1)
    assert b.excess_return == pytest.approx((9969 / 10000 - 1) - 0.07, rel=1e-12)
    # Beta is the least-squares slope of strategy on benchmark per-point returns.
    rs = np.diff([float(x) for x in HAND_CURVE]) / [float(x) for x in HAND_CURVE[:-1]]
    rb = np.diff(hand) / hand[:-1]
    slope = np.polyfit(rb, rs, 1)[0]
    assert b.beta == pytest.approx(slope, rel=1e-9)
    assert b.correlation == pytest.approx(np.corrcoef(rs, rb)[0, 1], rel=1e-9)
    text = render_table(r)
    assert "buy and hold AAPL, MSFT (equal weights): 7.00%" in text
    assert "excess return" in text and "-7.31%" in text


async def test_hand_written_sharpe_agrees_with_empyrical(tmp_path: Path) -> None:
    empyrical = pytest.importorskip("empyrical")
    path = tmp_path / "bt.sqlite"
    await write_log(path, constructed_events())
    r = await build_report_async(path)
    curve = [float(p.equity) for p in r.equity_curve]
    rets = np.diff(curve) / curve[:-1]
    assert r.sharpe == pytest.approx(empyrical.sharpe_ratio(rets, annualization=PPY), rel=1e-9)


async def test_won_lost_and_break_even(tmp_path: Path) -> None:
    t0 = ny(date(2026, 11, 23), 10, 0)
    ev: list[Any] = [AccountSnapshot(ts=t0, equity=D(10000), cash=D(10000),
                                     buying_power=D(10000))]
    legs = [("100", "101", "0"),     # +10 won
            ("100", "99", "0"),      # -10 lost
            ("100", "100", "0"),     # 0 exactly: break-even
            ("100", "100.1", "0.5"),  # +1 - 0.5 - 0.5 = 0 after fees: break-even
            ("100", "100.0004", "0")]  # +0.004: rounds to 0.00, break-even
    for k, (entry, exit_, fee) in enumerate(legs):
        ts = t0 + timedelta(minutes=2 * k)
        ev += trade(f"b{k}", "buy", "10", entry, ts, fee)
        ev.append(bar("AAPL", ts, close=entry))
        ev += trade(f"s{k}", "sell", "10", exit_, ts + timedelta(minutes=1), fee)
        ev.append(bar("AAPL", ts + timedelta(minutes=1), close=exit_))
    path = tmp_path / "bt.sqlite"
    await write_log(path, ev)
    r = await build_report_async(path)
    assert [t.net_pnl for t in r.trades] == [D(10), D(-10), D(0), D("0.0"), D("0.0040")]
    assert (r.closed_trades, r.winning_trades, r.losing_trades, r.break_even_trades) == \
        (5, 1, 1, 3)
    assert r.win_rate == pytest.approx(1 / 5)
    assert "5 closed (1 won, 1 lost, 3 break-even)" in dict(summary_rows(r))["trades"]


def three_days() -> tuple[list[Any], list[tuple[date, str]]]:
    """Friday 27 Nov, Monday 30 Nov, Tuesday 1 Dec 2026: 10 AAPL bought at 100 on the first
    bar and held; closes below."""
    fri, mon, tue = date(2026, 11, 27), date(2026, 11, 30), date(2026, 12, 1)
    closes = [(fri, "100"), (fri, "102"), (mon, "101"), (mon, "99"), (tue, "110")]
    t0 = ny(fri, 10, 0)
    ev: list[Any] = [AccountSnapshot(ts=t0, equity=D(10000), cash=D(10000),
                                     buying_power=D(10000))]
    ev += trade("b", "buy", "10", "100", t0)
    for k, (day, close) in enumerate(closes):
        ev.append(bar("AAPL", ny(day, 10, k), close=close))
    return ev, closes


async def test_daily_and_monthly_returns_by_hand(tmp_path: Path) -> None:
    ev, _ = three_days()
    path = tmp_path / "bt.sqlite"
    await write_log(path, ev)
    r = await build_report_async(path)
    # equity = 9,000 cash + 10 x close: 10,020 Friday, 9,990 Monday, 10,100 Tuesday
    assert [(d.period, d.start_equity, d.end_equity) for d in r.daily_returns] == [
        ("2026-11-27", D(10000), D(10020)), ("2026-11-30", D(10020), D(9990)),
        ("2026-12-01", D(9990), D(10100))]
    assert [d.ret for d in r.daily_returns] == pytest.approx(
        [0.002, 9990 / 10020 - 1, 10100 / 9990 - 1], rel=1e-12)
    # the benchmark is AAPL alone, bought at its first open (100)
    assert [d.benchmark for d in r.daily_returns] == pytest.approx(
        [0.02, 99 / 102 - 1, 110 / 99 - 1], rel=1e-12)
    assert [(m.period, m.start_equity, m.end_equity) for m in r.monthly_returns] == [
        ("2026-11", D(10000), D(9990)), ("2026-12", D(9990), D(10100))]
    assert [m.ret for m in r.monthly_returns] == pytest.approx(
        [-0.001, 10100 / 9990 - 1], rel=1e-12)
    assert r.sessions == 3
    text = render_table(r)
    assert re.search(r"2026\s+-0\.1%\s+1\.1%\s+1\.0%", text), text  # Nov, Dec, the year
    assert re.search(r"2026-11-30\s+9,990\.00\s+-0\.30%\s+-2\.94%", text), text


async def test_annualised_figures_need_enough_trading_days(tmp_path: Path) -> None:
    ev, _ = three_days()
    path = tmp_path / "bt.sqlite"
    await write_log(path, ev)
    r = await build_report_async(path)
    assert not r.annualised_meaningful and r.sharpe is not None  # computed, but flagged
    rows = dict(summary_rows(r))
    for key in ("annualised return", "annualised volatility", "Sharpe", "Sortino"):
        assert rows[key] == "not meaningful (3 trading days; needs 20)"
    assert r.to_builtins()["summary"]["annualised_meaningful"] is False
    ok = await build_report_async(path, min_sessions=3)
    assert ok.annualised_meaningful
    assert dict(summary_rows(ok))["Sharpe"] == f"{ok.sharpe:.2f}"


async def test_fill_model_in_the_header_and_json(tmp_path: Path) -> None:
    res = await two_sessions_backtest(tmp_path, "gtc", **COSTED)
    r = await build_report_async(res.log_path)
    head = render_table(r).splitlines()[0]
    assert head.startswith("fill model")
    assert ("market at the next bar's open; limit when a later bar trades through; slippage "
            "3 bps; fees $0.005/share (min $1); volume cap 25% of a bar's volume; zero-volume "
            "bars: fill at the bar's prices; time in force: gtc") in head
    fm = r.to_builtins()["fill_model"]
    assert fm["zero_volume"] == "fill" and fm["slippage_bps"] == "3"


async def test_old_logs_say_the_fill_model_was_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "bt.sqlite"
    await write_log(path, constructed_events())
    r = await build_report_async(path)
    assert r.fill_model is None
    assert dict(summary_rows(r))["fill model"].startswith("not recorded")


async def test_html_opens_with_no_network(tmp_path: Path) -> None:
    ev, _ = three_days()
    path = tmp_path / "bt.sqlite"
    await write_log(path, ev)
    r = await build_report_async(path)
    page = write_html(r, tmp_path / "out").read_text()
    assert "<img" in page and "Monthly returns" in page and "Daily returns" in page
    assert not re.search(r"https?:", page, re.IGNORECASE)
    assert not re.search(r"<(script|link|iframe|object|embed)\b", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page
    srcs = re.findall(r"""\bsrc\s*=\s*["']([^"']*)""", page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_trading_time_axis_joins_sessions() -> None:
    fri, mon = date(2026, 11, 27), date(2026, 11, 30)
    times = [ny(fri, 15, 58), ny(fri, 15, 59), ny(fri, 16, 0), ny(mon, 9, 31), ny(mon, 9, 32)]
    starts, shown, labels = _session_ticks(list(enumerate(times)))
    # the weekend takes no room: Monday starts right after Friday's last bar (index 3)
    assert starts == shown == [0, 3] and labels == ["2026-11-27", "2026-11-30"]
    many = [ny(date(2026, 1, 5) + timedelta(days=d), 16, 0) for d in range(300)]
    _, _, labels = _session_ticks(list(enumerate(many)), max_labels=12)
    assert len(labels) <= 12


async def test_per_symbol_plot_with_hundreds_of_trades(tmp_path: Path) -> None:
    t0 = ny(date(2026, 11, 23), 9, 30)
    ev: list[Any] = [AccountSnapshot(ts=t0, equity=D(100000), cash=D(100000),
                                     buying_power=D(100000))]
    for k in range(400):
        ts = t0 + timedelta(minutes=2 * k)
        px = str(100 + math.sin(k / 9) * 5)[:8]
        ev += trade(f"b{k}", "buy", "1", px, ts)
        ev.append(bar("AAPL", ts, close=px))
        out = str(float(px) + (0.3 if k % 3 else -0.4))[:8]
        ev += trade(f"s{k}", "sell", "1", out, ts + timedelta(minutes=1))
        ev.append(bar("AAPL", ts + timedelta(minutes=1), close=out))
    path = tmp_path / "bt.sqlite"
    await write_log(path, ev)
    r = await build_report_async(path)
    assert r.closed_trades == 400
    shown = _sample([t for t in r.trades if t.symbol == "AAPL"], 150)
    assert len(shown) == 150 and shown[0] is r.trades[0]
    png = trades_png(r, "AAPL")
    assert png.startswith(b"\x89PNG")
    assert set(render_plots(r)) == {"equity.png", "trades_AAPL.png"}


def test_display_never_shows_minus_zero_and_names_the_bar_interval() -> None:
    from replay.backtest.report import _interval, _money, _pct

    assert _pct(-0.00001, 1) == "0.0%" and _pct(-0.0012, 1) == "-0.1%"
    assert _money(D("-0.004")) == "0.00" and _money(D("-0.006")) == "-0.01"
    assert [_interval(x) for x in (60, 3600, 23_400, 12_600, 86_400)] == [
        "1m", "1h", "1 session (daily)", "1 session (daily)", "1d"]
