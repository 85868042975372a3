"""The fill model says what it does: time in force across a night, the zero-volume policy,
and the chosen model recorded in the run's first event."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.brokers.simulated import SimConfig
from engine.clock import SimClock
from engine.config import load_settings
from engine.strategies.base import Strategy, StrategyParams
from engine.strategies.context import BarHistory, StrategyContext
from events.base import UTC
from events.catalogue import (
    AssetInfo,
    FillReceived,
    OrderExpired,
    OrderIntent,
    RiskApproved,
    RunStarted,
)
from events.market import Bar
from events.store import LogReader
from projections.calendar import NEW_YORK
from projections.state import Projections
from replay.backtest.driver import run_backtest
from tests.execution.simworld import mk_bar, sim_world

D = Decimal
MONDAY = date(2026, 11, 23)


def ny(day: date, hh: int, mm: int) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=NEW_YORK).astimezone(UTC)


LAST_MONDAY_BAR = time(15, 49)


class BuyAtTheClose(Strategy):
    """Buys one share on Monday's last bar in the file (15:49 New York: the symbol stopped
    trading before the close, so the order is sent during the session), once."""

    name = "buy_at_close"
    Params = StrategyParams

    def __init__(self, params: StrategyParams | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.done = False

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent] | None:
        if self.done or bar.start.astimezone(NEW_YORK).time() != LAST_MONDAY_BAR:
            return None
        self.done = True
        return [ctx.order("buy", qty=D(1), reason="last bar of the session")]


def write_two_sessions(path: Path) -> None:
    """WHOLE: Monday 15:40-15:49 and Tuesday 09:30-09:39, opens rising by one cent a bar.
    (A day order sent at or after the close would be queued for the next session, as at
    Alpaca; this one is sent at 15:50, in the session, and has no bar left in it.)"""
    rows = ["symbol,timestamp,open,high,low,close,volume"]
    i = 0
    for day, (hh, mm) in ((MONDAY, (15, 40)), (MONDAY + timedelta(days=1), (9, 30))):
        for k in range(10):
            px = D("50") + D("0.01") * i
            ts = ny(day, hh, mm + k).strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append(f"WHOLE,{ts},{px},{px},{px},{px},1000")
            i += 1
    path.write_text("\n".join(rows) + "\n")


def write_assets(path: Path) -> None:
    path.write_text("symbol,tradable,fractionable,shortable\nWHOLE,true,false,false\n")


# The costed model the header, JSON and RunStarted tests all run (every knob off its default).
COSTED = {"slippage_bps": "3", "fee_per_share": "0.005", "min_fee": "1",
          "volume_participation": "0.25", "zero_volume": "fill"}


async def two_sessions_backtest(tmp_path: Path, tif: str, **sim: str) -> Any:
    """BuyAtTheClose on the two-session file, $10,000 and the given `sim` settings."""
    bars, assets = tmp_path / "bars.csv", tmp_path / "assets.csv"
    write_two_sessions(bars)
    write_assets(assets)
    settings = load_settings(data_dir=tmp_path, data={"assets_path": str(assets)},
                             sim={"cash": "10000", **sim})
    return await run_backtest(settings, bars, tmp_path / "bt.sqlite",
                              strategies=[BuyAtTheClose({"time_in_force": tif})])


async def events_of(path: Path) -> list[Any]:
    async with LogReader(path) as r:
        return [e async for _, e in r.read()]


@pytest.mark.parametrize("tif", ["day", "gtc"])
async def test_a_signal_on_the_sessions_last_bar_fills_at_the_next_open_only_if_gtc(
        tmp_path: Path, tif: str) -> None:
    res = await two_sessions_backtest(tmp_path, tif, slippage_bps="0")
    ev = await events_of(res.log_path)
    approved = [e for e in ev if isinstance(e, RiskApproved)]
    assert len(approved) == 1 and approved[0].time_in_force == tif
    fills = [e for e in ev if isinstance(e, FillReceived)]
    expired = [e for e in ev if isinstance(e, OrderExpired)]
    if tif == "gtc":
        # Tuesday's first bar: its open (50.10), not Monday's close, and nothing expired.
        assert [(f.broker_time, f.price, f.qty) for f in fills] == [
            (ny(MONDAY + timedelta(days=1), 9, 30), D("50.10"), 1)]
        assert expired == []
    else:
        assert fills == []
        assert [e.client_order_id for e in expired] == [approved[0].client_order_id]
    run = next(e for e in ev if isinstance(e, RunStarted))
    assert run.fill_model is not None and run.fill_model.time_in_force == tif


async def test_a_gtc_strategy_sizes_fractionable_symbols_in_whole_shares(
        tmp_path: Path) -> None:
    """Fractional orders must be day orders (Alpaca's rule, which the simulated broker
    enforces), so a gtc strategy buys whole shares even where fractions are allowed."""
    proj = Projections()
    proj.apply(1, AssetInfo(ts=ny(MONDAY, 9, 30), symbol="AAPL", tradable=True,
                            fractionable=True, shortable=True))
    for tif in ("day", "gtc"):
        ctx = StrategyContext("s", proj, SimClock(ny(MONDAY, 9, 30)), BarHistory(),
                              time_in_force=tif)
        size = ctx.size_by_notional(D("1000"), D("333"), "AAPL")
        assert size is not None
        if tif == "day":
            assert size.notional == D("1000.00") and size.qty is None
        else:
            assert size.qty == 3 and size.notional is None
        ctx._begin_event("AAPL", "x")
        intent = ctx.order("buy", size=size)
        assert intent.time_in_force == tif
        # a fractional quantity is always a day order, whatever the default
        assert ctx.order("buy", qty=D("0.5")).time_in_force == "day"


@pytest.mark.parametrize("policy", ["no_fill", "fill"])
async def test_zero_volume_policy(tmp_path: Path, policy: str) -> None:
    cfg = SimConfig(zero_volume=policy, volume_participation=D("0.1"))
    async with sim_world(tmp_path / "log.sqlite", config=cfg) as w:
        await w.bar(mk_bar("AAPL", 0, "100"))
        d = await w.order(qty="10")
        assert isinstance(d, RiskApproved)
        await w.bar(mk_bar("AAPL", 1, "101", v="0"))  # nobody traded this minute
        fills = [e for e in await w.events() if isinstance(e, FillReceived)]
        if policy == "fill":
            assert [(f.qty, f.price) for f in fills] == [(10, D("101"))]  # in full, at the open
        else:
            assert fills == []
            await w.bar(mk_bar("AAPL", 2, "102", v="1000"))  # the next bar with volume does
            fills = [e for e in await w.events() if isinstance(e, FillReceived)]
            assert [(f.qty, f.price) for f in fills] == [(10, D("102"))]


async def test_run_started_records_the_fill_model(tmp_path: Path) -> None:
    res = await two_sessions_backtest(tmp_path, "gtc", **COSTED)
    run = next(e for e in await events_of(res.log_path) if isinstance(e, RunStarted))
    m = run.fill_model
    assert m is not None
    assert (m.slippage_bps, m.fee_per_share, m.fee_bps, m.min_fee, m.volume_participation,
            m.zero_volume, m.time_in_force) == (D(3), D("0.005"), D(0), D(1), D("0.25"),
                                                "fill", "gtc")
    assert "next bar's open" in m.fill_rule
    from replay.forensics.summary import summarize
    assert summarize(run).endswith("; fills: slippage 3 bps, volume cap 0.25, zero volume "
                                   "fill, time in force gtc")
