from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.catalogue import BarReceived, DataRejected, OrderIntent, RunEnded
from events.errors import CorruptLogError, DecodeError, LogWriteError, SchemaTooNewError
from events.store import _SCHEMA, EventLog, LogReader, check_file_header
from tests.factories import T0, approved, bar, fill, submitted_chain

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


async def _write_a_log_from_the_future(log_path: Path) -> None:
    """A log whose file format is newer than this build (v99)."""
    async with EventLog.open(log_path) as log:
        await log.append(intent(1))
    con = sqlite3.connect(log_path)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    con.commit()
    con.close()


async def test_newer_schema_is_refused(log_path: Path) -> None:
    await _write_a_log_from_the_future(log_path)
    with pytest.raises(SchemaTooNewError, match="log format v99 was written by a newer"):
        async with EventLog.open(log_path):
            pass
    with pytest.raises(SchemaTooNewError):
        async with LogReader(log_path):
            pass


async def test_a_refused_open_leaves_no_connection_behind(log_path: Path) -> None:
    """A log too new to open closes the connection it opened: a leaked one's thread would
    later call into a closed event loop (seen as an unhandled thread exception)."""
    import threading
    await _write_a_log_from_the_future(log_path)

    def workers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}

    before = workers()
    for opener in (lambda: EventLog.open(log_path), lambda: LogReader(log_path)):
        # The error's traceback is kept (as a caller logging it would): a connection left
        # open is reachable from it, so only closing it ends its thread.
        with pytest.raises(SchemaTooNewError) as refused:
            async with opener():  # type: ignore[attr-defined]
                pass
        for t in workers() - before:
            t.join(timeout=5)
        assert not {t for t in workers() - before if t.is_alive()}, refused.value


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
    os.truncate(log_path, size // 2)
    with pytest.raises(CorruptLogError, match="truncated"):
        async with EventLog.open(log_path):
            pass
    with pytest.raises(CorruptLogError, match="truncated"):
        async with LogReader(log_path):
            pass


async def test_a_header_ahead_of_the_file_is_no_error_while_a_wal_is_being_copied(
        log_path: Path) -> None:
    # A live log mid-checkpoint: the header (page 1) is already copied from the WAL and names
    # pages the file does not have yet. That is not truncation while the WAL holds frames.
    async with EventLog.open(log_path) as log:
        for i in range(2000):
            log.append_nowait(bar(close=str(100 + i % 7), start=T0))
        await log.flush()
    os.truncate(log_path, log_path.stat().st_size // 2)
    wal = log_path.with_name(log_path.name + "-wal")
    wal.write_bytes(b"")  # an empty WAL copies nothing: still truncation
    with pytest.raises(CorruptLogError, match="truncated"):
        check_file_header(log_path)
    wal.write_bytes(b"\x37\x7f\x06\x82" + bytes(28))  # frames being copied
    check_file_header(log_path)


async def test_a_cancelled_log_has_finished_closing_when_its_block_ends(log_path: Path) -> None:
    # The last connection's close copies the WAL into the file and removes it; cancelled and
    # not shielded, the block returned while that thread was still writing the file (a reader
    # opening it then saw a header ahead of the file: "truncated"), the writer lock released.
    with anyio.CancelScope() as scope:
        async with EventLog.open(log_path) as log:
            for i in range(20_000):
                log.append_nowait(bar(close=str(100 + i % 7), start=T0))
            await log.flush()
            scope.cancel()
            await anyio.lowlevel.checkpoint()
    wal = log_path.with_name(log_path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    async with LogReader(log_path) as r:
        assert (await r.verify(decode=False)).last_seq == 20_000


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


async def test_index_columns_hold_null_for_a_missing_id_and_text_as_given(
        log_path: Path) -> None:
    """Rows bind a missing id as an empty blob that the INSERT turns into NULL: a missing id
    must read back as NULL, an empty or any other id as exactly that text, on every path."""
    events = [DataRejected(ts=T0, reason="BAD_ROW", detail="d"),
              DataRejected(ts=T0, reason="BAD_ROW", detail="d", symbol=""),
              DataRejected(ts=T0, reason="BAD_ROW", detail="d", symbol="x'"),
              approved("c1", intent_id="i-1"), bar(), intent(7)]
    async with EventLog.open(log_path) as log:
        for e in events[:3]:
            await log.append(e)
        log.enqueue(events[3])
        await log.append_many(events[4:])
    db = sqlite3.connect(log_path)
    rows = db.execute("SELECT intent_id, client_order_id, symbol, typeof(intent_id), "
                      "typeof(symbol) FROM events ORDER BY seq").fetchall()
    db.close()
    assert rows == [
        (None, None, None, "null", "null"),
        (None, None, "", "null", "text"),
        (None, None, "x'", "null", "text"),
        ("i-1", "c1", "AAPL", "text", "text"),
        (None, None, "AAPL", "null", "text"),
        ("i7", None, "AAPL", "text", "text"),
    ]
    async with LogReader(log_path) as r:
        assert (await r.verify()).ok  # the index columns agree with the payloads
        assert [e async for _, e in r.read()] == events


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


def _refuse_insert_of(path: Path, seq: int) -> None:
    """A real SQLite failure in the middle of a group: a trigger that aborts the INSERT of
    one row (the store's schema is IF NOT EXISTS, so the trigger survives the open)."""
    if not path.exists():
        sqlite3.connect(path).executescript(_SCHEMA)
    con = sqlite3.connect(path)
    con.execute(f"CREATE TRIGGER inject BEFORE INSERT ON events WHEN NEW.seq = {seq} "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    con.commit()
    con.close()


async def _durable_seqs(path: Path) -> list[int]:
    con = sqlite3.connect(path)
    con.execute("DROP TRIGGER IF EXISTS inject")
    con.commit()
    con.close()
    async with LogReader(path) as r:
        assert (await r.verify()).ok
        return [s async for s, _ in r.read()]


async def test_append_many_on_an_idle_log_is_one_transaction(log_path: Path) -> None:
    """An idle writer splits what is queued to start committing early; a batch must not be
    split with it: a failure at its last row leaves none of it on disk."""
    async with EventLog.open(log_path) as log:
        await log.append(intent(0))
    _refuse_insert_of(log_path, 41)
    async with EventLog.open(log_path) as log:
        with pytest.raises(LogWriteError, match="failed"):
            await log.append_many([intent(i) for i in range(1, 41)])  # seqs 2..41
    assert await _durable_seqs(log_path) == [1]


async def test_append_many_behind_other_appends_is_one_transaction(log_path: Path) -> None:
    """A batch queued behind single appends (and while a group commits) is committed whole
    or not at all; the appends before it are unaffected."""
    _refuse_insert_of(log_path, 60)
    async with EventLog.open(log_path) as log:
        singles = [log.append_nowait(intent(i)) for i in range(1, 21)]  # seqs 1..20
        with pytest.raises(LogWriteError, match="failed"):
            await log.append_many([intent(i) for i in range(21, 61)])  # seqs 21..60
        done = [f.result() for f in singles if f.done() and f.exception() is None]
    durable = await _durable_seqs(log_path)
    assert not set(durable) & set(range(21, 61)), "part of the batch reached the disk"
    assert durable == done and set(durable) <= set(range(1, 21))


async def test_append_many_with_an_unencodable_event_appends_nothing(log_path: Path) -> None:
    class NotCatalogued(msgspec.Struct, frozen=True, tag="not_catalogued"):
        ts: object

    async with EventLog.open(log_path) as log:
        seen: list[int] = []
        log.subscribe(lambda seq, _e: seen.append(seq))
        await log.append(intent(0))
        with pytest.raises(Exception, match="not in the event catalogue"):
            await log.append_many([intent(1), NotCatalogued(ts=T0), intent(2)])  # type: ignore[list-item]
        assert log.assigned_seq == 1 and seen == [1]
        assert await log.append(intent(3)) == 2  # the chain continues where it was
    assert await _durable_seqs(log_path) == [1, 2]


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


# --- the reader's queries (what projections, forensics and the engine ask of the log) ------


async def test_point_queries(log_path: Path) -> None:
    from datetime import timedelta

    from tests.factories import later
    async with EventLog.open(log_path) as log:
        for i in range(5):
            await log.append(bar("AAPL", later(i), ts=later(i + 1)))
        hashes = [log.last_hash]
    async with LogReader(log_path) as r:
        assert await r.seq_at(later(3)) == 3  # bar 3 recorded at 10:03
        assert await r.seq_at(later(3) + timedelta(seconds=59)) == 3
        assert await r.seq_at(T0) == 0
        assert await r.ts_at(2) == later(2) and await r.ts_at(9) is None
        assert await r.hash_at(5) == hashes[0] and await r.hash_at(6) is None
        assert await r.hash_at(4) not in (None, hashes[0])


async def test_newest_bars_are_per_symbol(log_path: Path) -> None:
    """A dense symbol does not crowd a sparse one out of the warm-up window."""
    from tests.factories import later
    async with EventLog.open(log_path) as log:
        for i in range(30):
            await log.append(bar("AAPL", later(i)))
            if i % 10 == 0:
                await log.append(bar("MSFT", later(i)))
        await log.append(intent(1))
    async with LogReader(log_path) as r:
        got = await r.newest_bars(["AAPL", "MSFT", "NVDA"], 3)
        assert [s for s, _ in got] == sorted(s for s, _ in got)
        by = [(e.bar.symbol, e.bar.start) for _, e in got]  # type: ignore[attr-defined]
        assert by == [("MSFT", later(0)), ("MSFT", later(10)), ("MSFT", later(20)),
                      ("AAPL", later(27)), ("AAPL", later(28)), ("AAPL", later(29))]
        assert await r.newest_bars(["AAPL"], 0) == []


async def test_bars_before_and_after_a_seq(log_path: Path) -> None:
    from tests.factories import later
    async with EventLog.open(log_path) as log:
        for i in range(10):
            await log.append(bar("AAPL", later(i)))
            await log.append(bar("MSFT", later(i)))
    async with LogReader(log_path) as r:
        before = await r.bars_before("AAPL", 9, limit=2)  # seqs 7 (AAPL), 8 (MSFT)
        assert [s for s, _ in before] == [7, 5]
        one = await r.bar_before("MSFT", 10)
        assert one is not None and one[0] == 8
        after = await r.bar_after("MSFT", 10)
        assert after is not None and after[0] == 12
        assert await r.bar_after("MSFT", 20) is None and await r.bar_before("AAPL", 1) is None


async def test_match_filters(log_path: Path) -> None:
    from events.store import Family, Match
    async with EventLog.open(log_path) as log:
        await log.append(approved("c1", symbol="AAPL", intent_id="i-1"))
        await log.append_many(submitted_chain("c1"))  # later rows name only c1
        await log.append(approved("c2", symbol="MSFT", intent_id="i-2"))
        await log.append(fill("c2", symbol="MSFT"))
    async with LogReader(log_path) as r:
        all_rows = [(s, e) async for s, e in r.read()]
        assert await r.client_order_ids(symbol="AAPL") == {"c1"}
        assert await r.client_order_ids(intent_id="i-2") == {"c2"}
        fam = [s async for s, _ in r.read(match=Match(families=(Family("symbol", "AAPL"),)))]
        c1 = [s for s, e in all_rows if getattr(e, "client_order_id", None) == "c1"]
        assert fam == c1 and len(fam) > 2
        assert [s async for s, _ in r.read(types=("fill",))] == [all_rows[-1][0]]
        assert [s async for s, _ in r.read(symbols=())] == []
        assert [s async for s, _ in r.read(limit=2)] == [1, 2]
        assert await r.has_client_order_id("c2") and not await r.has_client_order_id("zz")
        assert await r.has_intent("i-1") and not await r.has_intent("c1")


async def test_verify_reports_a_damaged_page_behind_the_read_ahead(log_path: Path) -> None:
    """The chain breaks early while the damaged page lies in the batch being read ahead:
    verify names the first bad row and the read-ahead's error is not left unretrieved."""
    async with EventLog.open(log_path) as log:
        await log.append_many([intent(i) for i in range(40_000)])
    _flip_byte_in_payload(log_path, 9990)
    data = bytearray(log_path.read_bytes())
    lo, hi = int(len(data) * 0.30), int(len(data) * 0.45)
    data[lo:hi] = b"\xff" * (hi - lo)
    log_path.write_bytes(bytes(data))
    loop_errors: list[str] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _loop, ctx: loop_errors.append(str(ctx.get("message"))))
    async with LogReader(log_path) as r:
        res = await r.verify()
        assert not res.ok and res.first_bad_seq == 9990 and "hash mismatch" in res.reason
        with pytest.raises(CorruptLogError, match="damaged"):
            [s async for s, _ in r.read(9991)]
    import gc
    gc.collect()
    assert loop_errors == []


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


async def test_enqueue_writes_the_same_rows_as_append_nowait(tmp_path: Path) -> None:
    """`enqueue` is `append_nowait` without the future: same seqs, same chain, same bytes,
    mixed freely with awaited appends (and what waits on a later row waits on it too)."""
    events = [intent(i) if i % 3 else bar("AAPL", T0 + timedelta(minutes=i)) for i in range(300)]
    heads = []
    for name, use_enqueue in (("a", False), ("b", True)):
        path = tmp_path / f"{name}.sqlite"
        async with EventLog.open(path) as log:
            seqs = []
            for i, e in enumerate(events[:-1]):
                if use_enqueue and i % 2:
                    seqs.append(log.enqueue(e))
                else:
                    log.append_nowait(e)
            assert await log.append_nowait(events[-1]) == 300
            assert log.last_seq == 300  # waiting on the last row waited for all before it
            if use_enqueue:
                assert seqs == list(range(2, 300, 2))
        async with LogReader(path) as r:
            assert (await r.verify()).ok
            heads.append(await r.hash_at(300))
    assert heads[0] == heads[1]


async def test_enqueue_after_a_failed_commit_raises(log_path: Path) -> None:
    async with EventLog.open(log_path) as log:
        await log.append(intent(0))
        await log._db.execute("PRAGMA max_page_count = 1")  # type: ignore[union-attr]
        for i in range(50):
            log.enqueue(OrderIntent(ts=T0, intent_id=f"x{i}", strategy="s" * 2000,
                                    symbol="AAPL", side="buy", qty=Decimal(1)))
        with pytest.raises(LogWriteError, match="failed"):
            await log.flush()
        with pytest.raises(LogWriteError):
            log.enqueue(intent(1))


async def test_a_typed_subscriber_hears_only_its_types_in_order(log_path: Path) -> None:
    heard: list[tuple[str, int, str]] = []
    async with EventLog.open(log_path) as log:
        log.subscribe(lambda s, e: heard.append(("all", s, type(e).__name__)))
        log.subscribe(lambda s, e: heard.append(("bars", s, type(e).__name__)),
                      (BarReceived,))
        log.subscribe(lambda s, e: heard.append(("later", s, type(e).__name__)))
        log.enqueue(intent(0))
        log.enqueue(bar())
        await log.append(RunEnded(ts=T0, run_id="r"))
    assert heard == [("all", 1, "OrderIntent"), ("later", 1, "OrderIntent"),
                     ("all", 2, "BarReceived"), ("bars", 2, "BarReceived"),
                     ("later", 2, "BarReceived"), ("all", 3, "RunEnded"),
                     ("later", 3, "RunEnded")]


async def test_acknowledged_on_append_rows_wait_for_a_full_group_or_a_flush(
        tmp_path: Path) -> None:
    """Nobody waits on a commit, so a few rows are not worth a trip to the thread: they are
    committed once a group's worth has queued, at a flush, or at the close."""
    from events.store import _ACK_GROUP_ROWS

    path = tmp_path / "a.sqlite"
    async with EventLog.open(path) as log:
        log.acknowledge_on_append()
        for i in range(10):
            log.enqueue(intent(i))
        for _ in range(20):
            await asyncio.sleep(0)  # the loop turns; the writer has no reason to commit yet
        assert log.last_seq == 0
        await log.flush()  # a flush takes however few rows are left
        assert log.last_seq == 10
        for i in range(10, 10 + _ACK_GROUP_ROWS):
            log.enqueue(intent(i))
        while log.last_seq < _ACK_GROUP_ROWS:  # a full group goes without a flush
            await asyncio.sleep(0.001)
        for i in range(10):
            log.enqueue(intent(10_000 + i))  # left for the close
    async with LogReader(path) as r:
        v = await r.verify()
        assert v.ok and v.rows_checked == 20 + _ACK_GROUP_ROWS


async def test_acknowledged_on_append_commits_whole_groups_and_leaves_the_rest(
        tmp_path: Path) -> None:
    """Every group handed to the thread is exactly a group's worth of rows (one multi-row
    INSERT, prepared once): a backlog of two and a half groups is committed as two, and the
    half waits for more rows or a flush."""
    from events.store import _ACK_GROUP_ROWS as G

    path = tmp_path / "g.sqlite"
    async with EventLog.open(path) as log:
        log.acknowledge_on_append()
        for i in range(2 * G + G // 2):
            log.enqueue(intent(i))
        with anyio.fail_after(10):
            while log.last_seq < 2 * G:
                await asyncio.sleep(0.001)
        for _ in range(20):
            await asyncio.sleep(0)
        assert log.last_seq == 2 * G  # not the whole backlog in one statement
        await log.flush()
        assert log.last_seq == 2 * G + G // 2
    async with LogReader(path) as r:
        v = await r.verify()
        assert v.ok and v.rows_checked == 2 * G + G // 2


async def test_blobs_bound_as_bytearrays_are_stored_as_the_same_bytes(log_path: Path) -> None:
    """The writer binds payload and hash as bytearrays (no adapter lookup); the file holds
    the same BLOBs as binding the bytes would, and they read back as bytes."""
    from events.store import _params

    async with EventLog.open(log_path) as log:
        log.acknowledge_on_append()
        for i in range(3):
            log.enqueue(intent(i))
        rows = list(log._rows)
        await log.flush()
    params = _params(rows)
    assert params == [0 if v is None else v for row in rows for v in row]  # in order
    assert {type(v) for v in params[7::9] + params[8::9]} == {bytearray}
    con = sqlite3.connect(log_path)
    stored = con.execute("SELECT payload, hash, typeof(payload), typeof(hash) FROM events "
                         "ORDER BY seq").fetchall()
    con.close()
    assert stored == [(r[7], r[8], "blob", "blob") for r in rows]
    assert all(type(p) is bytes and type(h) is bytes for p, h, _, _ in stored)


_CORRELATION = st.one_of(st.none(), st.sampled_from(["", "0", "0.0", "00", " 0", "x"]),
                         st.text(max_size=8))


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.tuples(_CORRELATION, _CORRELATION, _CORRELATION), min_size=1,
                       max_size=12))
def test_the_writers_insert_stores_exactly_what_a_plain_insert_stores(
        values: list[tuple[str | None, str | None, str | None]]) -> None:
    """The writer's multi-row INSERT gets a missing id as `_NULL` (an empty blob it turns
    back into NULL) and blobs as bytearrays; every correlation value (missing, '', '0', any
    text) and blob is stored exactly as a plain parameter insert of the row with None
    stores it: same value, same storage class."""
    from events.store import _INSERT, _NULL, WriteGuard, _multi_insert, write_rows

    rows = [(i + 1, 1_700_000_000_000_000 + i, "order_intent", 1, a, b, c,
             bytes([i]) * 3, bytes([i, 1])) for i, (a, b, c) in enumerate(values)]
    as_bound = [(*r[:4], *(_NULL if v is None else v for v in r[4:7]), bytearray(r[7]), r[8])
                for r in rows]  # as `_row` makes them
    ours, plain = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    for con in (ours, plain):
        con.executescript(_SCHEMA)
    ours.isolation_level = None
    write_rows(ours, as_bound, WriteGuard())  # type: ignore[arg-type]
    plain.executemany(_INSERT, rows)
    query = ("SELECT seq, intent_id, typeof(intent_id), client_order_id, typeof(client_order_id),"
             " symbol, typeof(symbol), payload, typeof(payload), hash FROM events ORDER BY seq")
    assert ours.execute(query).fetchall() == plain.execute(query).fetchall()
    assert _multi_insert(len(rows)).lower().count("nullif") == 3 * len(rows)
