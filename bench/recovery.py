"""Time from process start to "trading enabled" for `python -m engine run` against the fake
Alpaca (the real alpaca-py client), with a 1,000,000-event log whose state includes 50 open
orders that also rest at the broker. Measured twice: cold (no snapshot: the whole log is
replayed) and warm (the snapshot a clean stop leaves; only the tail is replayed). Startup
covers interpreter start and imports, replay, broker account/positions/orders, the 50
lookups by client id, and the "trading enabled" event.

    python -m bench.recovery [--events 1000000] [--open-orders 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from bench.common import T0, emit, event_mix, median
from engine.rebuild import rebuild, save_snapshot
from events.catalogue import (
    AccountSnapshot,
    AssetInfo,
    OrderAccepted,
    OrderSubmitRequested,
    OrderSubmitted,
    RiskApproved,
    TradingStateChanged,
)
from events.store import EventLog, LogReader

D = Decimal
REPO = Path(__file__).resolve().parents[1]


async def build(path: Path, n: int, open_orders: int, fake: object) -> None:
    async with EventLog.open(path) as log:
        head = [AccountSnapshot(ts=T0, equity=D(10**7), cash=D(10**7), buying_power=D(10**7)),
                TradingStateChanged(ts=T0, state="active", reason="bench"),
                AssetInfo(ts=T0, symbol="AAPL", tradable=True, fractionable=True)]
        for e in head:
            log.append_nowait(e)
        for i, e in enumerate(event_mix(n - len(head) - 5 * open_orders)):
            log.append_nowait(e)
            if i % 50_000 == 0:
                await log.flush()
        ts = T0 + timedelta(days=1)
        for k in range(open_orders):
            coid = f"mqd-bench-open-{k:03d}"
            placed = fake.place_external_order(  # type: ignore[attr-defined]
                symbol="AAPL", side="buy", qty="1", type="limit", limit_price="50",
                client_order_id=coid, notify=False, validate=False)
            for e in (
                RiskApproved(ts=ts, intent_id=f"open-{k}", client_order_id=coid, strategy="bench",
                             symbol="AAPL", side="buy", order_type="limit", qty=D(1),
                             notional=None, limit_price=D(50), time_in_force="gtc",
                             reference_price=D(50), estimated_notional=D(50), at_risk=D(1)),
                OrderSubmitRequested(ts=ts, client_order_id=coid, intent_id=f"open-{k}",
                                     symbol="AAPL"),
                OrderSubmitted(ts=ts, client_order_id=coid, broker_order_id=placed["id"]),
                OrderAccepted(ts=ts, client_order_id=coid, broker_order_id=placed["id"]),
            ):
                log.append_nowait(e)
        await log.flush()


def start_to_ready(tmp: Path, log: Path, fake: object) -> float:
    from tests.service.procs import Service, engine_env

    env = engine_env(tmp, {
        "MQD_LOG_FILE": str(log), "MQD_BROKER": "alpaca",
        "MQD_ALPACA__KEY_ID": fake.api_key, "MQD_ALPACA__SECRET_KEY": fake.api_secret,  # type: ignore[attr-defined]
        "MQD_ALPACA__REST_URL": fake.rest_url,  # type: ignore[attr-defined]
        "MQD_ALPACA__STREAM_URL": fake.trading_stream_url,  # type: ignore[attr-defined]
        "MQD_DATA__SOURCE": "synthetic", "MQD_DATA__SYMBOLS": '["AAPL"]',
        "MQD_RISK__MAX_OPEN_POSITIONS": "100", "MQD_RECONCILE__INTERVAL_S": "3600",
    })
    import subprocess

    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run"], cwd=tmp, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    svc = Service(proc)
    try:
        svc.wait_for("engine ready", timeout=300)
        elapsed = time.perf_counter() - start
        assert "trading state active" in svc.lines[-1], svc.lines[-5:]
    finally:
        svc.stop()
    return elapsed


async def snapshot_now(log: Path) -> None:
    async with LogReader(log) as r:
        proj = await rebuild(r)
        h = await r.hash_at(proj.last_seq)
    assert h is not None
    save_snapshot(proj, log, h)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--open-orders", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.fake_alpaca import FakeAlpaca

    cold, warm = [], []
    with tempfile.TemporaryDirectory() as t, FakeAlpaca(cash="10000000",
                                                        prices={"AAPL": "100"}) as fake:
        tmp = Path(t)
        base = tmp / "base.sqlite"
        asyncio.run(build(base, args.events, args.open_orders, fake))
        for r in range(args.repeat):
            log = tmp / f"run-{r}.sqlite"
            os.system(f"cp {base} {log}")  # each run starts from the same pristine log
            cold.append(start_to_ready(tmp, log, fake))
            log2 = tmp / f"warm-{r}.sqlite"
            os.system(f"cp {base} {log2}")
            asyncio.run(snapshot_now(log2))
            warm.append(start_to_ready(tmp, log2, fake))
    emit("recovery", {"events": args.events, "open_orders": args.open_orders,
                      "cold_start_to_enabled_s": round(median(cold), 2),
                      "warm_start_to_enabled_s": round(median(warm), 2),
                      "repeat": args.repeat, "target_s": 5.0})


if __name__ == "__main__":
    main()
