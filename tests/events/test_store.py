from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import sys
from datetime import timezone
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from events.catalogue import OrderIntent, RunEnded
from events.errors import CorruptLogError, DecodeError, LogWriteError, SchemaTooNewError
from events.store import EventLog, LogReader
from tests.factories import T0, approved, bar, fill

UTC = timezone.utc
REPO = Path(__file__).resolve().parents[2]


def intent(i: int) -> OrderIntent:
    return OrderIntent(ts=T0, intent_id=f"i{i}", strategy="s", symbol="AAPL", side="buy",
                       qty=Decimal("0.5"))


async def test_concurrent_appenders_get_unique_gap_free_seqs(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        results: dict[int, str] = {}

        async def one(i: int) -> None:
            seq = await log.append(intent(i))
            # the append returned only after commit: the row is readable by another connection
            results[seq] = f"i{i}"

        await asyncio.gather(*(one(i) for i in range(1500)))
        assert sorted(results) == list(range(1, 1501))
        assert log.last_seq == 1500
    async with LogReader(log_path) as r:
        rows = {seq: e.intent_id async for seq, e in r.read()}  # type: ignore[attr-defined]
        assert rows == results
        assert (await r.verify()).ok


async def test_append_returns_only_after_commit(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        seq = await log.append(intent(1))
        async with LogReader(log_path) as r:  # a separate connection sees it at once
            assert [s async for s, _ in r.read()] == [seq]


async def test_reopen_continues_the_chain(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        await log.append_many([intent(i) for i in range(10)])
    async with EventLog.open(log_path) as log:
        assert await log.append(intent(99)) == 11
    async with LogReader(log_path) as r:
        v = await r.verify()
        assert v.ok and v.rows_checked == 11


async def test_update_and_delete_are_refused(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        await log.append(intent(1))
    con = sqlite3.connect(log_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only: UPDATE refused"):
        con.execute("UPDATE events SET symbol = 'MSFT'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only: DELETE refused"):
        con.execute("DELETE FROM events")
    con.close()


def _flip_byte_in_payload(path: Path, seq: int) -> None:
    """Tamper below SQL (the triggers forbid UPDATE): drop them in a copy-free way by editing
    the file bytes where the payload of `seq` lives."""
    con = sqlite3.connect(path)
    payload = con.execute("SELECT payload FROM events WHERE seq = ?", (seq,)).fetchone()[0]
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(path.read_bytes())
    at = data.find(payload)
    assert at >= 0 and data.find(payload, at + 1) < 0
    needle = payload.find(b"AAPL")
    data[at + needle] ^= 0x01  # 'A' -> '@': still valid msgpack, different content
    path.write_bytes(bytes(data))


async def test_verify_finds_a_flipped_byte(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        for i in range(50):
            await log.append(OrderIntent(ts=T0, intent_id=f"id-{i:04d}", strategy="s",
                                         symbol="AAPL", side="buy", qty=Decimal(i + 1)))
    async with LogReader(log_path) as r:
        assert (await r.verify()).ok
    _flip_byte_in_payload(log_path, 37)
    async with LogReader(log_path) as r:
        res = await r.verify()
    assert not res.ok and res.first_bad_seq == 37 and "hash mismatch" in res.reason
    assert res.rows_checked == 36


async def test_verify_finds_a_rewritten_index_column(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        for i in range(5):
            await log.append(intent(i))
    con = sqlite3.connect(log_path)
    con.execute("DROP TRIGGER events_no_update")  # an attacker with file access
    con.execute("UPDATE events SET intent_id = 'forged' WHERE seq = 3")
    con.commit()
    con.close()
    async with LogReader(log_path) as r:
        res = await r.verify()
    assert not res.ok and res.first_bad_seq == 3 and "index columns" in res.reason


async def test_undecodable_row_names_its_seq(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        for i in range(3):
            await log.append(intent(i))
    con = sqlite3.connect(log_path)
    con.execute("DROP TRIGGER events_no_update")
    con.execute("UPDATE events SET payload = ? WHERE seq = 2", (msgspec.msgpack.encode([1, 2]),))
    con.commit()
    con.close()
    async with LogReader(log_path) as r:
        with pytest.raises(DecodeError, match="seq 2: cannot decode intent v2"):
            [x async for x in r.read()]
        res = await r.verify()
        assert res.first_bad_seq == 2


async def test_newer_schema_is_refused(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        await log.append(intent(1))
    con = sqlite3.connect(log_path)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    con.commit()
    con.close()
    with pytest.raises(SchemaTooNewError, match="log format v99 was written by a newer"):
        async with EventLog.open(log_path):
            pass
    with pytest.raises(SchemaTooNewError):
        async with LogReader(log_path):
            pass


async def test_row_with_newer_event_version_names_seq(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        await log.append(intent(1))
        await log.append(intent(2))
    con = sqlite3.connect(log_path)
    con.execute("DROP TRIGGER events_no_update")
    con.execute("UPDATE events SET schema_version = 3 WHERE seq = 2")
    con.commit()
    con.close()
    async with LogReader(log_path) as r:
        with pytest.raises(SchemaTooNewError, match="seq 2: intent was written with schema v3"):
            [x async for x in r.read()]


async def test_truncated_file_gives_clear_error(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        for i in range(2000):
            log.append_nowait(bar(close=str(100 + i % 7), start=T0))
        await log.flush()
    size = log_path.stat().st_size
    with open(log_path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(CorruptLogError, match="truncated"):
        async with EventLog.open(log_path):
            pass
    with pytest.raises(CorruptLogError, match="truncated"):
        async with LogReader(log_path):
            pass


async def test_not_a_log_file(tmp_path: Path) -> None:
    p = tmp_path / "junk.sqlite"
    p.write_bytes(b"hello, this is not sqlite" * 10)
    with pytest.raises(CorruptLogError, match="not an event log"):
        async with EventLog.open(p):
            pass


async def test_correlation_reads(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        await log.append(approved("c1", intent_id="i-1"))
        await log.append(approved("c2", intent_id="i-2"))
        await log.append(fill("c1"))
        await log.append(bar())
    async with LogReader(log_path) as r:
        assert [s for s, _ in await r.by_client_order_id("c1")] == [1, 3]
        assert [s for s, _ in await r.by_intent("i-2")] == [2]
        assert [s async for s, _ in r.read(2, 3)] == [2, 3]


async def test_failed_commit_fails_the_append_and_poisons_the_log(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        await log.append(intent(0))
        failures: list[Exception] = []
        log.on_failure(failures.append)
        # Simulate a full disk: SQLite refuses to grow the file past its current pages.
        await log._db.execute("PRAGMA max_page_count = 1")  # type: ignore[union-attr]
        big = [OrderIntent(ts=T0, intent_id=f"x{i}", strategy="s" * 2000, symbol="AAPL",
                           side="buy", qty=Decimal(1)) for i in range(50)]
        with pytest.raises(LogWriteError, match="failed"):
            await log.append_many(big)
        assert failures and log.failed is not None
        with pytest.raises(LogWriteError):
            log.append_nowait(intent(1))
    async with LogReader(log_path) as r:
        v = await r.verify()
        assert v.ok and v.rows_checked == 1  # nothing half-written


async def test_full_synchronous_mode(log_path: Path) -> None:
    async with EventLog.open(log_path, synchronous="FULL") as log:
        await log.append(RunEnded(ts=T0, run_id="r"))
    con = sqlite3.connect(log_path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    with pytest.raises(ValueError, match="synchronous"):
        async with EventLog.open(log_path, synchronous="OFF"):  # type: ignore[arg-type]
            pass


def _run_and_kill(path: Path, rng: random.Random) -> list[tuple[int, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.append_worker", str(path), "25"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    want = rng.randint(20, 3000)
    seen: list[tuple[int, str]] = []
    for line in proc.stdout:
        seq, iid = line.split()
        seen.append((int(seq), iid))
        if len(seen) >= want:
            proc.send_signal(signal.SIGKILL)
            break
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err
    for line in rest.splitlines():  # lines printed before the kill landed
        parts = line.split()
        if len(parts) == 2:
            seen.append((int(parts[0]), parts[1]))
    return seen


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_sigkill_while_appending_loses_nothing_acknowledged(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "killed.sqlite"
    acknowledged: dict[int, str] = {}
    for _ in range(2):  # kill, reopen (the worker appends onto the survivor), kill again
        for seq, iid in _run_and_kill(path, rng):
            acknowledged[seq] = iid
        async with LogReader(path) as r:
            res = await r.verify()
            assert res.ok, res
            stored = {s: e.intent_id async for s, e in r.read()}  # type: ignore[attr-defined]
        for seq, iid in acknowledged.items():
            assert stored.get(seq) == iid, f"acknowledged seq {seq} lost or changed"
        assert sorted(stored) == list(range(1, len(stored) + 1))


async def test_appends_wait_for_their_commit_unless_told_otherwise(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        assert not log.acknowledges_on_append
        fut = log.append_nowait(intent(0))
        assert not fut.done()  # the default: the seq only once the row is durable
        assert await fut == 1 and log.last_seq == 1


async def test_acknowledged_on_append_rows_all_reach_the_disk_in_order(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        log.acknowledge_on_append()
        futs = [log.append_nowait(intent(i)) for i in range(5000)]
        # Answered before any commit could run (the loop has not turned since).
        assert all(f.done() for f in futs)
        assert [f.result() for f in futs] == list(range(1, 5001))
        assert log.last_seq == 0 and log.assigned_seq == 5000  # last_seq still means durable
        assert await log.append(intent(5000)) == 5001
        await log.flush()
        assert log.last_seq == 5001
    async with LogReader(log_path) as r:
        v = await r.verify()
        assert v.ok and v.rows_checked == 5001
        assert [e.intent_id async for _, e in r.read(4999, 5001)] == ["i4998", "i4999", "i5000"]


async def test_acknowledged_on_append_a_failed_commit_still_poisons_the_log(
        log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        log.acknowledge_on_append()
        await log.append(intent(0))
        await log.flush()
        failures: list[Exception] = []
        log.on_failure(failures.append)
        await log._db.execute("PRAGMA max_page_count = 1")  # type: ignore[union-attr]
        big = [OrderIntent(ts=T0, intent_id=f"x{i}", strategy="s" * 2000, symbol="AAPL",
                           side="buy", qty=Decimal(1)) for i in range(50)]
        for e in big:
            log.append_nowait(e)  # acknowledged at once; the commit fails later
        with pytest.raises(LogWriteError, match="failed"):
            await log.flush()
        assert failures and log.failed is not None
        with pytest.raises(LogWriteError):
            log.append_nowait(intent(1))
    async with LogReader(log_path) as r:
        v = await r.verify()
        assert v.ok and v.rows_checked == 1
