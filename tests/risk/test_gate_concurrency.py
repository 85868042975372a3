"""The gate under concurrency, restarts and a failing disk."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import anyio
import pytest
from pydantic import ValidationError

from engine.clock import SimClock
from engine.rebuild import rebuild_from_path
from engine.risk.gate import GateUnavailable, RiskGate
from engine.risk.limits import RiskLimits
from events.catalogue import OrderIntent, RiskApproved, RiskRejected
from events.store import EventLog, LogReader
from tests.risk.world import NOW, approved_, codes, generous, intent, trading_world

D = Decimal
SYMS = ("AAPL", "MSFT")


async def _burst(w, intents: list[OrderIntent]) -> list[RiskApproved | RiskRejected]:  # type: ignore[no-untyped-def]
    return list(await asyncio.gather(*(w.gate.submit(i) for i in intents)))


@pytest.mark.parametrize("run", range(3))
async def test_race_gross_notional(log_path: Path, run: int) -> None:
    lim = generous(max_gross_exposure=D(1000), max_symbol_exposure=D(1000),
                   max_order_notional=D(1000))
    async with trading_world(log_path, cash="100000", limits=lim) as w:
        # 200 concurrent $100-ish buys; 10 fit in $1000 of gross exposure (marked at 100)
        decisions = await _burst(w, [intent(qty="1", intent_id=f"g{run}-{i}") for i in range(200)])
    approved = [d for d in decisions if isinstance(d, RiskApproved)]
    assert len(approved) == 10
    assert all("GROSS_EXPOSURE_LIMIT" in codes(d) or "SYMBOL_EXPOSURE_LIMIT" in codes(d)
               for d in decisions if isinstance(d, RiskRejected))
    reloaded = await rebuild_from_path(log_path)
    assert sum(1 for d in reloaded.risk.decisions.values() if isinstance(d, RiskApproved)) == 10


@pytest.mark.parametrize("run", range(3))
async def test_race_daily_loss_budget(log_path: Path, run: int) -> None:
    lim = generous(daily_loss_limit=D(50), daily_loss_limit_pct=None)
    async with trading_world(log_path, cash="100000", limits=lim) as w:
        await w.hold("MSFT", "10", "50")
        await w.hold("MSFT", "10", "48", side="sell")  # -20 realized: 30 of budget left
        # each intent risks 1 share x (100.5 - 97.5) = 3.0 -> exactly 10 fit
        decisions = await _burst(w, [intent(qty="1", stop_price="97.5", intent_id=f"l{run}-{i}")
                                     for i in range(200)])
    assert sum(isinstance(d, RiskApproved) for d in decisions) == 10
    assert all(codes(d) == {"DAILY_LOSS_LIMIT"} for d in decisions if isinstance(d, RiskRejected))


@pytest.mark.parametrize("run", range(3))
async def test_race_day_trade_guard(log_path: Path, run: int) -> None:
    lim = generous(day_trade_mode="limit", day_trade_limit=3, allow_short=False)
    symbols = [f"S{i}" for i in range(8)]
    prices = {s: "10" for s in symbols}
    async with trading_world(log_path, cash="100000", limits=lim, prices=prices) as w:
        from events.catalogue import AssetInfo

        for s in symbols:
            await w.log.append(AssetInfo(ts=NOW, symbol=s, tradable=True, fractionable=True))
            await w.hold(s, "1", "10")  # opened today
        intents = [intent(symbol=symbols[i % 8], side="sell", qty="1", intent_id=f"d{run}-{i}")
                   for i in range(200)]
        decisions = await _burst(w, intents)
    approved = [d for d in decisions if isinstance(d, RiskApproved)]
    assert len(approved) == 3 and all(d.day_trade for d in approved)


async def test_losses_and_day_trades_still_block_after_restart(log_path: Path) -> None:
    lim = generous(daily_loss_limit=D(10), daily_loss_limit_pct=None, day_trade_mode="limit",
                   day_trade_limit=1)
    async with trading_world(log_path, cash="10000", limits=lim) as w:
        await w.hold("MSFT", "10", "50")
        await w.hold("MSFT", "10", "49", side="sell")  # -10 realized, and a day trade
        assert "DAILY_LOSS_LIMIT" in codes(await w.submit(qty="1"))
    # a new process: projections come only from the log on disk
    proj = await rebuild_from_path(log_path)
    async with EventLog.open(log_path) as log:
        log.subscribe(proj.apply)
        gate = RiskGate(log, proj, lim, SimClock(NOW + timedelta(minutes=5)))
        async with anyio.create_task_group() as tg:
            await tg.start(gate.run)
            from tests.factories import bar

            await log.append(bar("AAPL", NOW + timedelta(minutes=4), close="100",
                                 ts=NOW + timedelta(minutes=5)))
            await log.append(bar("MSFT", NOW + timedelta(minutes=4), close="50",
                                 ts=NOW + timedelta(minutes=5)))
            d = await gate.submit(intent(qty="1", ts=NOW + timedelta(minutes=5)))
            assert "DAILY_LOSS_LIMIT" in codes(d)
            from tests.risk.world import World

            w2 = World(log, proj, gate, SimClock(NOW + timedelta(minutes=5)))
            await w2.hold("AAPL", "1", "100", at=NOW + timedelta(minutes=5))
            d2 = await gate.submit(intent(side="sell", qty="1", ts=NOW + timedelta(minutes=5)))
            assert "DAY_TRADE_LIMIT" in codes(d2)
            gate.close()


async def test_restart_gives_the_same_decision_for_the_same_intent(log_path: Path) -> None:
    """A crash between decision and submit: the re-sent intent is answered from the log."""
    i = OrderIntent(ts=NOW, intent_id="crash-1", strategy="s", symbol="AAPL", side="buy", qty=D(1))
    async with trading_world(log_path, cash="10000") as w:
        first = approved_(await w.gate.submit(i))
    proj = await rebuild_from_path(log_path)
    async with EventLog.open(log_path) as log:
        log.subscribe(proj.apply)
        # even in a world where it would now be refused (kill switch on)
        from events.catalogue import KillSwitchEngaged

        await log.append(KillSwitchEngaged(ts=NOW, actor="t", reason="t"))
        gate = RiskGate(log, proj, generous(), SimClock(NOW))
        async with anyio.create_task_group() as tg:
            await tg.start(gate.run)
            assert await gate.submit(i) == first
            gate.close()
    async with LogReader(log_path) as r:
        assert len(await r.by_intent("crash-1")) == 2  # the intent and one decision, once


async def test_log_failure_halts_the_gate_and_nothing_undurable_is_answered(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        approved_(await w.submit())
        await w.log._db.execute("PRAGMA max_page_count = 1")  # type: ignore[union-attr]
        big = [intent(intent_id="x" * 150 + str(i), reason="r" * 3000) for i in range(20)]
        results = await asyncio.gather(*(w.gate.submit(i) for i in big), return_exceptions=True)
        assert all(isinstance(r, GateUnavailable) for r in results)
        assert w.gate.halted is not None
        with pytest.raises(GateUnavailable):
            await w.gate.submit(intent())
    async with LogReader(log_path) as r:
        assert (await r.verify()).ok
        stored = [e async for _, e in r.read()]
    assert not any(getattr(e, "intent_id", "").startswith("xxx") for e in stored)


def test_nonsensical_limits_refuse_to_start() -> None:
    with pytest.raises(ValidationError, match="max_order_notional"):
        RiskLimits(max_order_notional=D(-5))
    with pytest.raises(ValidationError, match="larger than max_symbol_exposure"):
        RiskLimits(max_order_notional=D(500), max_symbol_exposure=D(100))
    with pytest.raises(ValidationError, match="set daily_loss_limit"):
        RiskLimits(daily_loss_limit=None, daily_loss_limit_pct=None)
    with pytest.raises(ValidationError, match="intraday_leverage"):
        RiskLimits(intraday_leverage=D(0))
    with pytest.raises(ValidationError, match="day_trade_mode"):
        RiskLimits(day_trade_mode="sometimes")  # type: ignore[arg-type]
    assert RiskLimits(deny_symbols="gme, amc").deny_symbols == {"GME", "AMC"}



# These tests hand the loop one turn (`asyncio.sleep(0)`) to let callers just created queue
# their intents: a turn runs every task already scheduled, in order, so the gate (woken by
# the first of them) runs after the test's next step, never before. Nothing is waited for.

async def test_intents_queued_before_close_are_decided_and_later_ones_refused(
        log_path: Path) -> None:
    """close() stops the intake, not the work: what was already asked is answered (and
    durable); what comes after gets GateUnavailable, never a silent hang."""
    async with trading_world(log_path, cash="10000") as w:
        pending = [asyncio.ensure_future(w.gate.submit(intent(intent_id=f"q-{i}")))
                   for i in range(5)]
        await asyncio.sleep(0)  # every caller has queued its intent; the gate has not run
        w.gate.close()
        decided = await asyncio.gather(*pending)
        assert [d.intent_id for d in decided] == [f"q-{i}" for i in range(5)]
        assert all(isinstance(d, RiskApproved) for d in decided)
        with pytest.raises(GateUnavailable, match="not running"):
            await w.gate.submit(intent())
    async with LogReader(log_path) as r:
        for i in range(5):
            assert len(await r.by_intent(f"q-{i}")) == 2  # the intent and its decision


async def test_a_caller_that_gave_up_is_not_decided(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        gone = asyncio.ensure_future(w.gate.submit(intent(intent_id="gone")))
        await asyncio.sleep(0)  # queued, not yet decided
        gone.cancel()
        kept = await w.gate.submit(intent(intent_id="kept"))
        assert isinstance(kept, RiskApproved)
        assert "gone" not in w.proj.risk.decisions
    async with LogReader(log_path) as r:
        assert await r.by_intent("gone") == []


async def test_a_cancelled_gate_fails_its_waiting_and_later_callers(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        gate = RiskGate(w.log, w.proj, generous(), w.clock)  # a second gate, to cancel
        async with anyio.create_task_group() as tg:
            await tg.start(gate.run)
            # The caller queues at the next turn, the gate's cancellation lands right after it
            # (a gate already woken would still decide what it was woken for).
            waiting = asyncio.ensure_future(gate.submit(intent(intent_id="late")))
            tg.cancel_scope.cancel()
        with pytest.raises(GateUnavailable, match="stopped"):
            await waiting
        with pytest.raises(GateUnavailable, match="not running"):
            await gate.submit(intent())
        assert "late" not in w.proj.risk.decisions


async def test_concurrent_submitters_are_decided_one_at_a_time_in_arrival_order(
        log_path: Path) -> None:
    """The log holds each intent right before its own decision: nothing interleaves."""
    async with trading_world(log_path, cash="100000") as w:
        ids = [f"o-{i}" for i in range(50)]
        decided = await _burst(w, [intent(qty="1", intent_id=i) for i in ids])
        assert [d.intent_id for d in decided] == ids
    async with LogReader(log_path) as r:
        rows = [e async for _, e in r.read()
                if isinstance(e, (OrderIntent, RiskApproved, RiskRejected))]
    assert [(type(e).__name__, e.intent_id) for e in rows] == [
        (kind, i) for i in ids for kind in ("OrderIntent", "RiskApproved")]
