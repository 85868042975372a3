from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from events.store import EventLog

# Loggers the CLI quiets (engine.cli.setup_logging) and the root logger it rewires.
_QUIETED = ("", "websockets", "urllib3", "alpaca", "asyncio")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Tests that call the CLI's main() in-process rewire logging for the whole process: the
    root handler points at a captured stderr that is closed afterwards, and the websockets
    logger is raised to WARNING. Undo that after each test, so a later test that captures
    logs (e.g. the secret-redaction test, which checks the fake server logged the secret)
    does not depend on which tests ran before it."""
    loggers = [logging.getLogger(name) for name in _QUIETED]
    levels = [lg.level for lg in loggers]
    handlers = list(logging.getLogger().handlers)
    yield
    logging.getLogger().handlers[:] = handlers
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "events.sqlite"


@pytest.fixture
async def event_log(log_path: Path) -> AsyncIterator[EventLog]:
    async with EventLog.open(log_path) as log:
        yield log
