"""The log's commits in a child process (events/sink.py): the same rows as the thread (rows
appended while it starts included), a dead child fails the log, a child that does not come up
(or is stuck) leaves the thread writing, a frame that does not arrive as sent is refused, the
close checkpoints after the child is gone, and a killed parent leaves a log that verifies:
the child commits every whole frame it reads, holding the writer lock until it exits."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import anyio.lowlevel
import msgspec
import pytest

from events.base import Event
from events.catalogue import OrderIntent
from events.errors import LogError, LogWriteError
from events.sink import _FRAME, READY, ProcessSink
from events.store import (
    _ACK_GROUP_ROWS,
    EventLog,
    LogReader,
    Sink,
    SinkStarter,
    Synchronous,
    writer_is_running,
)
from tests.factories import T0, bar

REPO = Path(__file__).resolve().parents[2]


def intent(i: int) -> OrderIntent:
    return OrderIntent(ts=T0, intent_id=f"i{i}", strategy="s", symbol="AAPL", side="buy",
                       qty=Decimal("0.5"))


def recording(started: list[ProcessSink | None]) -> SinkStarter:
    async def start(path: Path, synchronous: Synchronous, lock_fd: int | None
                    ) -> ProcessSink | None:
        sink = await ProcessSink.start(path, synchronous, lock_fd)
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


def children(marker: str) -> list[int]:
    """Our child processes whose command line holds `marker` and that have not exited."""
    me, found = str(os.getpid()), []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            state, parent = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[:2]
            cmd = Path(f"/proc/{d}/cmdline").read_bytes()
        except OSError:
            continue
        if parent == me and state != "Z" and marker.encode() in cmd:
            found.append(int(d))
    return found


def stuck_child(monkeypatch: pytest.MonkeyPatch, marker: str) -> None:
    """The sink's command becomes a child that never serves (as one whose import hangs)."""
    monkeypatch.setattr(ProcessSink, "command", classmethod(lambda cls, path, sync: [
        sys.executable, "-c", f"import time; time.sleep(120)  # {marker}"]))


async def appended(log: EventLog, events: Sequence[Event], *, during_start: Sequence[Event],
                   sink: SinkStarter | None) -> bytes:
    """The same appends whether a sink starts or not: some rows before the switch, a group's
    worth and more after it, `during_start` appended while the sink comes up (the writer
    waits in its starter), an `append_many` batch among them; the head after a flush."""
    async def start(path: Path, synchronous: Synchronous, lock_fd: int | None
                    ) -> Sink | None:
        for e in during_start:
            log.enqueue(e)
        log.append_many_nowait([intent(-2), intent(-3)])
        assert sink is not None
        return await sink(path, synchronous, lock_fd)

    await log.append(intent(-1))  # before the switch: the thread commits it
    log.acknowledge_on_append(sink=start if sink is not None else None)
    half = _ACK_GROUP_ROWS + 50
    for e in events[:half]:
        log.enqueue(e)
    await log.flush()  # a whole group waits: the sink starts (with the rows above meanwhile)
    if sink is None:
        for e in during_start:
            log.enqueue(e)
        log.append_many_nowait([intent(-2), intent(-3)])
        await log.flush()
    for e in events[half:]:
        log.enqueue(e)
    if sink is not None:  # the child chains these hashes: the head is known once flushed
        with pytest.raises(LogError, match="flush the log first"):
            _ = log.last_hash
    await log.flush()
    return log.last_hash


async def test_the_child_commits_exactly_the_rows_the_thread_would(tmp_path: Path) -> None:
    events = [intent(i) if i % 3 else bar("AAPL", T0 + timedelta(minutes=i))
              for i in range(3 * _ACK_GROUP_ROWS + 17)]
    during = [intent(10_000 + i) for i in range(300)]
    started: list[ProcessSink | None] = []
    heads = []
    for name, sink in (("thread", None), ("child", recording(started))):
        async with EventLog.open(tmp_path / f"{name}.sqlite") as log:
            heads.append(await appended(log, events, during_start=during, sink=sink))
        async with LogReader(tmp_path / f"{name}.sqlite") as r:
            v = await r.verify()
            assert v.ok and v.rows_checked == len(events) + len(during) + 3
    assert len(started) == 1 and started[0] is not None and started[0].pid
    with pytest.raises(ProcessLookupError):  # closed with the log, and reaped
        os.kill(started[0].pid, 0)
    assert rows_of(tmp_path / "thread.sqlite") == rows_of(tmp_path / "child.sqlite")
    assert heads[0] == heads[1]
    # The close still checkpointed and removed the WAL (the child had closed first).
    assert not (tmp_path / "child.sqlite-wal").exists()


async def test_a_run_too_short_for_a_group_never_starts_a_child(log_path: Path) -> None:
    started: list[ProcessSink | None] = []
    async with EventLog.open(log_path) as log:
        log.acknowledge_on_append(sink=recording(started))
        for i in range(_ACK_GROUP_ROWS - 1):
            log.enqueue(intent(i))
        await log.flush()  # the thread takes them
    assert started == []
    async with LogReader(log_path) as r:
        assert (await r.verify()).rows_checked == _ACK_GROUP_ROWS - 1


async def test_the_close_checkpoints_after_the_child_has_closed(
        log_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    execute = aiosqlite.Connection.execute

    def watched(self: aiosqlite.Connection, sql: str, *args: Any, **kwargs: Any) -> Any:
        if "TRUNCATE" in sql:
            order.append("checkpoint")
        return execute(self, sql, *args, **kwargs)
    monkeypatch.setattr(aiosqlite.Connection, "execute", watched)
    lost = ProcessSink._on_lost

    def on_lost(self: ProcessSink) -> None:
        order.append("child gone")
        lost(self)
    monkeypatch.setattr(ProcessSink, "_on_lost", on_lost)
    async with EventLog.open(log_path) as log:
        log.acknowledge_on_append(sink=ProcessSink.start)
        for i in range(2 * _ACK_GROUP_ROWS):
            log.enqueue(intent(i))
        await log.flush()  # as a backtest's stop does: the log is idle when it closes
    assert order == ["child gone", "checkpoint"]


async def test_a_killed_child_fails_the_log_and_keeps_what_it_committed(
        log_path: Path) -> None:
    started: list[ProcessSink | None] = []
    async with EventLog.open(log_path) as log:
        log.acknowledge_on_append(sink=recording(started))
        for i in range(_ACK_GROUP_ROWS):
            log.enqueue(intent(i))
        await log.flush()
        sink = started[0]
        assert sink is not None and sink.pid
        failures: list[Exception] = []
        log.on_failure(failures.append)
        os.kill(sink.pid, signal.SIGKILL)
        for i in range(_ACK_GROUP_ROWS, _ACK_GROUP_ROWS + 10):
            log.enqueue(intent(i))  # acknowledged at once; their commit can not happen
        with pytest.raises(LogWriteError, match="log writer process ended"):
            await log.flush()
        assert failures and log.failed is not None
        with pytest.raises(LogWriteError):
            log.enqueue(intent(99))
    async with LogReader(log_path) as r:
        v = await r.verify()
        assert v.ok and v.rows_checked == _ACK_GROUP_ROWS


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


async def test_a_child_stuck_before_it_serves_is_killed_and_the_thread_writes(
        log_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stuck_child(monkeypatch, "mqd-stuck-sink")
    monkeypatch.setattr(ProcessSink, "START_TIMEOUT_S", 0.5)
    started: list[ProcessSink | None] = []
    with anyio.fail_after(20):  # the timeout, not the child's 120 s, ends the wait
        async with EventLog.open(log_path) as log:
            log.acknowledge_on_append(sink=recording(started))
            for i in range(2 * _ACK_GROUP_ROWS):
                log.enqueue(intent(i))
            await log.flush()
    assert started == [None]
    assert children("mqd-stuck-sink") == []
    async with LogReader(log_path) as r:
        assert (await r.verify()).rows_checked == 2 * _ACK_GROUP_ROWS


async def test_a_start_cancelled_while_the_child_comes_up_leaves_no_child(
        log_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stuck_child(monkeypatch, "mqd-cancelled-sink")
    async with EventLog.open(log_path):
        with anyio.move_on_after(0.5) as scope:
            await ProcessSink.start(log_path, "NORMAL")
        assert scope.cancelled_caught
        assert children("mqd-cancelled-sink") == []


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


def test_a_frame_that_does_not_arrive_as_sent_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "crc.sqlite"

    async def make() -> bytes:
        async with EventLog.open(path) as log:
            rows = [log._row(intent(i), i, None) for i in range(1, 11)]
        body = msgspec.msgpack.encode(rows)
        return _FRAME.pack(len(body), zlib.crc32(body) ^ 1) + body  # one bit off
    frame = asyncio.run(make())
    child = subprocess.run([sys.executable, "-m", "events.sink", str(path), "NORMAL"],
                           input=frame, capture_output=True, cwd=REPO, timeout=60,
                           check=False)
    assert child.returncode == 1
    assert child.stdout.startswith(READY + b"E") and b"did not arrive as it was sent" in child.stdout
    assert rows_of(path) == []


def test_with_the_parent_gone_the_child_commits_every_whole_frame(tmp_path: Path) -> None:
    path = tmp_path / "gone.sqlite"

    async def make() -> bytes:
        async with EventLog.open(path) as log:
            rows = [log._row(intent(i), i, None) for i in range(1, 301)]
        out = b""
        for i in range(0, 300, 100):
            body = msgspec.msgpack.encode(rows[i:i + 100])
            out += _FRAME.pack(len(body), zlib.crc32(body)) + body
        return out + _FRAME.pack(999, 0) + b"cut"  # and the start of one it never finished
    frames = asyncio.run(make())
    child = subprocess.Popen([sys.executable, "-m", "events.sink", str(path), "NORMAL"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, cwd=REPO)
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.read(1) == READY
    child.stdout.close()  # nobody reads the answers any more
    child.stdin.write(frames)
    child.stdin.close()
    assert child.wait(60) == 0
    assert [r[0] for r in rows_of(path)] == list(range(1, 301))

    async def check() -> None:
        async with LogReader(path) as r:
            assert (await r.verify()).ok
    asyncio.run(check())


async def test_a_writer_cancelled_mid_run_closes_the_child_and_the_log_verifies(
        log_path: Path) -> None:
    started: list[ProcessSink | None] = []
    with anyio.CancelScope() as scope:
        async with EventLog.open(log_path) as log:
            log.acknowledge_on_append(sink=recording(started))
            for i in range(2 * _ACK_GROUP_ROWS):
                log.enqueue(intent(i))
            await log.flush()
            for i in range(2 * _ACK_GROUP_ROWS, 5 * _ACK_GROUP_ROWS):
                log.enqueue(intent(i))  # groups in flight at the child, and more queued
            await anyio.lowlevel.checkpoint()
            scope.cancel()
            await anyio.sleep_forever()
    sink = started[0]
    assert sink is not None and sink.pid
    with pytest.raises(ProcessLookupError):
        os.kill(sink.pid, 0)
    async with LogReader(log_path) as r:
        v = await r.verify()  # what was committed is whole; the queued tail is the run's loss
        assert v.ok and v.rows_checked >= 2 * _ACK_GROUP_ROWS


WRITER = """
import asyncio, sys
from decimal import Decimal
from events.base import Event
from events.catalogue import OrderIntent
from events.sink import ProcessSink
from events.store import EventLog
from tests.factories import T0

async def main():
    started = []
    async def start(path, sync, lock_fd):
        started.append(await ProcessSink.start(path, sync, lock_fd))
        return started[-1]
    async with EventLog.open(sys.argv[1]) as log:
        log.acknowledge_on_append(sink=start)
        i = 0
        while True:
            for _ in range(1500):
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
        for _ in range(5):  # five groups committed by the child
            if not select.select([proc.stdout], [], [], 60)[0]:
                pytest.fail("the writer printed nothing for 60 s")
            line = proc.stdout.readline()
        pid, durable = (int(x) for x in line.split())
        # The child holds the writer lock too (its descriptor), so the log counts as being
        # written for as long as the child lives, the parent dead or not.
        lock = path.with_name(path.name + ".lock")
        held = {os.path.realpath(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        assert str(lock) in held and writer_is_running(path)
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
            assert v.ok and v.rows_checked >= durable and v.rows_checked % 1500 == 0
    asyncio.run(check())
