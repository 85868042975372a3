"""Report figures against a hand calculation (and numpy) on a small constructed session, and
against the engine's own projections on a real one."""

from __future__ import annotations

import io
import json
import math
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.cli.forensics import main
from events.catalogue import (
    AccountSnapshot,
    OrderIntent,
    RejectReason,
    RiskRejected,
)
from events.store import EventLog, LogReader
from replay.backtest.plots import write_html, write_plots
from replay.backtest.report import (
    Report,
    ReportBuilder,
    ReportError,
    _periods_per_year,
    build_report,
    build_report_async,
    render_table,
)
from replay.forensics.queries import state_at
from tests.factories import T0, approved, bar, fill, submitted_chain
from tests.replay.session import Session

D = Decimal
PPY = 252 * 390  # one-minute bars: 390 per 6.5 h session

AAPL = ["100", "102", "101", "105", "103", "99", "104", "108"]
MSFT = ["50", "50", "51", "49", "48", "50", "52", "53"]
# minute -> fills booked before that minute's bars (as the simulated broker does: at the open)
FILLS: dict[int, list[tuple[str, str, str, str, str, str]]] = {
    # coid, symbol, side, qty, price, fee
    1: [("a1", "AAPL", "buy", "10", "101", "1")],
    3: [("a2", "AAPL", "sell", "4", "104", "0.5")],
    4: [("m1", "MSFT", "buy", "20", "49", "0")],
    5: [("a3", "AAPL", "sell", "6", "102", "0.5"),
        ("m2", "MSFT", "sell", "30", "48.5", "1.5")],  # crosses zero: long 20 -> short 10
    7: [("m3", "MSFT", "buy", "10", "52", "0.5")],
}
# The same session by hand: cash after each minute's fills, equity at each bar close.
HAND_CURVE = ["10000", "10000", "10009", "9999", "10034.5", "10002.5", "9989.5", "9969.5",
              "9969"]


def t(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def constructed_events() -> list[Any]:
    ev: list[Any] = [AccountSnapshot(ts=T0, equity=D(10000), cash=D(10000),
                                     buying_power=D(10000))]
    for i in range(len(AAPL)):
        for coid, sym, side, qty, price, fee in FILLS.get(i, []):
            ev += [approved(coid, symbol=sym, side=side, qty=qty, price=price, ts=t(i)),
                   *submitted_chain(coid, t(i)),
                   fill(coid, qty, price, side=side, symbol=sym, ts=t(i), fee=fee,
                        exec_id=f"x-{coid}", done=True)]
            if coid == "a1":  # the broker repeats an execution: booked once
                ev.append(fill(coid, qty, price, side=side, symbol=sym, ts=t(i), fee=fee,
                               exec_id="x-a1", done=True))
        if i == 2:
            ev += [OrderIntent(ts=t(i), intent_id="no", strategy="s", symbol="AAPL",
                               side="buy", qty=D(10**6)),
                   RiskRejected(ts=t(i), intent_id="no", symbol="AAPL", strategy="s",
                                reasons=(RejectReason(code="NOTIONAL_EXCEEDS_CASH", message="x"),))]
        ev.append(bar("AAPL", t(i), close=AAPL[i]))
        ev.append(bar("MSFT", t(i), close=MSFT[i]))
    return ev


async def write_log(path: Path, events: list[Any], builder: ReportBuilder | None = None) -> None:
    async with EventLog.open(path) as log:
        if builder is not None:
            log.subscribe(builder.apply)
        await log.append_many(events)


def independent_curve() -> list[Decimal]:
    """Equity from the fills and closes alone (no projections): cash + sum(qty x close)."""
    cash = D(10000)
    qty = {"AAPL": D(0), "MSFT": D(0)}
    closes = {"AAPL": AAPL, "MSFT": MSFT}
    out = [cash]
    for i in range(len(AAPL)):
        for _, sym, side, q, price, fee in FILLS.get(i, []):
            sign = 1 if side == "buy" else -1
            qty[sym] += sign * D(q)
            cash -= sign * D(q) * D(price) + D(fee)
        out.append(cash + sum(qty[s] * D(closes[s][i]) for s in qty))
    return out


@pytest.fixture
async def constructed(tmp_path: Path) -> tuple[Path, Report]:
    path = tmp_path / "bt.sqlite"
    await write_log(path, constructed_events())
    return path, await build_report_async(path)


async def test_equity_curve_and_returns_match_a_hand_calculation(
        constructed: tuple[Path, Report]) -> None:
    _, r = constructed
    curve = independent_curve()
    assert curve == [D(x) for x in HAND_CURVE]  # the test's own arithmetic, checked by hand
    assert [p.equity for p in r.equity_curve] == curve
    assert [p.ts for p in r.equity_curve] == [t(0)] + [t(i + 1) for i in range(len(AAPL))]
    assert r.bars == 8 and r.interval_s == 60 and r.periods_per_year == PPY
    assert r.starting_equity == D(10000) and r.final_equity == D(9969)
    assert r.net_profit == D(-31) and r.total_return == pytest.approx(-0.0031, abs=1e-15)

    eq = np.array([float(x) for x in curve])
    rets = eq[1:] / eq[:-1] - 1
    assert r.sharpe == pytest.approx(rets.mean() / rets.std(ddof=1) * math.sqrt(PPY), rel=1e-9)
    downside = np.sqrt(np.mean(np.minimum(rets, 0) ** 2))
    assert r.sortino == pytest.approx(rets.mean() / downside * math.sqrt(PPY), rel=1e-9)
    assert r.volatility == pytest.approx(rets.std(ddof=1) * math.sqrt(PPY), rel=1e-9)
    assert r.annualised_return == pytest.approx((9969 / 10000) ** (PPY / 8) - 1, rel=1e-9)


async def test_drawdown_is_from_the_peak_and_not_recovered(
        constructed: tuple[Path, Report]) -> None:
    _, r = constructed
    # Peak 10034.5 at the close of minute 3 (t(4)); the low is the last point, 9969.
    assert r.max_drawdown_amount == D("65.5")
    assert r.max_drawdown == pytest.approx(65.5 / 10034.5, rel=1e-12)
    assert (r.max_drawdown_peak, r.max_drawdown_trough) == (t(4), t(8))
    assert not r.max_drawdown_recovered and r.max_drawdown_recovery is None
    assert r.max_drawdown_duration == timedelta(minutes=4) and r.max_drawdown_bars == 4
    eq = np.array([float(x) for x in HAND_CURVE])
    dd = 1 - eq / np.maximum.accumulate(eq)
    assert r.max_drawdown == pytest.approx(dd.max(), rel=1e-12)
    assert r.drawdown_series() == pytest.approx(list(-dd), abs=1e-12)
    # The earlier dip (10009 -> 9999) recovered within one bar; the longest is the last one.
    assert r.longest_drawdown_bars == 4


async def test_trades_fees_win_rate_exposure_and_counts(
        constructed: tuple[Path, Report]) -> None:
    path, r = constructed
    got = [(x.symbol, x.side, x.entry_time, x.exit_time, x.qty, x.entry_price, x.exit_price,
            x.gross_pnl, x.fees, x.net_pnl) for x in r.trades]
    assert got == [
        ("AAPL", "long", t(1), t(5), D(10), D(101), D("102.8"), D(18), D(2), D(16)),
        ("MSFT", "long", t(4), t(5), D(20), D(49), D("48.5"), D(-10), D(1), D(-11)),
        ("MSFT", "short", t(5), t(7), D(10), D("48.5"), D(52), D(-35), D(1), D(-36)),
    ]
    assert not any(x.open for x in r.trades)
    assert r.trades[0].return_pct == pytest.approx(16 / 1010)
    assert (r.closed_trades, r.winning_trades, r.losing_trades) == (3, 1, 2)
    assert r.win_rate == pytest.approx(1 / 3)
    assert r.average_win == D(16) and r.average_loss == D("-23.5")
    assert r.profit_factor == pytest.approx(16 / 47)
    assert r.fees == D(4)
    # Trades add up to the positions projection's realized P&L (net of every fee).
    assert sum(x.net_pnl for x in r.trades) == r.realized_pnl == D(-31)
    assert r.unrealized_pnl == 0
    # A position was open at the closes of minutes 1..6 (6 of 8 bars).
    assert r.exposure == pytest.approx(6 / 8)
    c = r.counts
    assert (c.fills, c.duplicate_fills, c.approved, c.risk_rejected, c.intents, c.bars) == \
        (6, 1, 6, 1, 1, 16)
    async with LogReader(path) as reader:
        assert r.realized_pnl == (await state_at(reader)).realized_total


async def test_risk_free_rate_lowers_sharpe_by_the_per_bar_rate(
        constructed: tuple[Path, Report]) -> None:
    path, r0 = constructed
    r = await build_report_async(path, risk_free=0.05)
    rets = np.diff(np.array([float(x) for x in HAND_CURVE]))
    rets = rets / np.array([float(x) for x in HAND_CURVE[:-1]])
    ex = rets - (1.05 ** (1 / PPY) - 1)
    assert r.sharpe == pytest.approx(ex.mean() / ex.std(ddof=1) * math.sqrt(PPY), rel=1e-9)
    assert r.sharpe is not None and r0.sharpe is not None and r.sharpe < r0.sharpe
    daily = await build_report_async(path, periods_per_year=252)
    assert daily.sharpe == pytest.approx(r0.sharpe * math.sqrt(252 / PPY), rel=1e-9)


async def test_live_builder_equals_reading_the_log_back(tmp_path: Path) -> None:
    path = tmp_path / "live.sqlite"
    live = ReportBuilder()
    await write_log(path, constructed_events(), builder=live)
    from_file = await build_report_async(path)
    assert live.finish(log_path=str(path)).to_json() == from_file.to_json()


def test_sync_entry_point_and_json(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "bt.sqlite"
    asyncio.run(write_log(path, constructed_events()))
    r = build_report(path)
    data = json.loads(r.to_json())
    s = data["summary"]
    assert D(s["final_equity"]) == 9969 and D(s["fees"]) == 4 and s["trades"] == 3
    assert s["total_return"] == pytest.approx(-0.0031)
    assert D(data["max_drawdown_amount"]) == D("65.5")
    assert data["max_drawdown_duration_s"] == 240
    when, equity = data["equity_curve"][4]
    assert when == "2026-11-23T15:04:00Z" and D(equity) == D("10034.5")  # exact, as a string
    assert len(data["trades"]) == 3 and D(data["trades"][0]["net_pnl"]) == 16
    assert "conventions" in data and "prices" not in data
    assert "equity_curve" not in json.loads(r.to_json(series=False))


async def test_sync_entry_point_refuses_a_running_loop(constructed: tuple[Path, Report]) -> None:
    with pytest.raises(RuntimeError, match="build_report_async"):
        build_report(constructed[0])


async def test_no_starting_equity(tmp_path: Path) -> None:
    path = tmp_path / "nosnap.sqlite"
    await write_log(path, constructed_events()[1:])
    with pytest.raises(ReportError, match="no AccountSnapshot"):
        await build_report_async(path)
    r = await build_report_async(path, starting_equity=D(10000))
    assert [p.equity for p in r.equity_curve] == [D(x) for x in HAND_CURVE]


def test_periods_per_year_convention() -> None:
    assert _periods_per_year(60) == 98_280
    assert _periods_per_year(300) == 19_656
    assert _periods_per_year(3600) == 1638
    assert _periods_per_year(86_400) == 252
    assert _periods_per_year(7 * 86_400) == 52


async def test_table_plots_and_html(constructed: tuple[Path, Report], tmp_path: Path) -> None:
    _, r = constructed
    text = render_table(r)
    for needle in ("total return", "-0.31%", "Sharpe", "max drawdown", "0.65%", "33.3%",
                   "75.0%", "MSFT    short"):
        assert needle in text, needle
    out = tmp_path / "plots"
    paths = write_plots(r, out)
    assert sorted(p.name for p in paths) == ["equity.png", "trades_AAPL.png", "trades_MSFT.png"]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    page = write_html(r, out)
    doc = page.read_text()
    assert doc.count("data:image/png;base64,") == 3
    assert "http" not in doc.replace("http-equiv", "")  # self-contained
    assert "<td>MSFT</td><td>short</td>" in doc and "-0.31%" in doc


async def test_report_on_the_engine_session(session: Session) -> None:
    """On a log the real engine slice wrote: figures agree with its projections."""
    r = await build_report_async(session.path)
    async with LogReader(session.path) as reader:
        end = await state_at(reader)
    last = {p.symbol: p.last_price for p in end.positions}["AAPL"]
    assert last is not None
    assert r.final_equity == end.account.cash_now + D(4) * last
    assert r.realized_pnl == end.realized_total
    assert r.fees == D("0.52") + D("0.15") + D("0.66") + D("0.21")
    c = r.counts
    assert (c.intents, c.approved, c.risk_rejected, c.canceled, c.fills) == (6, 5, 1, 1, 4)
    assert [(x.symbol, x.open, x.qty) for x in r.trades] == [("AAPL", False, D(13)),
                                                             ("AAPL", True, D(4))]
    assert r.trades[1].unrealized_pnl == (last - D(106)) * 4


def test_cli_report_writes_json_plots_html(session: Session, tmp_path: Path) -> None:
    out_dir = tmp_path / "rep"
    out = io.StringIO()
    code = main([str(session.path), "report", "--out", str(out_dir)], out=out,
                err=io.StringIO())
    assert code == 0 and "total return" in out.getvalue()
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["equity.png", "report.html", "report.json", "trades_AAPL.png"]
    assert json.loads((out_dir / "report.json").read_text())["summary"]["trades"] == 1
    out = io.StringIO()
    assert main([str(session.path), "report", "--json"], out=out, err=io.StringIO()) == 0
    assert json.loads(out.getvalue())["counts"]["fills"] == 4
