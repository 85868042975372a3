"""Risk-gate decision latency (submit -> decision durable in the log) and decisions/s, with 1
and with 100 concurrent submitters. Every decision runs every check against projections on a
real on-disk log; limits are set wide so intents are approved (the expensive path).

    python -m bench.risk [--decisions 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from bench.common import SYMBOLS, emit, median, percentile
from engine.clock import SimClock
from engine.risk.gate import RiskGate
from engine.risk.limits import RiskLimits
from events.catalogue import (
    AccountSnapshot,
    AssetInfo,
    BarReceived,
    OrderIntent,
    RunStarted,
    TradingStateChanged,
)
from events.market import Bar
from events.store import EventLog
from projections.state import Projections

NOW = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
D = Decimal
WIDE = RiskLimits(max_order_notional=D(10**9), max_symbol_exposure=D(10**10),
                  max_gross_exposure=D(10**11), max_open_positions=100,
                  daily_loss_limit_pct=D(1), weekly_loss_limit_pct=D(1),
                  max_orders_per_minute=10**9, day_trade_mode="limit", day_trade_limit=10**6)


async def run_once(path: Path, submitters: int, n: int) -> tuple[float, list[float]]:
    proj = Projections()
    clock = SimClock(NOW)
    async with EventLog.open(path) as log:
        log.subscribe(proj.apply)
        seed: list[Any] = [
            RunStarted(ts=NOW, run_id="bench", code_version="bench", settings_hash="", mode="bench"),
            AccountSnapshot(ts=NOW, equity=D(10**12), cash=D(10**12), buying_power=D(10**12)),
            TradingStateChanged(ts=NOW, state="active", reason="bench"),
        ]
        for s in SYMBOLS:
            seed.append(AssetInfo(ts=NOW, symbol=s, tradable=True, fractionable=True))
            b = Bar(symbol=s, start=NOW - timedelta(minutes=1), interval_s=60, open=D(100),
                    high=D(101), low=D(99), close=D(100), volume=D(1000))
            seed.append(BarReceived(ts=NOW, bar=b))
        await log.append_many(seed)
        gate = RiskGate(log, proj, WIDE, clock)
        latencies: list[float] = []
        per = n // submitters
        async with anyio.create_task_group() as tg:
            await tg.start(gate.run)

            async def submitter(k: int) -> None:
                for i in range(per):
                    intent = OrderIntent(ts=NOW, intent_id=f"b{k}-{i}", strategy="bench",
                                         symbol=SYMBOLS[(k + i) % len(SYMBOLS)], side="buy",
                                         qty=D(1), stop_price=D(95))
                    t = time.perf_counter()
                    await gate.submit(intent)
                    latencies.append(time.perf_counter() - t)

            start = time.perf_counter()
            await asyncio.gather(*(submitter(k) for k in range(submitters)))
            elapsed = time.perf_counter() - start
            gate.close()
    return per * submitters / elapsed, latencies


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=20_000)
    ap.add_argument("--single", type=int, default=3_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for subs in (1, 100):
            n = args.single if subs == 1 else args.decisions
            rates, p50, p99 = [], [], []
            for r in range(args.repeat):
                rate, lat = await run_once(Path(tmp) / f"risk-{subs}-{r}.sqlite", subs, n)
                rates.append(rate)
                p50.append(percentile(lat, 0.5) * 1e3)
                p99.append(percentile(lat, 0.99) * 1e3)
            figures[f"s{subs}_decisions_per_s"] = round(median(rates))
            figures[f"s{subs}_p50_ms"] = round(median(p50), 3)
            figures[f"s{subs}_p99_ms"] = round(median(p99), 3)
    figures["repeat"] = args.repeat
    figures["targets"] = {"s1_p99_ms": 1.0, "s100_decisions_per_s": 20_000}
    emit("risk", figures)


if __name__ == "__main__":
    asyncio.run(main())
