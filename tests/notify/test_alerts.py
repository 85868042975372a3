"""Alerts against a real local webhook: delivered, retried on 500, recorded in the log; a
dead webhook does not hold the engine up; the rules, including the timed ones."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from pydantic import SecretStr

from engine.clock import SimClock
from engine.config import NotifySettings
from engine.notify.rules import AlertRules
from engine.notify.service import Notifier
from events.catalogue import (
    AlertSent,
    BrokerStreamStatus,
    DiscrepancyFound,
    KillSwitchEngaged,
    KillSwitchVerified,
    RejectReason,
    RiskRejected,
    StrategyError,
)
from events.store import EventLog, LogReader
from tests.factories import T0, later
from tests.notify.webhook_server import webhook


def settings(*urls: str, **kw: object) -> NotifySettings:
    return NotifySettings(webhook_url=tuple(SecretStr(u) for u in urls),
                          backoff_s=0.01, **kw)  # type: ignore[arg-type]


async def alerts_in(path: Path) -> list[tuple[int, AlertSent]]:
    async with LogReader(path) as r:
        return [(s, e) async for s, e in r.read(where="type = 'alert_sent'")]  # type: ignore[misc]


async def wait_for_alerts(log: EventLog, n: int) -> None:
    got = anyio.Event()
    count = 0

    def seen(seq: int, e: object) -> None:
        nonlocal count
        if isinstance(e, AlertSent):
            count += 1
            if count >= n:
                got.set()
    log.on_commit(seen)
    with anyio.fail_after(30):
        await got.wait()


async def test_delivered_after_retries_on_500_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    with webhook() as hook:
        hook.statuses = [500, 503]
        async with EventLog.open(path) as log, anyio.create_task_group() as tg:
            notifier = Notifier(log, SimClock(T0), settings(hook.url))
            await tg.start(notifier.run)
            seq = await log.append(KillSwitchEngaged(ts=T0, actor="tester", reason="drill"))
            await wait_for_alerts(log, 1)
            tg.cancel_scope.cancel()
    [payload] = hook.received
    assert hook.attempts == 3
    assert payload["kind"] == "kill_switch_engaged" and payload["source_seq"] == seq
    assert "tester" in payload["summary"] and "drill" in payload["summary"]
    [(_, rec)] = await alerts_in(path)
    assert (rec.delivered, rec.attempts, rec.status, rec.source_seq) == (True, 3, 200, seq)
    assert rec.alert_id == payload["alert_id"]
    # who was told: the webhook's host, never its secret path
    assert rec.webhook.startswith("http://127.0.0.1:") and "s3cr3t" not in rec.webhook


async def test_gives_up_after_max_attempts_and_records_the_failure(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    with webhook() as hook:
        hook.statuses = [500] * 10
        async with EventLog.open(path) as log, anyio.create_task_group() as tg:
            await tg.start(Notifier(log, SimClock(T0), settings(hook.url, max_attempts=3)).run)
            await log.append(DiscrepancyFound(ts=T0, kind="position_qty", detail="x",
                                              symbol="AAPL"))
            await wait_for_alerts(log, 1)
            tg.cancel_scope.cancel()
    [(_, rec)] = await alerts_in(path)
    assert (rec.delivered, rec.attempts, rec.status, rec.error) == (False, 3, 500, "HTTP 500")
    assert hook.attempts == 3 and hook.received == []


async def test_a_refused_connection_is_retried_then_recorded(tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    path = tmp_path / "events.sqlite"
    async with EventLog.open(path) as log, anyio.create_task_group() as tg:
        await tg.start(Notifier(log, SimClock(T0), settings(f"http://127.0.0.1:{port}/x",
                                                            max_attempts=2)).run)
        await log.append(StrategyError(ts=T0, strategy="s", error="boom"))
        await wait_for_alerts(log, 1)
        tg.cancel_scope.cancel()
    [(_, rec)] = await alerts_in(path)
    assert not rec.delivered and rec.attempts == 2 and rec.error  # e.g. ConnectionRefusedError


async def test_a_dead_webhook_does_not_hold_the_engine(tmp_path: Path) -> None:
    """The webhook hangs on its first request. Meanwhile the 'engine' appends 300 alert-worthy
    events and every one of them commits; the queue keeps the newest 5 and counts the rest
    as dropped, which the log records once the webhook comes back."""
    path = tmp_path / "events.sqlite"
    with webhook() as hook:
        hook.hold.set()
        async with EventLog.open(path) as log, anyio.create_task_group() as tg:
            notifier = Notifier(log, SimClock(T0), settings(hook.url, queue_size=5))
            await tg.start(notifier.run)
            await log.append(StrategyError(ts=T0, strategy="s0", error="first"))
            await anyio.to_thread.run_sync(hook.wait_for, 1)  # the webhook now hangs
            for i in range(300):
                await log.append(DiscrepancyFound(ts=later(i), kind="k", detail=str(i)))
            # engine progress: all 300 durable while the webhook is still stuck on request 1
            assert log.last_seq == 301 and hook.attempts == 1
            [d] = notifier.deliverers
            assert d.pending == 5 and d.dropped_total == 295
            hook.hold.clear()
            hook.released.set()
            await wait_for_alerts(log, 6)
            tg.cancel_scope.cancel()
    recs = [e for _, e in await alerts_in(path)]
    assert all(r.delivered for r in recs) and len(recs) == 6
    assert sum(r.dropped for r in recs) == 295
    assert [r.summary.split(": ")[-1] for r in recs[1:]] == [str(i) for i in range(295, 300)]


async def test_every_webhook_gets_every_alert(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    with webhook() as a, webhook() as b:
        async with EventLog.open(path) as log, anyio.create_task_group() as tg:
            await tg.start(Notifier(log, SimClock(T0), settings(a.url, b.url)).run)
            await log.append(KillSwitchEngaged(ts=T0, actor="x", reason="y"))
            await wait_for_alerts(log, 2)
            tg.cancel_scope.cancel()
    assert len(a.received) == len(b.received) == 1
    assert len({r.webhook for _, r in await alerts_in(path)}) == 2


def test_rules_loss_limit_once_per_day_and_strategy_paused() -> None:
    rules = AlertRules()
    loss = RiskRejected(ts=T0, intent_id="i", symbol="AAPL", reasons=(
        RejectReason(code="DAILY_LOSS_LIMIT", message="daily loss 7 reached 6"),))
    assert [a.kind for a in rules.on_event(1, loss)] == ["loss_limit"]
    assert rules.on_event(2, loss) == []  # the same day: once
    assert [a.kind for a in rules.on_event(3, KillSwitchEngaged(
        ts=T0 + timedelta(days=1), actor="loss-limit", reason="r"))] == \
        ["kill_switch_engaged", "loss_limit"]
    assert rules.on_event(4, StrategyError(ts=T0, strategy="s", error="e", paused=False)) == []
    assert [a.kind for a in rules.on_event(5, StrategyError(ts=T0, strategy="s", error="e"))] \
        == ["strategy_paused"]


def test_timed_rules_kill_not_verified_and_stream_down() -> None:
    rules = AlertRules(kill_verify_s=30, stream_down_s=60)
    rules.on_event(1, KillSwitchEngaged(ts=T0, actor="op", reason="r"))
    assert rules.due(T0 + timedelta(seconds=29)) == []
    [a] = rules.due(T0 + timedelta(seconds=31))
    assert a.kind == "kill_switch_not_verified" and a.source_seq == 1
    assert rules.due(T0 + timedelta(seconds=99)) == []  # once
    rules.on_event(2, KillSwitchEngaged(ts=T0, actor="op", reason="r"))
    rules.on_event(3, KillSwitchVerified(ts=T0, open_orders=0, flat=True))
    assert rules.due(T0 + timedelta(seconds=99)) == []  # verified in time

    rules.on_event(4, BrokerStreamStatus(ts=T0, state="reconnecting", connected=False))
    rules.on_event(5, BrokerStreamStatus(ts=T0 + timedelta(seconds=10), state="refused",
                                         connected=False))
    assert rules.due(T0 + timedelta(seconds=59)) == []
    [s] = rules.due(T0 + timedelta(seconds=61))  # measured from the first "down"
    assert s.kind == "broker_stream_down"
    rules.on_event(6, BrokerStreamStatus(ts=T0, state="reconnecting", connected=False))
    rules.on_event(7, BrokerStreamStatus(ts=T0, state="listening", connected=True))
    assert rules.due(T0 + timedelta(hours=1)) == []  # back up in time


async def test_timed_alert_fires_on_the_engine_clock(tmp_path: Path) -> None:
    clock = SimClock(T0)
    path = tmp_path / "events.sqlite"
    with webhook() as hook:
        async with EventLog.open(path) as log, anyio.create_task_group() as tg:
            await tg.start(Notifier(log, clock, settings(hook.url, kill_verify_s=5)).run)
            await log.append(KillSwitchEngaged(ts=T0, actor="op", reason="r"))
            await wait_for_alerts(log, 1)
            for s in range(1, 8):
                clock.set(T0 + timedelta(seconds=s))
                await anyio.lowlevel.checkpoint()
            await wait_for_alerts(log, 1)
            tg.cancel_scope.cancel()
    kinds = [r.kind for _, r in await alerts_in(path)]
    assert kinds == ["kill_switch_engaged", "kill_switch_not_verified"]


def test_webhook_urls_are_secret_and_validated() -> None:
    from engine.config import load_settings

    s = load_settings(notify={"webhook_url": ["https://hooks.example/T0/Xk9pQ"]})
    assert "Xk9pQ" not in str(s.public_dict()) and "Xk9pQ" not in repr(s)
    with pytest.raises(Exception, match="http"):
        load_settings(notify={"webhook_url": ["ftp://x/y"]})
