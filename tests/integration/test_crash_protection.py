"""SIGKILL the real engine right after an entry's fill (its stop leg just went live) and in
the middle of moving a stop (the broker replaced it, the answer never came), restart the real
service, and check: exactly one live stop per open position, covering it; no order twice at
the broker; nothing acknowledged lost; positions equal the broker's.

Seeded; a bounded number of iterations in CI, `pytest -m soak` runs long
(MQD_SOAK_ITERATIONS, default 20)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from events.catalogue import DiscrepancyFound
from events.store import LogReader
from projections.state import rebuild_from_path
from tests.fake_alpaca import FakeAlpaca
from tests.integration.test_crash_recovery import check, engine_env, snapshot
from tests.service.procs import REPO, Service, service
from tests.service.procs import engine_env as process_env

D = Decimal
STOP_TYPES = ("stop", "stop_limit", "trailing_stop")


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca(cash="100000", prices={"AAPL": "100", "MSFT": "100"}, auto_fill=True) as f:
        yield f


def env_for(fake: FakeAlpaca) -> dict[str, str]:
    env = engine_env(fake)
    env.update({
        "MQD_RISK__REQUIRE_PROTECTION": "true",
        "MQD_RECONCILE__MISSING_PROTECTION": "restore",
        "MQD_RECONCILE__INTERVAL_S": "3600",
        # the restarted service must not trade on its own: no bar ever crosses
        "MQD_STRATEGIES": '[{"name": "sma_crossover", "params": {"fast": 5, "slow": 390, '
                          '"qty": "1"}}]',
    })
    return env


def one_stop_per_position(fake: FakeAlpaca) -> None:
    """Each entry of 1 share carries one stop of 1: the live stops of a symbol cover its
    position exactly — none missing, none twice."""
    positions = {p["symbol"]: D(p["qty"]) for p in fake.positions() if D(p["qty"])}
    stops: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for o in fake.orders("open"):
        if o["type"] in STOP_TYPES:
            stops.setdefault(o["symbol"], []).append(o)
    assert set(stops) <= set(positions), f"a stop without a position: {stops}"
    for sym, qty in positions.items():
        live = stops.get(sym, [])
        covered = sum((D(o["qty"]) for o in live), D(0))
        assert covered == abs(qty), f"{sym}: position {qty}, stops {[o['qty'] for o in live]}"


async def log_agrees(log: Path, fake: FakeAlpaca) -> None:
    """The log knows the same live stops (by broker id) and found nothing to explain."""
    proj = await rebuild_from_path(log)
    ours = {o.broker_order_id for o in (proj.orders.orders[c] for c in proj.orders.open_ids)
            if o.order_type in STOP_TYPES}
    theirs = {o["id"] for o in fake.orders("open") if o["type"] in STOP_TYPES}
    assert ours == theirs
    async with LogReader(log) as r:
        odd = [e.kind async for _, e in r.read(where="type = 'discrepancy'")
               if isinstance(e, DiscrepancyFound)]
    assert not odd, odd


def crash_loop(tmp: Path, fake: FakeAlpaca, iterations: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    env = env_for(fake)
    log = tmp / "data" / "events.sqlite"
    stats = {"after_fill": 0, "mid_replace": 0}
    for it in range(iterations):
        mode = rng.choice(["after_fill", "mid_replace"])
        symbols = rng.sample(["AAPL", "MSFT"], rng.randint(1, 2))
        if mode == "mid_replace":
            fake.hang_next("replace_order")  # the stop is replaced; its answer never comes
        args = [sys.executable, "-m", "tests.helpers.protect_worker", "--tag",
                f"crash-{seed}-{it}", "--symbols", ",".join(symbols)]
        if mode == "mid_replace":
            args.append("--replace")
        proc = subprocess.Popen(args, cwd=REPO, env=process_env(tmp, env),
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        worker = Service(proc)
        try:
            if mode == "after_fill":
                worker.wait_for("PARENT_FILLED", timeout=60)
            else:
                worker.wait_for("ENTRIES_DONE", timeout=60)
                # the broker replaces the stop, but neither its stream message nor its
                # answer reaches the engine: only ReplaceRequested is in the log
                fake.suppress_updates(True)
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
                fake.wait_for_requests("replace_order", 1, timeout=30)
            before = asyncio.run(snapshot(log))
            worker.stop(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            fake.suppress_updates(False)
        stats[mode] += 1
        fake.release_hung_requests()
        fake.clear_requests_log()
        with service(tmp, env) as svc:  # the real service recovers, then stops cleanly
            svc.wait_for("engine ready", timeout=90)
            assert svc.stop(signal.SIGTERM) == 0, "".join(svc.lines[-20:])
        asyncio.run(check(log, fake, before))
        one_stop_per_position(fake)
        asyncio.run(log_agrees(log, fake))
    return stats


@pytest.mark.slow
def test_sigkill_after_fill_and_mid_replace_leaves_one_stop_per_position(
        tmp_path: Path, fake: FakeAlpaca) -> None:
    stats = crash_loop(tmp_path, fake, iterations=3, seed=7)
    assert stats["after_fill"] and stats["mid_replace"], stats


@pytest.mark.soak
def test_protection_crash_soak(tmp_path: Path, fake: FakeAlpaca) -> None:
    n = int(os.environ.get("MQD_SOAK_ITERATIONS", "20"))
    stats = crash_loop(tmp_path, fake, iterations=n,
                       seed=int(os.environ.get("MQD_SOAK_SEED", "11")))
    assert sum(stats.values()) == n
