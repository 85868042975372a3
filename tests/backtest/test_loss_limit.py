"""The loss-limit kill switch is one code path in backtests and live: driven by booked fills
and marks (no timer), and a halt stays in force on the following days until released."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from engine.app import open_engine
from engine.clock import SimClock
from engine.config import Settings, load_settings
from engine.marketdata.csv_io import CsvBarProvider
from engine.strategies.base import Strategy, StrategyParams
from engine.strategies.context import StrategyContext
from events.base import UTC
from events.catalogue import (
    FillReceived,
    KillSwitchEngaged,
    KillSwitchVerified,
    OrderIntent,
    RiskApproved,
    RiskRejected,
)
from events.market import Bar
from events.store import LogReader
from projections.calendar import NEW_YORK
from replay.backtest.driver import run_backtest

D = Decimal
MONDAY = date(2026, 11, 23)
TUESDAY = MONDAY + timedelta(days=1)


def ny(day: date, hh: int, mm: int) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=NEW_YORK).astimezone(UTC)


class BuyHighSellLow(Strategy):
    """Monday: buys 100 at 09:30, sells them at 09:35 (at a loss on this data). Every later
    bar it asks to buy one share, so a halt shows as refused intents."""

    name = "buy_high_sell_low"
    Params = StrategyParams

    def __init__(self, params: StrategyParams | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent] | None:
        t = bar.start.astimezone(NEW_YORK)
        if t.date() == MONDAY and t.time() == time(9, 30):
            return [ctx.order("buy", qty=D(100), reason="enter")]
        if t.date() == MONDAY and t.time() == time(9, 35):
            return [ctx.order("sell", qty=D(100), reduce_only=True, reason="exit")]
        if t.date() == MONDAY and t.time() < time(9, 40):
            return None
        return [ctx.order("buy", qty=D(1), reason="probe")]


def write_bars(path: Path) -> None:
    """Monday 09:30-09:49 falling from 50 to 45 by 09:36; Tuesday 09:30-09:39 flat at 45."""
    rows = ["symbol,timestamp,open,high,low,close,volume"]
    for day, n in ((MONDAY, 20), (TUESDAY, 10)):
        for k in range(n):
            px = D(50) - min(k, 6) * D("0.8") if day == MONDAY else D(45)
            ts = ny(day, 9, 30 + k).strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append(f"WHOLE,{ts},{px},{px},{px},{px},100000")
    path.write_text("\n".join(rows) + "\n")


def settings_for(tmp: Path) -> Settings:
    assets = tmp / "assets.csv"
    assets.write_text("symbol,tradable,fractionable,shortable\nWHOLE,true,false,false\n")
    return load_settings(
        data_dir=tmp, data={"assets_path": str(assets)},
        sim={"cash": "10000", "slippage_bps": "0"},
        risk={"max_order_notional": "10000", "max_symbol_exposure": "10000",
              "max_gross_exposure": "20000", "daily_loss_limit": "100",
              "daily_loss_limit_pct": None, "default_stop_pct": "0.01",
              "day_trade_mode": "off"})


async def events_of(path: Path) -> list[tuple[int, Any]]:
    async with LogReader(path) as r:
        return [(s, e) async for s, e in r.read()]


def check_halted_after_the_loss(ev: list[tuple[int, Any]]) -> None:
    fills = [(s, e) for s, e in ev if isinstance(e, FillReceived)]
    assert [(e.side, e.qty) for _, e in fills] == [("buy", 100), ("sell", 100)]
    loss_fill_seq = fills[1][0]
    engaged = [(s, e) for s, e in ev if isinstance(e, KillSwitchEngaged)]
    assert len(engaged) == 1
    seq, e = engaged[0]
    assert e.actor == "loss-limit" and "reached the limit 100" in e.reason
    assert seq > loss_fill_seq
    # Nothing was approved after the halt: every probe that day and the next is refused.
    approved_after = [x for s, x in ev if isinstance(x, RiskApproved) and s > seq]
    assert approved_after == []
    refused = [x for s, x in ev if isinstance(x, RiskRejected) and s > seq]
    tuesday = [x for x in refused if x.ts.astimezone(NEW_YORK).date() == TUESDAY]
    assert len(tuesday) == 10
    assert all("KILL_SWITCH_ENGAGED" in {r.code for r in x.reasons} for x in tuesday)
    assert any(isinstance(x, KillSwitchVerified) for _, x in ev)


async def test_a_loss_limit_halt_in_a_backtest_stays_halted_the_next_day(tmp_path: Path) -> None:
    bars = tmp_path / "bars.csv"
    write_bars(bars)
    res = await run_backtest(settings_for(tmp_path), bars, tmp_path / "bt.sqlite",
                             strategies=[BuyHighSellLow()])
    check_halted_after_the_loss(await events_of(res.log_path))


async def test_without_the_kill_switch_the_next_day_trades(tmp_path: Path) -> None:
    """The control: the same run with `kill_switch.on_loss_limit` off trades on Tuesday
    (the day's loss budget is Monday's only), so the test above can fail."""
    bars = tmp_path / "bars.csv"
    write_bars(bars)
    s = settings_for(tmp_path).model_copy(update={"kill_switch": settings_for(
        tmp_path).kill_switch.model_copy(update={"on_loss_limit": False})})
    res = await run_backtest(s, bars, tmp_path / "bt.sqlite", strategies=[BuyHighSellLow()])
    ev = await events_of(res.log_path)
    assert not any(isinstance(e, KillSwitchEngaged) for _, e in ev)
    tuesday = [e for _, e in ev if isinstance(e, RiskApproved)
               and e.ts.astimezone(NEW_YORK).date() == TUESDAY]
    assert tuesday


async def test_live_mode_trips_on_the_same_fill(tmp_path: Path) -> None:
    """The live path (broker updates consumed by a task, the watch as a task): the same
    bars trip the same kill switch, and the next day stays halted."""
    bars = tmp_path / "bars.csv"
    write_bars(bars)
    settings = settings_for(tmp_path)
    log_path = tmp_path / "live.sqlite"
    items = [i async for i in _bars(bars)]
    clock = SimClock(items[0].start)
    async with open_engine(settings, clock=clock, strategies=[BuyHighSellLow()],
                           log_path=log_path, step_mode=False) as engine:
        engaged = anyio.Event()
        booked = {"n": 0}
        changed = anyio.Event()

        def watch(seq: int, e: Any) -> None:
            nonlocal changed
            if isinstance(e, KillSwitchEngaged):
                engaged.set()
            if isinstance(e, FillReceived):
                booked["n"] += 1
                changed.set()
                changed = anyio.Event()

        engine.log.subscribe(watch)
        async with anyio.create_task_group() as tg:
            await tg.start(engine.execution.run_updates)
            tg.start_soon(engine.loss_watch.run)
            await engine.recover(["WHOLE"])
            for bar in items:
                # Fills of orders placed on earlier bars arrive through the update stream;
                # wait for the ones this bar makes before the next bar, as time would.
                expected = _fills_due(engine, bar)
                clock.set(bar.end)  # live, time passes by itself; the engine never moves it
                await engine.on_item(bar)
                with anyio.fail_after(10):
                    while booked["n"] < expected:
                        await changed.wait()
                if booked["n"] == 2:
                    with anyio.fail_after(10):
                        await engaged.wait()
            await engine.stop("done")
            tg.cancel_scope.cancel()
    check_halted_after_the_loss(await events_of(log_path))


def _fills_due(engine: Any, bar: Bar) -> int:
    """Fills booked so far plus one per open order of this bar's symbol (market orders fill
    in full at the next bar on this data)."""
    open_orders = sum(1 for c in engine.proj.orders.open_ids
                      if engine.proj.orders.orders[c].symbol == bar.symbol
                      and engine.proj.orders.orders[c].broker_order_id is not None)
    return len(engine.proj.orders.execution_ids) + open_orders


async def _bars(path: Path) -> Any:
    async with CsvBarProvider(path) as p:
        async for item in p.stream():
            yield item


class AlsoHoldOther(BuyHighSellLow):
    """As BuyHighSellLow on WHOLE, and buys 10 OTHER at Monday's open to hold."""

    name = "also_hold_other"

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent] | None:
        if bar.symbol == "OTHER":
            t = bar.start.astimezone(NEW_YORK)
            if t.date() == MONDAY and t.time() == time(9, 30):
                return [ctx.order("buy", qty=D(10), reason="hold")]
            return None
        return super().on_bar(bar, ctx)


async def test_a_flattening_halt_sells_what_is_held_and_is_verified_once_flat(
        tmp_path: Path) -> None:
    bars = tmp_path / "bars.csv"
    write_bars(bars)
    lines = bars.read_text().splitlines()
    # OTHER trades at a flat 20 beside WHOLE, bar for bar
    extra = [ln.replace("WHOLE,", "OTHER,").rsplit(",", 5)[0] + ",20,20,20,20,100000"
             for ln in lines[1:]]
    bars.write_text("\n".join([lines[0], *sorted(lines[1:] + extra,
                                                 key=lambda x: x.split(",")[1])]) + "\n")
    base = settings_for(tmp_path)
    (tmp_path / "assets.csv").write_text("symbol,tradable,fractionable,shortable\n"
                                         "WHOLE,true,false,false\nOTHER,true,false,false\n")
    s = base.model_copy(update={"kill_switch": base.kill_switch.model_copy(
        update={"flatten": True})})
    res = await run_backtest(s, bars, tmp_path / "bt.sqlite", strategies=[AlsoHoldOther()])
    ev = await events_of(res.log_path)
    engaged = [(q, e) for q, e in ev if isinstance(e, KillSwitchEngaged)]
    assert len(engaged) == 1 and engaged[0][1].flatten
    other = [e for _, e in ev if isinstance(e, FillReceived) and e.symbol == "OTHER"]
    assert [(f.side, f.qty) for f in other] == [("buy", 10), ("sell", 10)]
    sell_seq = next(q for q, e in ev if isinstance(e, FillReceived) and e.symbol == "OTHER"
                    and e.side == "sell")
    verified = [(q, e) for q, e in ev if isinstance(e, KillSwitchVerified)]
    assert len(verified) == 1
    assert verified[0][0] > sell_seq > engaged[0][0] and verified[0][1].flat
