"""Fixtures for AlpacaBroker tests: the fake Alpaca, a broker factory with fast timeouts,
and a leak check (no task on our loop, no thread inside requests/alpaca) after every test."""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from engine.brokers.alpaca import AlpacaBroker, AlpacaConfig
from engine.clock import LiveClock
from tests.fake_alpaca.fixtures import fake_alpaca, fake_alpaca_factory  # noqa: F401

BrokerFactory = Callable[..., AlpacaBroker]

# Stack frames from these paths mean a thread is still doing broker work.
_BUSY_MARKERS = ("/requests/", "/urllib3/", "/alpaca/", "engine/brokers/alpaca")


def fast_config(fake: Any, **overrides: Any) -> AlpacaConfig:
    settings: dict[str, Any] = {
        "key_id": fake.api_key,
        "secret_key": fake.api_secret,
        "paper": True,
        "rest_url": fake.rest_url,
        "stream_url": fake.trading_stream_url,
        "request_timeout_s": 2.0,
        "read_retries": 2,
        "retry_backoff_s": 0.01,
        "reconnect_min_backoff_s": 0.05,
        "reconnect_max_backoff_s": 0.2,
        "handshake_timeout_s": 2.0,
    }
    settings.update(overrides)
    return AlpacaConfig(**settings)


def busy_threads() -> list[str]:
    """Threads (other than this one) whose stack is inside requests/urllib3/alpaca/us."""
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        files = [f.filename for f in traceback.extract_stack(frame)]
        if any(marker in f for f in files for marker in _BUSY_MARKERS):
            out.append(names.get(ident, str(ident)))
    return out


def other_tasks() -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and not t.done()]


@pytest.fixture
async def make_broker() -> AsyncIterator[BrokerFactory]:
    brokers: list[AlpacaBroker] = []

    def make(fake: Any, **overrides: Any) -> AlpacaBroker:
        broker = AlpacaBroker(fast_config(fake, **overrides), clock=LiveClock())
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        await asyncio.wait_for(broker.aclose(), 10)
    for broker in brokers:
        assert broker.inflight_requests == 0
    assert other_tasks() == [], "tasks left running after the brokers were closed"
    assert busy_threads() == [], "threads still inside broker code after close"
