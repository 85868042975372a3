"""The log's commits in a child process (events/sink.py): the same rows as the thread, a dead
child fails the log, a child that does not come up leaves the thread writing, and a killed
parent leaves a log that verifies (the child commits what it read and exits)."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sqlite3
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from events.catalogue import OrderIntent
from events.errors import LogError, LogWriteError
from events.sink import ProcessSink
from events.store import _ACK_GROUP_ROWS, EventLog, LogReader, SinkStarter
from tests.factories import T0, bar

REPO = Path(__file__).resolve().parents[2]


def intent(i: int) -> OrderIntent:
    return OrderIntent(ts=T0, intent_id=f"i{i}", strategy="s", symbol="AAPL", side="buy",
                       qty=Decimal("0.5"))


def recording(started: list[ProcessSink | None]) -> SinkStarter:
    async def start(path: Path, synchronous: str) -> ProcessSink | None:
        sink = await ProcessSink.start(path, synchronous)
        started.append(sink)
        return sink
    return start


def rows_of(path: Path) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT * FROM events ORDER BY seq").fetchall()
    finally:
        con.close()


def wait_exit(pid: int, timeout: float) -> bool:
    """True once the process `pid` (not our child) has exited, waiting on its pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


async def test_the_child_commits_exactly_the_rows_the_thread_would(tmp_path: Path) -> None:
    events = [intent(i) if i % 3 else bar("AAPL", T0 + timedelta(minutes=i))
              for i in range(3 * _ACK_GROUP_ROWS + 17)]
    started: list[ProcessSink | None] = []
    heads = []
    for name, sink in (("thread", None), ("child", recording(started))):
        async with EventLog.open(tmp_path / f"{name}.sqlite") as log:
            await log.append(intent(-1))  # before the switch: the thread commits it
            log.acknowledge_on_append(sink=sink)
            for e in events[:100]:
                log.enqueue(e)
            await log.flush()
            for e in events[100:]:
                log.enqueue(e)
            if sink is not None:  # the child chains the hashes: the head is known once flushed
                with pytest.raises(LogError, match="flush the log first"):
                    _ = log.last_hash
            await log.flush()
            heads.append(log.last_hash)
        async with LogReader(tmp_path / f"{name}.sqlite") as r:
            v = await r.verify()
            assert v.ok and v.rows_checked == len(events) + 1
    assert len(started) == 1 and started[0] is not None and started[0].pid
    assert wait_exit(started[0].pid, 10)  # closed with the log
    assert rows_of(tmp_path / "thread.sqlite") == rows_of(tmp_path / "child.sqlite")
    assert heads[0] == heads[1]
    # The close still checkpointed and removed the WAL (the child had closed first).
    assert not (tmp_path / "child.sqlite-wal").exists()


async def test_a_killed_child_fails_the_log_and_keeps_what_it_committed(
        log_path: Path) -> None:
    started: list[ProcessSink | None] = []
    async with EventLog.open(log_path) as log:
        log.acknowledge_on_append(sink=recording(started))
        for i in range(10):
            log.enqueue(intent(i))
        await log.flush()
        sink = started[0]
        assert sink is not None and sink.pid
        failures: list[Exception] = []
        log.on_failure(failures.append)
        os.kill(sink.pid, signal.SIGKILL)
        for i in range(10, 20):
            log.enqueue(intent(i))  # acknowledged at once; their commit can not happen
        with pytest.raises(LogWriteError, match="log writer process ended"):
            await log.flush()
        assert failures and log.failed is not None
        with pytest.raises(LogWriteError):
            log.enqueue(intent(99))
    async with LogReader(log_path) as r:
        v = await r.verify()
        assert v.ok and v.rows_checked == 10


async def test_a_child_that_does_not_come_up_leaves_the_thread_writing(
        log_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An interpreter that exits at once instead of serving (as one that can not import the
    # package would): no READY, so the thread commits, and nothing is lost.
    monkeypatch.setattr(ProcessSink, "command",
                        classmethod(lambda cls, path, sync: [sys.executable, "-c", "pass"]))
    started: list[ProcessSink | None] = []
    async with EventLog.open(log_path) as log:
        log.acknowledge_on_append(sink=recording(started))
        for i in range(2 * _ACK_GROUP_ROWS):
            log.enqueue(intent(i))
        await log.flush()
        assert log.last_seq == 2 * _ACK_GROUP_ROWS
    assert started == [None]
    async with LogReader(log_path) as r:
        v = await r.verify()
        assert v.ok and v.rows_checked == 2 * _ACK_GROUP_ROWS


async def test_a_commit_the_child_refuses_fails_the_log_with_its_reason(
        log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        await log.append(intent(0))
        sink = await ProcessSink.start(log_path, "NORMAL")
        assert sink is not None
        try:
            row = (1, 0, "intent", 1, bytearray(), bytearray(), b"AAPL", bytearray(b"x"),
                   bytes(32))  # seq 1 is taken
            with pytest.raises(LogWriteError, match="UNIQUE constraint"):
                await sink.commit([row])  # type: ignore[list-item]
            with pytest.raises(LogWriteError, match="log writer process ended"):
                await sink.commit([row])  # type: ignore[list-item]
        finally:
            await sink.close()
    async with LogReader(log_path) as r:
        assert (await r.verify()).rows_checked == 1


WRITER = """
import asyncio, sys
from decimal import Decimal
from events.catalogue import OrderIntent
from events.sink import ProcessSink
from events.store import EventLog
from tests.factories import T0

async def main():
    started = []
    async def start(path, sync):
        started.append(await ProcessSink.start(path, sync))
        return started[-1]
    async with EventLog.open(sys.argv[1]) as log:
        log.acknowledge_on_append(sink=start)
        i = 0
        while True:
            for _ in range(500):
                log.enqueue(OrderIntent(ts=T0, intent_id=f"i{i}", strategy="s",
                                        symbol="AAPL", side="buy", qty=Decimal(1)))
                i += 1
            await log.flush()
            print(started[0].pid, log.last_seq, flush=True)

asyncio.run(main())
"""


def test_a_killed_parent_leaves_a_log_that_verifies_and_no_child(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(5)]
        pid, durable = (int(x) for x in lines[-1].split())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    # The child reads the end of its pipe, commits what it had whole, and exits.
    assert wait_exit(pid, 30)

    async def check() -> None:
        async with LogReader(path) as r:
            v = await r.verify()
            assert v.ok and v.rows_checked >= durable and v.rows_checked % 500 == 0
    asyncio.run(check())
