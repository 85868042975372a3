"""The real service in a subprocess (simulated paper broker, synthetic 1-second bars on the wall
clock): operator commands against its live log, SIGTERM, restarts."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from events.catalogue import KillSwitchEngaged, KillSwitchReleased, RunEnded, RunSealed, RunStarted
from events.store import LogReader
from tests.service.procs import cli, service

pytestmark = pytest.mark.slow

ENV = {
    "MQD_DATA__SOURCE": "synthetic",
    "MQD_DATA__INTERVAL_S": "1",
    "MQD_DATA__SYMBOLS": '["AAPL", "MSFT"]',
    "MQD_STRATEGIES": '[{"name": "sma_crossover", "params": {"fast": 2, "slow": 3, "notional_fraction": "0.2"}}]',
    "MQD_SIM__CASH": "10000",
    "MQD_RISK__MAX_ORDER_NOTIONAL": "3000",
    "MQD_RISK__MAX_SYMBOL_EXPOSURE": "5000",
    "MQD_RISK__MAX_GROSS_EXPOSURE": "10000",
}


def events(log: Path) -> list[object]:
    async def read() -> list[object]:
        async with LogReader(log) as r:
            return [e async for _, e in r.read()]
    return asyncio.run(read())


def status(tmp: Path) -> dict:  # type: ignore[type-arg]
    r = cli(tmp, "status", "--json", extra=ENV)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_status_halt_resume_sigterm_and_restart(tmp_path: Path) -> None:
    log = tmp_path / "data" / "events.sqlite"
    with service(tmp_path, ENV) as svc:
        svc.wait_for("engine ready")
        s = status(tmp_path)
        assert s["run"]["running"] and s["trading_state"] == "active"

        h = cli(tmp_path, "halt", "--reason", "checking the pipes", "--actor", "tester", "--json",
                extra=ENV)
        assert h.returncode == 0, h.stderr
        answer = json.loads(h.stdout)
        assert answer["verified"] and answer["open_orders"] == 0
        s = status(tmp_path)
        assert s["kill_switch"] == "verified" and s["trading_state"] == "halted"

        r = cli(tmp_path, "resume", "--reason", "pipes fine", "--actor", "tester", extra=ENV)
        assert r.returncode == 0, r.stderr
        s = status(tmp_path)
        assert s["kill_switch"] == "off" and s["trading_state"] == "active"

        assert svc.stop(signal.SIGTERM) == 0
    before = status(tmp_path)
    evs = events(log)
    halts = [e for e in evs if isinstance(e, KillSwitchEngaged)]
    assert [(e.actor, e.reason) for e in halts] == [("tester", "checking the pipes")]
    assert [e.actor for e in evs if isinstance(e, KillSwitchReleased)] == ["tester"]
    assert isinstance(evs[-1], RunEnded) and evs[-1].reason == "signal"

    with service(tmp_path, ENV) as svc:  # a clean restart carries on from the log
        svc.wait_for("engine ready")
        s = status(tmp_path)
        assert s["positions"] == before["positions"] or s["last_seq"] > before["last_seq"]
        assert svc.stop(signal.SIGINT) == 0
    evs = events(log)
    assert sum(isinstance(e, RunStarted) for e in evs) == 2
    assert not any(isinstance(e, RunSealed) for e in evs)


def test_sigkill_then_restart_seals_the_crashed_run(tmp_path: Path) -> None:
    log = tmp_path / "data" / "events.sqlite"
    with service(tmp_path, ENV) as svc:
        svc.wait_for("engine ready")
        svc.stop(signal.SIGKILL)
    crashed_last = max(seq for seq, _ in _seqs(log))
    with service(tmp_path, ENV) as svc:
        svc.wait_for("engine ready")
        svc.stop()
    sealed = [e for e in events(log) if isinstance(e, RunSealed)]
    assert len(sealed) == 1 and sealed[0].last_seq == crashed_last


def test_offline_halt_is_applied_at_the_next_start(tmp_path: Path) -> None:
    with service(tmp_path, ENV) as svc:
        svc.wait_for("engine ready")
        svc.stop()
    h = cli(tmp_path, "halt", "--reason", "weekend", extra=ENV)
    assert h.returncode == 0 and "offline=True" in h.stdout
    with service(tmp_path, ENV) as svc:
        svc.wait_for("engine ready: trading state halted")
        svc.stop()


def _seqs(log: Path) -> list[tuple[int, object]]:
    async def read() -> list[tuple[int, object]]:
        async with LogReader(log) as r:
            return [x async for x in r.read()]
    return asyncio.run(read())


def test_a_broker_unreachable_at_startup_stops_cleanly_with_the_reason(tmp_path: Path) -> None:
    env = {**ENV, "MQD_BROKER": "alpaca", "MQD_ALPACA__KEY_ID": "k", "MQD_ALPACA__SECRET_KEY": "s",
           "MQD_ALPACA__REST_URL": "http://127.0.0.1:9", "MQD_ALPACA__STREAM_URL": "ws://127.0.0.1:9/s",
           "MQD_ALPACA__REQUEST_TIMEOUT_S": "1"}
    r = cli(tmp_path, "run", extra=env, timeout=120)
    assert r.returncode == 3 and "error:" in r.stderr, r.stderr[-2000:]
    evs = events(tmp_path / "data" / "events.sqlite")
    assert isinstance(evs[-1], RunEnded) and evs[-1].reason.startswith("failed during recovery")
    assert not any(getattr(e, "state", None) == "active" for e in evs)  # never enabled
