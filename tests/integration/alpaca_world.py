"""The engine wired to the real AlpacaBroker (alpaca-py) talking to the fake Alpaca server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from engine.app import Engine, open_engine
from engine.brokers.alpaca import AlpacaBroker, AlpacaConfig
from engine.clock import LiveClock
from engine.config import load_settings
from events.catalogue import BarReceived, OrderIntent
from events.market import Bar
from events.store import LogReader

D = Decimal
SYMBOLS = ("AAPL", "MSFT", "F")


def broker_for(fake: Any, clock: LiveClock) -> AlpacaBroker:
    return AlpacaBroker(AlpacaConfig(
        key_id=fake.api_key, secret_key=fake.api_secret, paper=True, rest_url=fake.rest_url,
        stream_url=fake.trading_stream_url, request_timeout_s=1.0, read_retries=2,
        retry_backoff_s=0.01, reconnect_min_backoff_s=0.05, reconnect_max_backoff_s=0.2,
        handshake_timeout_s=2.0), clock=clock)


@dataclass
class AlpacaWorld:
    engine: Engine
    fake: Any
    clock: LiveClock
    n: int = 0

    async def tick(self, symbol: str, price: str) -> None:
        """A bar that just closed, so the gate has fresh data."""
        now = self.clock.now()
        start = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
        p = D(price)
        bar = Bar(symbol=symbol, start=start, interval_s=60, open=p, high=p, low=p, close=p,
                  volume=D(100000), provider="test")
        await self.engine.log.append(BarReceived(ts=now, bar=bar))

    async def order(self, symbol: str = "AAPL", side: str = "buy", qty: str | None = "10",
                    **kw: Any) -> Any:
        self.n += 1
        intent = OrderIntent(ts=self.clock.now(), intent_id=kw.pop("intent_id", f"e2e-{self.n}"),
                             strategy="test", symbol=symbol, side=side,
                             qty=D(qty) if qty is not None else None, **kw)
        return await self.engine.router.route(intent)

    async def until(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        """Wait (on log commits, not on time) until `predicate()` holds."""
        changed = asyncio.Event()
        self.engine.log.on_commit(lambda *_: changed.set())
        with anyio.fail_after(timeout):
            while not predicate():
                changed.clear()
                await changed.wait()

    def order_of(self, coid: str) -> Any:
        return self.engine.proj.orders.orders[coid]

    async def events(self) -> list[Any]:
        await self.engine.log.flush()
        async with LogReader(self.engine.log.path) as r:
            return [e async for _, e in r.read()]


@asynccontextmanager
async def alpaca_world(path: Path, fake: Any, strategies: Any = None,
                       **settings: Any) -> AsyncIterator[AlpacaWorld]:
    clock = LiveClock()
    s = load_settings(data_dir=path.parent, log_file=path, **settings)
    broker = broker_for(fake, clock)
    try:
        async with open_engine(s, clock=clock, broker=broker, strategies=strategies) as engine:
            world = AlpacaWorld(engine, fake, clock)
            for sym, px in (("AAPL", "190"), ("MSFT", "400"), ("F", "12")):
                await world.tick(sym, px)
            report = await engine.recover(SYMBOLS)
            assert report.enabled, report
            async with anyio.create_task_group() as tg:
                await tg.start(engine.execution.run_updates)
                await tg.start(engine.run_fill_feed)
                await fake.async_wait_for_trade_listeners(1)
                try:
                    yield world
                finally:
                    tg.cancel_scope.cancel()
    finally:
        await broker.aclose()
