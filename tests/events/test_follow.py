"""The log follower: a child process walks a log's hash chain while the log is written, and
its verdict is taken only when it covers exactly the rows written; otherwise (a child that
died, a verdict about other rows) the log is walked in this process, as before."""

from __future__ import annotations

import logging
import os
import signal
from decimal import Decimal
from pathlib import Path

import pytest

from events import follow
from events.catalogue import OrderIntent
from events.follow import ChainFollower
from events.store import EventLog, LogReader, follow_chain
from tests.events.test_store import _flip_byte_in_payload
from tests.factories import T0


def _intents(n: int, start: int = 0) -> list[OrderIntent]:
    return [OrderIntent(ts=T0, intent_id=f"id-{i:06d}", strategy="s", symbol="AAPL",
                        side="buy", qty=Decimal(i + 1)) for i in range(start, start + n)]


class _NoWalkHere(LogReader):
    """Stands in for LogReader where a test proves the verdict came from the child: the
    closed file may be opened (its header and last row are checked), not walked."""

    async def verify(self, *, decode: bool = True):  # type: ignore[no-untyped-def]
        raise AssertionError("the log was walked in this process")


async def _written(log_path: Path, follower: ChainFollower, batches: int = 6,
                   per_batch: int = 2500) -> tuple[int, bytes]:
    async with EventLog.open(log_path) as log:
        await follower.__aenter__()
        for b in range(batches):
            await log.append_many(_intents(per_batch, b * per_batch))
            await follower.wake()
        return log.last_seq, log.last_hash


async def test_the_child_walks_the_log_while_it_is_written(log_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    follower = ChainFollower(log_path)
    try:
        last, head = await _written(log_path, follower)
        monkeypatch.setattr(follow, "LogReader", _NoWalkHere)
        res = await follower.verdict(last, head)
    finally:
        await follower.__aexit__(None, None, None)
    assert res.ok and res.last_seq == last == res.rows_checked == 15_000


async def test_a_verdict_about_other_rows_is_not_taken(log_path: Path,
                                                       caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    follower = ChainFollower(log_path)
    walked: list[int] = []

    class Counting(LogReader):
        async def verify(self, *, decode: bool = True):  # type: ignore[no-untyped-def]
            walked.append(1)
            return await super().verify(decode=decode)

    try:
        last, _ = await _written(log_path, follower, batches=2)
        monkeypatch.setattr(follow, "LogReader", Counting)
        with caplog.at_level(logging.WARNING, logger="events.follow"):
            res = await follower.verdict(last, bytes(32))  # not the head that was written
    finally:
        await follower.__aexit__(None, None, None)
    assert walked == [1] and res.ok and res.last_seq == last
    assert "log follower disagrees" in caplog.text


async def test_a_killed_child_means_the_log_is_walked_here(log_path: Path) -> None:
    follower = ChainFollower(log_path)
    try:
        async with EventLog.open(log_path) as log:
            await follower.__aenter__()
            await log.append_many(_intents(500))
            proc = follower._proc
            assert proc is not None
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
            await log.append_many(_intents(500, 500))
            await follower.wake()  # finds the pipe broken
            last, head = log.last_seq, log.last_hash
        res = await follower.verdict(last, head)
    finally:
        await follower.__aexit__(None, None, None)
    assert res.ok and res.last_seq == 1000


async def test_leaving_early_kills_the_child(log_path: Path) -> None:
    # (the log's task group wraps what its block raises)
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="boom"),
                            flatten_subgroups=True):
        async with EventLog.open(log_path) as log, ChainFollower(log_path) as follower:
            await log.append_many(_intents(10))
            proc = follower._proc
            assert proc is not None and proc.returncode is None
            raise RuntimeError("boom")
    assert proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)  # reaped, not left behind


async def test_follow_chain_finds_a_flipped_byte(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        await log.append_many(_intents(50))
    _flip_byte_in_payload(log_path, 37)
    res, head = follow_chain(log_path, [])
    assert not res.ok and res.first_bad_seq == 37 and "hash mismatch" in res.reason
    assert res.rows_checked == res.last_seq == 36
    async with LogReader(log_path) as r:
        assert head == await r.hash_at(36)


async def test_a_stuck_child_is_killed_and_the_log_walked_here(
        log_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import sys

    class Stuck(ChainFollower):
        VERDICT_TIMEOUT_S = 0.5

        def command(self) -> list[str]:  # never answers: waits for a signal
            return [sys.executable, "-c", "import signal; signal.pause()"]

    follower = Stuck(log_path)
    try:
        last, head = await _written(log_path, follower, batches=1, per_batch=100)
        proc = follower._proc
        assert proc is not None
        with caplog.at_level(logging.WARNING, logger="events.follow"):
            res = await follower.verdict(last, head)
    finally:
        await follower.__aexit__(None, None, None)
    assert res.ok and res.last_seq == 100
    assert "no verdict from the log follower" in caplog.text
    assert proc.returncode is not None  # killed and reaped


async def test_a_child_that_cannot_start_only_moves_the_walk_here(
        log_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_subprocesses(*a: object, **k: object) -> None:
        raise NotImplementedError  # e.g. a Windows selector loop

    monkeypatch.setattr(follow.anyio, "open_process", no_subprocesses)
    follower = ChainFollower(log_path)
    try:
        last, head = await _written(log_path, follower, batches=2, per_batch=100)
        assert follower._proc is None
        res = await follower.verdict(last, head)
    finally:
        await follower.__aexit__(None, None, None)
    assert res.ok and res.last_seq == last == 200


async def test_the_closed_file_must_still_be_the_log_the_child_walked(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        await log.append_many(_intents(3000))
        last, head = log.last_seq, log.last_hash
    assert await follow._closed_file_agrees(log_path, last, head)
    assert not await follow._closed_file_agrees(log_path, last, bytes(32))
    assert not await follow._closed_file_agrees(log_path, last + 1, head)
    # damaged after the child read it (a failed checkpoint): the file loses its second half
    os.truncate(log_path, log_path.stat().st_size // 2)
    assert not await follow._closed_file_agrees(log_path, last, head)
