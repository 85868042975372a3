"""Subprocess for the protection crash tests: the engine (settings from the environment, the
real AlpacaBroker) opens protected positions (market OTO entries with a stop leg) and, with
`--replace`, then moves each stop. It says on stderr where it is (`PARENT_FILLED <id>`,
`REPLACING <id>`) so the test can SIGKILL it exactly there; with `--replace` it waits for a
line on stdin before moving the stops. Waits are on log commits."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import anyio
import anyio.to_thread

from engine.app import Engine, open_engine
from engine.clock import LiveClock
from engine.config import load_settings
from events.catalogue import (
    BarReceived,
    OrderIntent,
    RiskApproved,
    StopLoss,
    leg_client_order_id,
)
from events.market import Bar
from projections.orders import OrderStatus

D = Decimal


def say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


async def until(engine: Engine, predicate: Callable[[], bool], timeout: float = 20) -> None:
    changed = asyncio.Event()
    engine.log.on_commit(lambda *_: changed.set())
    with anyio.fail_after(timeout):
        while not predicate():
            changed.clear()
            await changed.wait()


async def fresh_bar(engine: Engine, symbol: str, price: Decimal) -> None:
    now = engine.clock.now()
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    await engine.log.append(BarReceived(ts=now, bar=Bar(
        symbol=symbol, start=start, interval_s=60, open=price, high=price, low=price,
        close=price, volume=D(100000), provider="test")))


async def main(tag: str, symbols: list[str], replace: bool) -> None:
    settings = load_settings()
    clock = LiveClock()
    async with open_engine(settings, clock=clock, strategies=[]) as engine:
        for sym in symbols:
            await fresh_bar(engine, sym, D(100))
        report = await engine.recover(symbols)
        assert report.enabled, report
        async with anyio.create_task_group() as tg:
            await tg.start(engine.execution.run_updates)
            legs = []
            for sym in symbols:
                d = await engine.router.route(OrderIntent(
                    ts=clock.now(), intent_id=f"{tag}-{sym}", strategy="crash", symbol=sym,
                    side="buy", qty=D(1), order_class="oto", time_in_force="gtc",
                    stop_loss=StopLoss(stop_price=D(95))))
                assert isinstance(d, RiskApproved), d
                coid = d.client_order_id
                await until(engine, lambda c=coid: engine.proj.orders.orders[c].status  # type: ignore[misc]
                            == OrderStatus.FILLED)
                say(f"PARENT_FILLED {coid}")
                legs.append(leg_client_order_id(coid, "stop_loss"))
            if replace:
                say("ENTRIES_DONE")  # the test may change the broker's behaviour now
                await anyio.to_thread.run_sync(sys.stdin.readline)
                for sl in legs:
                    say(f"REPLACING {sl}")
                    await engine.execution.replace(sl, stop_price=D(96))
            say("DONE")
            await anyio.sleep_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--tag", required=True)
    p.add_argument("--symbols", default="AAPL")
    p.add_argument("--replace", action="store_true")
    a = p.parse_args()
    asyncio.run(main(a.tag, a.symbols.split(","), a.replace))
