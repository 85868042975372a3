"""The service end to end against the fake Alpaca: the real `python -m engine run` process,
alpaca-py for orders and trade updates, the Alpaca bar stream for data (scripted bars pushed
by the test). It starts, recovers, trades, is stopped with SIGTERM, restarts, and carries on
with the same positions and loss-limit state."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from events.catalogue import BrokerStreamStatus
from tests.fake_alpaca import FakeAlpaca
from tests.service.procs import cli, service

pytestmark = pytest.mark.slow
D = Decimal
# A zig-zag: SMA(1) crosses SMA(2) on almost every bar, so each leg of bars trades.
PRICES = [100, 101, 99, 102, 98, 103, 97, 104, 96, 105, 95, 106]


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca(cash="100000", prices={"AAPL": "100"}, auto_fill=True) as f:
        yield f


def env_for(fake: FakeAlpaca) -> dict[str, str]:
    return {
        "MQD_BROKER": "alpaca",
        "MQD_ALPACA__KEY_ID": fake.api_key,
        "MQD_ALPACA__SECRET_KEY": fake.api_secret,
        "MQD_ALPACA__REST_URL": fake.rest_url,
        "MQD_ALPACA__STREAM_URL": fake.trading_stream_url,
        "MQD_ALPACA__DATA_REST_URL": fake.data_rest_url,
        "MQD_ALPACA__DATA_STREAM_URL": fake.data_stream_url,
        "MQD_DATA__SOURCE": "alpaca",
        "MQD_DATA__SYMBOLS": '["AAPL"]',
        # Protected: every entry carries its stop at the broker (require_protection is on
        # for Alpaca); an exit cancels it first.
        "MQD_STRATEGIES": '[{"name": "sma_crossover", "params": {"fast": 1, "slow": 2, "qty": "1"}}]',
        "MQD_RISK__STALE_AFTER_BARS": "100",
        "MQD_RISK__DAY_TRADE_MODE": "off",
        "MQD_RISK__MAX_ORDER_NOTIONAL": "5000",
        "MQD_RISK__MAX_SYMBOL_EXPOSURE": "5000",
        "MQD_RISK__MAX_GROSS_EXPOSURE": "5000",
        "MQD_RECONCILE__INTERVAL_S": "3600",
    }


def push_leg(fake: FakeAlpaca, start: datetime, prices: list[int], first_trade: int) -> None:
    """One bar at a time, each after the engine has acted on the previous one (as minute
    bars would arrive): from bar `first_trade` on, every bar crosses and fills one order."""
    for i, p in enumerate(prices):
        fake.set_price("AAPL", str(p))
        ts = start + timedelta(minutes=i)
        done = filled_orders(fake)
        fake.push_bar("AAPL", ts.isoformat(), p, p + 0.5, p - 0.5, p, 1000)
        if i >= first_trade:
            fake.wait_for(lambda done=done: filled_orders(fake) > done, timeout=20,
                          message=f"the order for bar {i}")


def status(tmp: Path, env: dict[str, str]) -> dict:  # type: ignore[type-arg]
    r = cli(tmp, "status", "--json", extra=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _events(tmp: Path) -> list[object]:
    import asyncio

    from events.store import LogReader

    async def read() -> list[object]:
        async with LogReader(tmp / "data" / "events.sqlite") as r:
            return [e async for _, e in r.read(types=("broker_stream",))]
    return asyncio.run(read())


def filled_orders(fake: FakeAlpaca) -> int:
    return sum(1 for o in fake.orders() if o["status"] == "filled")


def test_service_trades_stops_and_carries_on(tmp_path: Path, fake: FakeAlpaca) -> None:
    env = env_for(fake)
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=40)
    with service(tmp_path, env) as svc:
        svc.wait_for("engine ready")
        fake.wait_for_data_subscription("AAPL", timeout=20)
        # SMA(2) needs two bars; the first cross is down (flat: nothing to sell), then buy
        push_leg(fake, base, PRICES, first_trade=3)
        fake.wait_for(lambda: filled_orders(fake) >= 4, timeout=30, message="four fills")
        assert svc.stop(signal.SIGTERM) == 0, "".join(svc.lines[-20:])
    before = status(tmp_path, env)
    theirs = {p["symbol"]: str(D(p["qty"])) for p in fake.positions()}
    ours = {p["symbol"]: str(D(p["qty"])) for p in before["positions"]}
    assert ours == theirs
    orders_before = filled_orders(fake)

    with service(tmp_path, env) as svc:
        svc.wait_for("engine ready: trading state active")
        after = status(tmp_path, env)
        assert after["positions"] == before["positions"]
        assert after["pnl"] == before["pnl"] and after["day_trades"] == before["day_trades"]
        fake.wait_for_data_subscription("AAPL", timeout=20)
        # warmed up from the log: the very first bar after the restart already crosses
        push_leg(fake, base + timedelta(minutes=len(PRICES)), PRICES, first_trade=0)
        fake.wait_for(lambda: filled_orders(fake) >= orders_before + 4, timeout=30,
                      message="trading carried on")
        assert svc.stop(signal.SIGTERM) == 0
    final = status(tmp_path, env)
    assert {p["symbol"]: str(D(p["qty"])) for p in final["positions"]} == {
        p["symbol"]: str(D(p["qty"])) for p in fake.positions()}
    counts = fake.order_count_by_client_id()
    assert counts and all(n == 1 for n in counts.values())
    # every entry went out with its stop leg; a held position still has exactly its stop
    assert any(o["order_class"] == "oto" and o["type"] == "stop" for o in fake.orders())
    held = {p["symbol"]: D(p["qty"]) for p in fake.positions() if D(p["qty"])}
    live = [o for o in fake.orders("open") if o["type"] == "stop"]
    assert sum((D(o["qty"]) for o in live), D(0)) == sum((abs(q) for q in held.values()), D(0))
    # the trade-update stream's state is in the log (for the dashboard and alerts)
    streams = [e for e in _events(tmp_path) if isinstance(e, BrokerStreamStatus)]
    assert streams[0].state == "connecting" and not streams[0].connected
    assert any(e.connected and e.state == "listening" for e in streams), streams
