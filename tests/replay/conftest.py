from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.replay.session import Session, run_session


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    """One scripted engine session per module (read-only for the tests; copy it to change
    it). A sync fixture running its own loop, so it can be shared across async tests."""
    path = tmp_path_factory.mktemp("session") / "events.sqlite"
    return asyncio.run(run_session(path))


@pytest.fixture
def session_copy(session: Session, tmp_path: Path) -> Path:
    dst = tmp_path / "copy.sqlite"
    shutil.copyfile(session.path, dst)
    for suffix in ("-wal", "-shm"):
        side = session.path.with_name(session.path.name + suffix)
        if side.exists():
            shutil.copyfile(side, dst.with_name(dst.name + suffix))
    return dst
