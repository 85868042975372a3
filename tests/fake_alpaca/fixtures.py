"""pytest fixtures for the fake Alpaca. Import them from tests/conftest.py:

from tests.fake_alpaca.fixtures import *  # noqa: F401,F403
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .control import FakeAlpacaProcess
from .server import FakeAlpaca

__all__ = [
    "alpaca_historical_client",
    "alpaca_trading_client",
    "fake",
    "fake_alpaca",
    "fake_alpaca_factory",
    "fake_alpaca_process",
]


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    """The paper account the engine-level Alpaca tests trade: $100,000 and three quoted
    symbols. A module that needs another account defines its own `fake`."""
    with FakeAlpaca(cash="100000", prices={"AAPL": "190", "MSFT": "400", "F": "12"}) as f:
        yield f


@pytest.fixture
def fake_alpaca() -> Iterator[FakeAlpaca]:
    """An in-process fake with default settings (cash 100000, no PDT fields)."""
    with FakeAlpaca() as fake:
        yield fake


@pytest.fixture
def fake_alpaca_factory() -> Iterator[Callable[..., FakeAlpaca]]:
    """``make(**FakeAlpaca kwargs)``: started fakes, all stopped at teardown."""
    fakes: list[FakeAlpaca] = []

    def make(**kwargs: Any) -> FakeAlpaca:
        fake = FakeAlpaca(**kwargs).start()
        fakes.append(fake)
        return fake

    yield make
    for fake in fakes:
        fake.stop()


@pytest.fixture
def fake_alpaca_process(tmp_path: Any) -> Iterator[FakeAlpacaProcess]:
    """The fake as a separate process (survives killing the engine under test)."""
    with FakeAlpacaProcess(port_file=tmp_path / "fake_alpaca.json") as proc:
        yield proc


@pytest.fixture
def alpaca_trading_client(fake_alpaca: FakeAlpaca) -> Any:
    """alpaca-py TradingClient on the fake, retry wait 0.05 s instead of 3 s."""
    return fake_alpaca.trading_client()


@pytest.fixture
def alpaca_historical_client(fake_alpaca: FakeAlpaca) -> Any:
    return fake_alpaca.historical_client()
