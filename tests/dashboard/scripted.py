"""A scripted log with every kind of thing the page shows."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from events.catalogue import (
    AccountSnapshot,
    AlertSent,
    BrokerStreamStatus,
    DiscrepancyFound,
    KillSwitchEngaged,
    KillSwitchVerified,
    OrderIntent,
    RejectReason,
    RiskRejected,
    RunStarted,
    StrategyError,
    TradingStateChanged,
)
from events.store import EventLog
from tests.factories import T0, approved, bar, fill, later, submitted_chain

D = Decimal


def intent(iid: str, symbol: str, side: str, qty: str, stop: str | None = None, *,
           minutes: int = 0) -> OrderIntent:
    return OrderIntent(ts=later(minutes), intent_id=iid, strategy="test", symbol=symbol,
                       side=side, qty=D(qty), stop_price=D(stop) if stop else None)


def events() -> list[object]:
    evs: list[object] = [
        RunStarted(ts=T0, run_id="run-1", code_version="t", settings_hash="h", mode="paper-simulated"),
        AccountSnapshot(ts=T0, equity=D(1000), cash=D(1000), buying_power=D(1000)),
        TradingStateChanged(ts=T0, state="active", reason="recovery completed"),
        bar("AAPL", later(-1), "100"), bar("MSFT", later(-1), "200"),
        intent("i-c1", "AAPL", "buy", "10", "95"),
        approved("c1", qty="10", intent_id="i-c1"),
        *submitted_chain("c1"),
        fill("c1", "10", "100", done=True, fee="0.5"),
        bar("AAPL", later(0), "103"),
        intent("i-r1", "MSFT", "buy", "3", minutes=1),
        RiskRejected(ts=later(1), intent_id="i-r1", symbol="MSFT", strategy="test", reasons=(
            RejectReason(code="MAX_OPEN_POSITIONS", message="too many positions"),
            RejectReason(code="STALE_DATA", message="MSFT is stale"))),
        intent("i-r2", "MSFT", "buy", "3", minutes=2),
        RiskRejected(ts=later(2), intent_id="i-r2", symbol="MSFT", strategy="test", reasons=(
            RejectReason(code="MAX_OPEN_POSITIONS", message="too many positions"),)),
        intent("i-c3", "AAPL", "buy", "5", "97", minutes=3),
        approved("c3", qty="5", intent_id="i-c3", ts=later(3)),
        *submitted_chain("c3", later(3)),
        intent("i-c4", "AAPL", "sell", "4", minutes=4),
        approved("c4", side="sell", qty="4", intent_id="i-c4", ts=later(4)),
        *submitted_chain("c4", later(4)),
        fill("c4", "4", "104", side="sell", done=True, ts=later(4)),
        bar("AAPL", later(4), "105"),
        DiscrepancyFound(ts=later(5), kind="position_qty", detail="broker says 7", symbol="AAPL",
                         ours="6", broker="7"),
        StrategyError(ts=later(5), strategy="test", error="ValueError: boom", symbol="MSFT"),
        BrokerStreamStatus(ts=later(5), state="reconnecting", connected=False, detail="reset"),
        KillSwitchEngaged(ts=later(6), actor="tester", reason="drill"),
        KillSwitchVerified(ts=later(6), open_orders=0, flat=False),
        AlertSent(ts=later(6), alert_id="kill_switch_engaged:1", kind="kill_switch_engaged",
                  summary="kill switch engaged by tester: drill", webhook="http://127.0.0.1:9",
                  delivered=True, attempts=1, status=200),
    ]
    return evs


async def write(path: Path, extra: list[object] | None = None) -> int:
    async with EventLog.open(path) as log:
        for e in events() + (extra or []):
            log.append_nowait(e)  # type: ignore[arg-type]
        await log.flush()
        return log.last_seq
