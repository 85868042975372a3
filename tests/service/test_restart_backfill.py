"""Nothing missed across a restart: the service backfills every symbol from the log's last
bar (bars published while it was down reach the log), through the real live provider."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path

import anyio

from engine.clock import LiveClock
from engine.config import load_settings
from engine.service import run_service
from events.catalogue import BarReceived
from events.market import Bar
from events.store import EventLog, LogReader
from tests.fake_alpaca.fixtures import fake_alpaca  # noqa: F401  (pytest fixture)
from tests.marketdata.test_alpaca_live import bar_row, make_provider

D = Decimal


async def test_restart_backfills_from_the_logs_last_bar(tmp_path: Path, fake_alpaca) -> None:  # noqa: F811
    clock = LiveClock()
    t0 = clock.now().replace(second=0, microsecond=0) - timedelta(minutes=20)
    log_path = tmp_path / "events.sqlite"
    async with EventLog.open(log_path) as log:  # the previous run ended after bar t0
        await log.append(BarReceived(ts=t0 + timedelta(minutes=1), bar=Bar(
            symbol="AAPL", start=t0, interval_s=60, open=D(100), high=D(101), low=D(99),
            close=D(100), volume=D(1000), provider="alpaca-live")))
    rows = [bar_row(t0 + timedelta(minutes=i), i) for i in range(1, 5)]
    fake_alpaca.load_bars("AAPL", rows, timeframe="1Min")  # published while we were down
    settings = load_settings(data_dir=tmp_path, log_file=log_path,
                             data={"source": "alpaca", "symbols": ["AAPL"]})
    provider = make_provider(fake_alpaca, clock, silence_timeout=30)
    want = rows[-1][0]
    async with anyio.create_task_group() as tg:
        engine = await tg.start(partial(run_service, settings, clock=clock, provider=provider,
                                        stop_after_data=False))
        seen = anyio.Event()

        def check(*_: object) -> None:
            bar = engine.proj.market.last_bar.get("AAPL")
            if bar is not None and bar.start >= want:
                seen.set()

        engine.log.on_commit(check)
        check()
        with anyio.fail_after(15):
            await seen.wait()
        tg.cancel_scope.cancel()
    async with LogReader(log_path) as r:
        starts = [e.bar.start async for _, e in r.read() if isinstance(e, BarReceived)]
    assert starts == [t0, *(r[0] for r in rows)]
