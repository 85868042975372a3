"""The startup protocol. Until its last step nothing trades: `RunStarted` puts the trading
state in "recovering", and the gate refuses everything with RECOVERING until
"trading enabled" (a `TradingStateChanged` to active) is appended here.

0. a predecessor run that never ended is sealed as crashed, with the last seq it wrote;
1. `RunStarted` (code version, settings hash); the projections were rebuilt from the log;
2. broker account and positions are fetched;
3. orders are reconciled (fills the broker made while we were down are booked once, missing
   cancels recorded, in-flight submits resolved by client id, orphans adopted or reported);
4. positions are compared and what no order explains is handled by policy;
5. loss limits and the kill switch are checked;
6. only then trading is enabled — or the engine stays halted, saying why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine.clock import Clock
from engine.recovery.reconcile import Reconciler
from engine.risk.limits import RiskLimits
from events.catalogue import (
    FillModel,
    RecoveryCompleted,
    RecoveryStep,
    RunEnded,
    RunSealed,
    RunStarted,
    TradingStateChanged,
)
from events.store import EventLog
from events.vocabulary import ZERO
from projections.calendar import trading_day
from projections.risk import realized_on
from projections.state import Projections


@dataclass
class RecoveryReport:
    run_id: str
    sealed: list[str]
    discrepancies: int
    enabled: bool
    reason: str


def seal_predecessors(proj: Projections, log_: EventLog, clock: Clock) -> list[RunSealed]:
    """Events that seal every run that started and never ended (it crashed): its last seq is
    the last row in the log now, since runs never overlap."""
    last = log_.last_seq
    return [RunSealed(ts=clock.now(), run_id=r.run_id, last_seq=last, reason="crashed")
            for r in proj.runs.runs.values() if not r.ended]


async def start_run(log_: EventLog, proj: Projections, clock: Clock, *, run_id: str,
                    code_version: str, settings_hash: str, mode: str,
                    fill_model: FillModel | None = None) -> list[str]:
    sealed = seal_predecessors(proj, log_, clock)
    for e in sealed:
        await log_.append(e)
    await log_.append(RunStarted(ts=clock.now(), run_id=run_id, code_version=code_version,
                                 settings_hash=settings_hash, mode=mode,
                                 fill_model=fill_model))
    return [e.run_id for e in sealed]


async def end_run(log_: EventLog, clock: Clock, run_id: str, reason: str = "clean") -> None:
    await log_.append(RunEnded(ts=clock.now(), run_id=run_id, reason=reason))


async def recover(log_: EventLog, proj: Projections, clock: Clock, reconciler: Reconciler,
                  limits: RiskLimits, *, run_id: str, code_version: str, settings_hash: str,
                  mode: str,
                  prepare: Callable[[], Awaitable[None]] | None = None,
                  fill_model: FillModel | None = None) -> RecoveryReport:
    """`prepare` runs right after `RunStarted` (e.g. refreshing symbol eligibility): from
    there on a failure is a failure of this run, recorded as such."""
    sealed = await start_run(log_, proj, clock, run_id=run_id, code_version=code_version,
                             settings_hash=settings_hash, mode=mode, fill_model=fill_model)
    if prepare is not None:
        await prepare()

    async def step(name: str, detail: str = "") -> None:
        await log_.append(RecoveryStep(ts=clock.now(), run_id=run_id, step=name, detail=detail))

    await step("replayed", f"projections rebuilt from {proj.last_seq} events"
                           + (f"; sealed crashed run(s) {', '.join(sealed)}" if sealed else ""))
    await reconciler.account_snapshot()
    await step("account", "broker account fetched")
    result = await reconciler.reconcile(startup=True)
    await step("reconciled", f"{result.discrepancies} discrepancies; unexplained positions: "
                             f"{', '.join(result.unexplained) or 'none'}")

    equity = proj.account.equity
    today = trading_day(clock.now())
    realized = realized_on(proj.risk, today)
    limit = limits.daily_limit(equity) if equity > 0 else ZERO
    breached = equity > 0 and realized <= -limit
    await step("limits", f"realized today {realized}; daily limit {limit}"
                         + ("; BREACHED" if breached else ""))

    if proj.risk.kill_switch != "off":
        enabled, state, reason = False, "halted", (
            f"kill switch engaged before restart ({proj.risk.kill_reason}); a person must release it")
    elif result.refused:
        enabled, state, reason = False, "halted", (
            "positions differ from the broker and policy is refuse: "
            + ", ".join(result.unexplained))
    elif breached:
        enabled, state, reason = True, "reducing", (
            f"daily loss limit reached ({realized} <= -{limit}): exits only")
    else:
        enabled, state, reason = True, "active", "recovery completed"
    await log_.append(RecoveryCompleted(ts=clock.now(), run_id=run_id, ok=enabled,
                                        discrepancies=result.discrepancies, detail=reason))
    await log_.append(TradingStateChanged(ts=clock.now(), state=state,  # type: ignore[arg-type]
                                          reason=reason, actor="recovery"))
    return RecoveryReport(run_id=run_id, sealed=sealed, discrepancies=result.discrepancies,
                          enabled=enabled and state == "active", reason=reason)
