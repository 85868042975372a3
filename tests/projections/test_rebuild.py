from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from engine.clock import LiveClock
from engine.rebuild import load_snapshot, rebuild, rebuild_from_path, save_snapshot
from events.catalogue import (
    AccountSnapshot,
    KillSwitchEngaged,
    RejectReason,
    RiskRejected,
    RunStarted,
    TradingStateChanged,
)
from events.store import EventLog, LogReader
from projections.calendar import trading_day
from projections.risk import realized_on
from projections.state import Projections
from tests.factories import T0, approved, bar, fill, submitted_chain

D = Decimal


def scripted_session() -> list[Any]:
    ev: list[Any] = [
        RunStarted(ts=T0, run_id="r1", code_version="t", settings_hash="h", mode="paper"),
        AccountSnapshot(ts=T0, equity=D(1000), cash=D(1000), buying_power=D(1000)),
        TradingStateChanged(ts=T0, state="active", reason="recovered"),
    ]
    for i in range(30):
        t = T0 + timedelta(minutes=i)
        ev.append(bar("AAPL", t, close=str(100 + i % 5)))
        ev.append(bar("MSFT", t, close=str(300 - i % 3)))
        if i % 6 == 0:
            coid = f"b{i}"
            ev += [approved(coid, qty="3", ts=t, at_risk="6"), *submitted_chain(coid, t),
                   fill(coid, "1", "100", ts=t, exec_id=f"{coid}-1"),
                   fill(coid, "2", "101", ts=t, exec_id=f"{coid}-2")]
        if i % 6 == 3:
            coid = f"s{i}"
            ev += [approved(coid, side="sell", qty="3", ts=t), *submitted_chain(coid, t),
                   fill(coid, "3", "99", side="sell", ts=t, exec_id=f"{coid}-1"),
                   fill(coid, "3", "99", side="sell", ts=t, exec_id=f"{coid}-1")]  # dup
        if i == 20:
            ev.append(RiskRejected(ts=t, intent_id="bad", symbol="AAPL",
                                   reasons=(RejectReason(code="STALE_DATA", message="old"),)))
    ev.append(KillSwitchEngaged(ts=T0 + timedelta(hours=1), actor="test", reason="why not"))
    return ev


async def write(path: Path, events: list[Any]) -> Projections:
    live = Projections()
    async with EventLog.open(path) as log:
        log.subscribe(live.apply)
        for e in events:
            log.append_nowait(e)
        await log.flush()
    return live


async def test_rebuild_after_restart_equals_state_before(log_path: Path) -> None:
    live = await write(log_path, scripted_session())
    rebuilt = await rebuild_from_path(log_path)
    assert rebuilt.fingerprint() == live.fingerprint()
    assert rebuilt.positions.positions["AAPL"].qty == live.positions.positions["AAPL"].qty
    assert rebuilt.risk.kill_switch == "engaged"
    assert rebuilt.market.last_bar["MSFT"].close == D(300 - 29 % 3)
    # The live side applied full BarReceived events, the rebuild decoded light views:
    # identical state proves the views carry everything the folds read.


@pytest.mark.parametrize("cut", [1, 17, 60, 101])
async def test_snapshot_plus_tail_equals_full_replay(log_path: Path, cut: int) -> None:
    await write(log_path, scripted_session())
    async with LogReader(log_path) as r:
        prefix = await rebuild(r, to_seq=cut)
        h = await r.hash_at(cut)
        assert h is not None
        save_snapshot(prefix, log_path, h)
        loaded = await load_snapshot(r)
        assert loaded is not None and loaded.last_seq == cut
        assert loaded.fingerprint() == prefix.fingerprint()
        resumed = await rebuild(r, start=loaded)
        full = await rebuild(r)
    assert resumed.fingerprint() == full.fingerprint()
    assert (await rebuild_from_path(log_path)).fingerprint() == full.fingerprint()


async def test_snapshot_of_another_log_is_ignored(log_path: Path, tmp_path: Path) -> None:
    await write(log_path, scripted_session())
    async with LogReader(log_path) as r:
        save_snapshot(await rebuild(r, to_seq=10), log_path, b"\x00" * 32)
        assert await load_snapshot(r) is None


async def test_state_as_of_time(log_path: Path) -> None:
    await write(log_path, scripted_session())
    async with LogReader(log_path) as r:
        early = await rebuild(r, at=T0 + timedelta(minutes=2, seconds=30))
    # a bar is recorded when it closes: the 15:01 bar at 15:02, the 15:02 bar only at 15:03
    assert early.market.last_bar["AAPL"].start == T0 + timedelta(minutes=1)
    assert early.risk.kill_switch == "off"


async def test_monday_loss_survives_restart_on_monday_not_tuesday(log_path: Path) -> None:
    events = [approved("b", qty="1"), *submitted_chain("b"), fill("b", "1", "100"),
              approved("s", side="sell", qty="1"), *submitted_chain("s"),
              fill("s", "1", "75", side="sell", ts=T0 + timedelta(hours=2))]
    await write(log_path, events)
    clock = LiveClock()
    with freeze_time("2026-11-23 20:30:00+00:00"):  # Monday afternoon in New York
        restarted = await rebuild_from_path(log_path)
        assert realized_on(restarted.risk, trading_day(clock.now())) == D(-25)
    with freeze_time("2026-11-24 14:31:00+00:00"):  # Tuesday morning
        restarted = await rebuild_from_path(log_path)
        assert realized_on(restarted.risk, trading_day(clock.now())) == 0
