from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from events.store import EventLog


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "events.sqlite"


@pytest.fixture
async def event_log(log_path: Path) -> AsyncIterator[EventLog]:
    async with EventLog.open(log_path) as log:
        yield log
