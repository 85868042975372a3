"""Round trips from strategy intent to filled position through the risk gate, execution and
the SimulatedBroker (live paper mode: a task consumes the broker's update stream), with the
log on disk. Reports round trips/s and intent-to-fill latency (p50/p99), with `--submitters`
concurrent intent sources (each waits for its fill before its next intent).

    python -m bench.execution [--trips 10000] [--submitters 100] [--repeat 3]

The simulated broker is set to fill market orders on arrival (`fill_at_signal_close`), so
the latency is the engine's, not a bar interval.
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

from bench.common import emit, median, percentile
from engine.app import open_engine
from engine.brokers.base import BrokerAsset
from engine.brokers.simulated import SimConfig, SimulatedBroker
from engine.clock import SimClock
from engine.config import load_settings
from events.catalogue import AssetInfo, BarReceived, FillReceived, OrderIntent
from events.market import Bar

NOW = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
D = Decimal


async def run_once(path: Path, trips: int, submitters: int) -> tuple[float, list[float]]:
    symbols = [f"S{i:03d}" for i in range(submitters)]
    clock = SimClock(NOW)
    assets = {s: BrokerAsset(symbol=s, tradable=True, fractionable=True) for s in symbols}
    broker = SimulatedBroker(clock=clock, assets=assets, cash=D(10**12),
                             config=SimConfig(fill_at_signal_close=True))
    settings = load_settings(
        data_dir=path.parent, log_file=path, sim={"cash": str(10**12)},
        risk={"max_order_notional": 10**9, "max_symbol_exposure": 10**10,
              "max_gross_exposure": 10**11, "max_open_positions": 10_000,
              "max_orders_per_minute": 10**9, "day_trade_mode": "off",
              "daily_loss_limit_pct": 1, "weekly_loss_limit_pct": 1})
    done: dict[str, asyncio.Event] = {}
    latencies: list[float] = []
    async with open_engine(settings, clock=clock, broker=broker, strategies=[],
                           step_mode=False) as engine:
        for s in symbols:
            await engine.log.append(AssetInfo(ts=NOW, symbol=s, tradable=True, fractionable=True))
            bar = Bar(symbol=s, start=NOW - timedelta(minutes=1), interval_s=60, open=D(100),
                      high=D(100), low=D(100), close=D(100), volume=D(10**9))
            # the simulated broker used live watches recorded bars (app.paper_exchange)
            await engine.log.append(BarReceived(ts=NOW, bar=bar))
        await engine.recover(symbols)

        def on_fill(seq: int, e: Any) -> None:
            if type(e) is FillReceived and e.order_done:
                ev = done.get(e.client_order_id)
                if ev is not None:
                    ev.set()

        engine.log.subscribe(on_fill)
        per = trips // submitters
        async with anyio.create_task_group() as tg:
            await tg.start(engine.execution.run_updates)

            async def submitter(k: int) -> None:
                sym = symbols[k]
                for i in range(per):
                    side = "buy" if i % 2 == 0 else "sell"  # round trips keep the book flat
                    t = time.perf_counter()
                    d = await engine.router.route(OrderIntent(
                        ts=NOW, intent_id=f"x{k}-{i}", strategy="bench", symbol=sym, side=side,
                        qty=D(1)))
                    coid = getattr(d, "client_order_id", None)
                    if coid is None:
                        raise RuntimeError(f"intent refused: {d}")
                    ev = done.setdefault(coid, asyncio.Event())
                    if not engine.proj.orders.orders[coid].is_open:
                        ev.set()
                    await ev.wait()
                    latencies.append(time.perf_counter() - t)

            start = time.perf_counter()
            async with anyio.create_task_group() as subs:
                for k in range(submitters):
                    subs.start_soon(submitter, k)
            elapsed = time.perf_counter() - start
            tg.cancel_scope.cancel()
    return per * submitters / elapsed, latencies


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trips", type=int, default=10_000)
    ap.add_argument("--submitters", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rates, p50, p99 = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            rate, lat = await run_once(Path(tmp) / f"exec-{r}.sqlite", args.trips,
                                       args.submitters)
            rates.append(rate)
            p50.append(percentile(lat, 0.5) * 1e3)
            p99.append(percentile(lat, 0.99) * 1e3)
    emit("execution", {"round_trips_per_s": round(median(rates)),
                       "intent_to_fill_p50_ms": round(median(p50), 3),
                       "intent_to_fill_p99_ms": round(median(p99), 3),
                       "submitters": args.submitters, "trips": args.trips,
                       "repeat": args.repeat, "target_round_trips_per_s": 10_000})


if __name__ == "__main__":
    asyncio.run(main())
