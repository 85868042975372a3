"""The append-only event log on SQLite (aiosqlite).

- One writer task owns the write connection and commits in groups: every append that is
  waiting when a commit starts shares that transaction, and each `append` returns its seq only
  after the commit that holds it. (A simulation, acknowledged on append, may have a `Sink`
  commit the groups instead: `events/sink.py`, a child process.)
- The order of the log is fixed when `append` is *called*: seq (and, but for rows a sink
  chains, hash) are assigned synchronously, so what lands on disk never depends on thread
  timing (deterministic replays).
- Each row's `hash` is sha256(previous hash + row), so `verify()` finds any flipped byte.
- Triggers refuse UPDATE and DELETE; WAL mode; `synchronous` is NORMAL (survives a killed
  process) or FULL (also survives power loss).
- After a failed commit the log refuses every further append: later rows would chain onto rows
  that never reached the disk. Reopen it to continue from what is durable.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import itertools
import logging
import os
import sqlite3
import struct
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, Self, cast

import aiosqlite
import anyio

from events.base import UTC, Event, tag_of
from events.codec import Codec, default_codec
from events.errors import (
    CorruptLogError,
    DecodeError,
    LogClosedError,
    LogError,
    LogWriteError,
    SchemaTooNewError,
)

log = logging.getLogger(__name__)

# Version of the file layout (tables, columns, hash recipe); events carry their own versions.
FORMAT_VERSION = 1
GENESIS_HASH = bytes(32)
Synchronous = Literal["NORMAL", "FULL", "EXTRA"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    intent_id TEXT,
    client_order_id TEXT,
    symbol TEXT,
    payload BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_events_intent ON events(intent_id) WHERE intent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_events_coid ON events(client_order_id)
    WHERE client_order_id IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: DELETE refused'); END;
"""

_INSERT = (
    "INSERT INTO events (seq, ts, type, schema_version, intent_id, client_order_id, symbol, "
    "payload, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ROW_COLUMNS = "seq, ts, type, schema_version, intent_id, client_order_id, symbol, payload, hash"
REPLAY_COLUMNS = "seq, type, schema_version, payload"

# A stored row: (seq, ts_us, type, schema_version, intent_id, client_order_id, symbol, payload,
# hash), as bound to the INSERT: a missing id is `_NULL`, the payload a bytearray (see there).
# The hash is None in a row for a sink that chains it (`Sink`).
Row = tuple[int, int, str, int, str | bytearray, str | bytearray, str | bytearray, bytearray,
            bytes | None]
Subscriber = Callable[[int, Event], None]


def ts_to_us(ts: datetime) -> int:
    """Microseconds since the epoch for an aware datetime (exact, no float)."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us_to_ts(us: int) -> datetime:
    """The inverse of `ts_to_us` (exact: integer microseconds)."""
    return _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class Family:
    """Rows whose `column` ("symbol" or "intent_id") is `value`, or that belong to an order
    some row of that value names, or to one of the orders in `also` (replacements, whose
    rows name only their own id)."""

    column: Literal["symbol", "intent_id"]
    value: str
    also: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Match:
    """Which rows a read selects, in the log's index columns; every condition given holds
    (AND). A tuple is "any of" (empty: nothing matches); None is no condition. `since` and
    `until` compare the recorded ts, both inclusive."""

    types: tuple[str, ...] | None = None
    symbols: tuple[str, ...] | None = None
    client_order_ids: tuple[str, ...] | None = None
    intent_ids: tuple[str, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None
    families: tuple[Family, ...] = ()

    @classmethod
    def of(cls, *, types: Iterable[str] = (), symbols: Iterable[str] | None = None,
           client_order_ids: Iterable[str] | None = None,
           intent_ids: Iterable[str] | None = None) -> Match:
        """`types` empty means any type (the common "no filter" spelling)."""
        t = tuple(types)
        return cls(types=t or None,
                   symbols=None if symbols is None else tuple(symbols),
                   client_order_ids=None if client_order_ids is None else tuple(client_order_ids),
                   intent_ids=None if intent_ids is None else tuple(intent_ids))

    def also(self, other: Match) -> Match:
        """Both matches' conditions (a field set on both: `other`'s)."""
        return Match(
            types=other.types if other.types is not None else self.types,
            symbols=other.symbols if other.symbols is not None else self.symbols,
            client_order_ids=(other.client_order_ids if other.client_order_ids is not None
                              else self.client_order_ids),
            intent_ids=other.intent_ids if other.intent_ids is not None else self.intent_ids,
            since=other.since if other.since is not None else self.since,
            until=other.until if other.until is not None else self.until,
            families=self.families + other.families)

    def sql(self) -> tuple[str, list[Any]]:
        """The condition ("" for none) and its parameters; values are always parameters."""
        clauses: list[str] = []
        args: list[Any] = []
        for column, values in (("type", self.types), ("symbol", self.symbols),
                               ("client_order_id", self.client_order_ids),
                               ("intent_id", self.intent_ids)):
            if values is None:
                continue
            if not values:
                clauses.append("0")
                continue
            clauses.append(f"{column} IN ({','.join('?' * len(values))})")
            args += values
        if self.since is not None:
            clauses.append("ts >= ?")
            args.append(ts_to_us(self.since))
        if self.until is not None:
            clauses.append("ts <= ?")
            args.append(ts_to_us(self.until))
        for fam in self.families:
            col = "symbol" if fam.column == "symbol" else "intent_id"
            # The family's orders as a subquery, so their number never matters.
            cond = (f"{col} = ? OR client_order_id IN (SELECT client_order_id FROM events "
                    f"WHERE {col} = ? AND client_order_id IS NOT NULL)")
            args += [fam.value, fam.value]
            if fam.also:
                cond += f" OR client_order_id IN ({','.join('?' * len(fam.also))})"
                args += fam.also
            clauses.append(f"({cond})")
        return " AND ".join(f"({c})" for c in clauses), args


_HEAD = struct.Struct(">qqH")


def row_hash(prev: bytes, seq: int, ts_us: int, version: int,
             payload: bytes | bytearray) -> bytes:
    """The chain link: sha256(previous hash + seq + ts + schema version + payload).

    The payload holds everything about the event (its tag and correlation ids included); the
    type/intent/order/symbol columns are an index derived from it, which `verify()` checks
    against the decoded payload.
    """
    return hashlib.sha256(prev + _HEAD.pack(seq, ts_us, version) + payload).digest()


_MAX_IN_FLIGHT = 2
# Acknowledged on append, nobody waits for a commit: the writer waits for this many rows (or
# a flush, or the close) before it hands a group to the thread. Every group costs the loop a
# task, a thread wake-up and a self-pipe round trip, and the thread several GIL
# reacquisitions; a simulation turns the loop thousands of times between such counts.
_ACK_GROUP_ROWS = 1024
_CHECKPOINT_ROWS = 20_000
_SINK_MAX_ROWS = 65_536
_SPLIT_AT = 16
# Group sizes vary; keep each size's prepared multi-row INSERT around.
_STATEMENT_CACHE = 4096


class WriteGuard:
    """Set by the writer (the connection thread, or the child of `events.sink`) when a group
    fails, so groups already queued behind it are refused instead of chaining onto rows that
    were rolled back."""

    failed = False


_ROW_PARAMS = 9
_MAX_ROWS_PER_STATEMENT = 32766 // _ROW_PARAMS  # SQLITE_MAX_VARIABLE_NUMBER since 3.32


# The rows' values in one list, in C (this thread holds the GIL while it runs).
_flatten = itertools.chain.from_iterable


# A missing index id as a row binds it: an empty blob, which the INSERT turns back into NULL
# (`nullif(?, x'')`; no text equals a blob, so a '' id stays ''). Why not None: sqlite3 binds
# an int, a str or a bytearray at once, but sends None and bytes through its adapter lookup
# (a tuple, a dict probe and two attribute lookups each). That runs in the writer thread
# under the GIL, for four of a bar row's nine values (both ids, the payload, the hash), and
# the event loop waits for it: an INSERT of 1024 bar rows took ~1.7 us per row, ~1.0
# without the lookups of the ids and the payload (`_NULL`; the payload is encoded into a
# bytearray by `_row`; `_params` converts the hash). Never mutated.
_NULL = bytearray()


def _params(rows: Sequence[Sequence[Any]]) -> list[Any]:
    """The rows' values in one list, the hashes as bytearrays. The sqlite3 module binds a
    bytearray directly but looks every bytes value up in its adapter table first (~0.35 us
    each, with the GIL held, which the event loop then waits for); a bytearray is stored as
    the same BLOB. Payloads already are bytearrays (`_row`), missing ids `_NULL`. All of it
    runs in C: slices and `map`."""
    params: list[Any] = list(_flatten(rows))
    params[8::_ROW_PARAMS] = map(bytearray, params[8::_ROW_PARAMS])
    return params


@functools.lru_cache(maxsize=256)  # the SQL text grows with n: a live log sees many sizes
def _multi_insert(n: int) -> str:
    return "INSERT INTO events VALUES " + ",".join(
        ["(?,?,?,?,nullif(?,x''),nullif(?,x''),nullif(?,x''),?,?)"] * n)


def write_rows(conn: sqlite3.Connection, rows: Sequence[Sequence[Any]],
               guard: WriteGuard) -> bytes:
    """Runs in the aiosqlite thread (or the child of `events.sink`): the whole group in one
    transaction. Returns the hash of its last row (the chain head once it is committed).

    A group of up to ~3,600 rows is ONE multi-row INSERT in autocommit mode, i.e. a single
    statement that is its own transaction. That matters more than SQLite's own speed: every
    statement step releases the GIL and must win it back from the busy event loop, which can
    cost a whole switch interval, so the fewer steps per group the better.
    """
    if guard.failed:
        raise LogWriteError("an earlier group failed; refusing to chain onto it")
    try:
        if len(rows) <= _MAX_ROWS_PER_STATEMENT:
            conn.execute(_multi_insert(len(rows)), _params(rows))
            return cast(bytes, rows[-1][8])
        conn.execute("BEGIN IMMEDIATE")
        try:
            for i in range(0, len(rows), _MAX_ROWS_PER_STATEMENT):
                chunk = rows[i:i + _MAX_ROWS_PER_STATEMENT]
                conn.execute(_multi_insert(len(chunk)), _params(chunk))
            conn.execute("COMMIT")
            return cast(bytes, rows[-1][8])
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
    except BaseException:
        guard.failed = True
        raise


def _writer_pragmas(synchronous: Synchronous) -> list[str]:
    """The settings of the connection that writes rows (the log's own, or a sink's)."""
    return [f"PRAGMA synchronous={synchronous}", "PRAGMA cache_size=-65536",
            # The writer never checkpoints (each checkpoint fsyncs the main file, which would
            # stall commits); `_checkpointer` does it on its own connection and thread.
            "PRAGMA wal_autocheckpoint=0"]


def open_writer_connection(path: str, synchronous: str) -> sqlite3.Connection:
    """A blocking connection that writes rows of the open log at `path` the way the log's own
    does (for `events.sink`'s child: the log has made the file, its schema and WAL mode)."""
    if synchronous not in ("NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, got {synchronous!r}")
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=_STATEMENT_CACHE)
    try:
        # The log's own connection may still be finishing a checkpoint: wait, never fail.
        conn.execute("PRAGMA busy_timeout=30000")
        for pragma in _writer_pragmas(cast(Synchronous, synchronous)):
            conn.execute(pragma)
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        if mode != "wal":
            raise LogError(f"{path}: not an open event log (journal mode {mode})")
    except BaseException:
        conn.close()
        raise
    return conn


def head_of(conn: sqlite3.Connection) -> bytes:
    """The hash of the newest row of the log on `conn` (the genesis hash when it is empty)."""
    last = conn.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return bytes(last[0]) if last is not None else GENESIS_HASH


class Sink(Protocol):
    """Where groups are committed instead of the log's connection thread (`events.sink`).

    A sink also chains the hashes: a row whose hash is None gets `row_hash` of the row
    before it (the newest row on disk, for its first), the sink's own work instead of the
    event loop's; rows that come with a hash keep it. The head the log then reports (and a
    backtest's on-disk check compares with) is the sink's; that the rows it stored are the
    rows the loop folded is checked per group (`commit` fails on a mismatch)."""

    def commit(self, rows: list[Row]) -> asyncio.Future[bytes]:
        """Commit one group, in seq order after the previous; done once durable, with the
        hash of its last row."""
        ...

    async def close(self) -> None:
        """Every group answered; the sink's connection closed."""
        ...


# How a log starts its sink: (log path, synchronous, the writer lock's descriptor for the sink
# to hold as well, or None). Never raises: None means it did not start (the thread writes).
SinkStarter = Callable[[Path, Synchronous, "int | None"], Awaitable["Sink | None"]]


Correlation = Callable[[Any], tuple[str | None, str | None, str | None]]


@functools.cache
def correlation_of(cls: type[Event]) -> Correlation:
    """How to read (intent_id, client_order_id, symbol) off an event of type `cls`."""
    names = set(cls.__struct_fields__)
    has_i, has_c, has_s = "intent_id" in names, "client_order_id" in names, "symbol" in names
    if "bar" in names:
        return lambda e: (None, None, e.bar.symbol)
    return lambda e: (
        e.intent_id if has_i else None,
        e.client_order_id if has_c else None,
        e.symbol if has_s else None,
    )


def correlation(event: Event) -> tuple[str | None, str | None, str | None]:
    """(intent_id, client_order_id, symbol) of `event`, as the log indexes them."""
    return correlation_of(type(event))(event)


IndexIds = Callable[[Any], tuple[str | bytearray, str | bytearray, str | bytearray]]


@functools.cache
def _index_ids_of(cls: type[Event]) -> IndexIds:
    """`correlation_of(cls)` as a row binds it: each missing id `_NULL`."""
    names = set(cls.__struct_fields__)
    if "bar" in names:  # a bar names only its symbol (never missing: the contract)
        return lambda e: (_NULL, _NULL, e.bar.symbol)
    corr = correlation_of(cls)

    def ids(e: Any) -> tuple[str | bytearray, str | bytearray, str | bytearray]:
        i, c, s = corr(e)
        return (_NULL if i is None else i, _NULL if c is None else c,
                _NULL if s is None else s)
    return ids


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    rows_checked: int
    last_seq: int
    first_bad_seq: int | None = None
    reason: str = ""


class _Group:
    """Rows handed to the connection thread together, with their events and futures."""

    __slots__ = ("events", "futs", "rows")

    def __init__(self, rows: list[Row], events: list[Event],
                 futs: list[asyncio.Future[int] | None]):
        self.rows = rows
        self.events = events
        self.futs = futs

    def extend(self, other: _Group) -> None:
        self.rows += other.rows
        self.events += other.events
        self.futs += other.futs


def _mark_retrieved(fut: asyncio.Future[int]) -> None:
    # Fire-and-forget appends still learn of failures through the log's failed state; this
    # only silences asyncio's "exception was never retrieved" noise for them.
    if not fut.cancelled():
        fut.exception()


class LogLockedError(LogError):
    """Another process is writing this log (one writer per log, or the hash chain forks)."""


def _lock_writer(path: Path) -> int | None:
    """Hold an exclusive lock on `<log>.lock` for as long as the log is open for writing.
    The OS drops it when the process dies (SIGKILL included), so a crash never leaves a
    stale lock behind."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process guard
        return None
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LogLockedError(f"{path}: another process (pid {holder}) is writing this log") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def writer_is_running(path: str | os.PathLike[str]) -> bool:
    """True if some process holds the writer lock of the log at `path`."""
    try:
        import fcntl
    except ImportError:
        return False
    lock_path = Path(path).with_name(Path(path).name + ".lock")
    if not lock_path.exists():
        return False
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


class EventLog:
    """The writable log. Use `async with EventLog.open(path) as log:`."""

    def __init__(self, path: Path, codec: Codec, synchronous: Synchronous) -> None:
        self.path = path
        self.codec = codec
        self.synchronous = synchronous
        self._db: aiosqlite.Connection | None = None
        self._rows: list[Row] = []
        self._events: list[Event] = []
        # None where nobody waits on the commit (`enqueue`, or acknowledged on append).
        self._futs: list[asyncio.Future[int] | None] = []
        self._wake = asyncio.Event()
        # True from an append's wake-up until the writer takes it: the appends in between
        # need not touch either asyncio.Event (a Python call each, on every append).
        self._wake_pending = False
        # The writer's wake-up threshold: a row when appends wait for commits, more when not.
        self._group_min = 1
        # flush() calls waiting: they need every queued row committed, however few.
        self._urgent = 0
        self._next_seq = 1
        # The chain head as appended; None once a sink chains the hashes (`Sink`), when the
        # head is the newest committed row's (`last_hash`).
        self._prev_hash: bytes | None = GENESIS_HASH
        self._committed_seq = 0
        self._committed_head = GENESIS_HASH
        self._failed: LogWriteError | None = None
        self._closing = False
        self._closed = False
        self._subscribers: list[tuple[Subscriber, frozenset[type] | None]] = []
        # Event type -> the subscribers that take it, in subscription order (built lazily).
        self._fanout: dict[type, tuple[Subscriber, ...]] = {}
        self._commit_listeners: list[Subscriber] = []
        self._failure_listeners: list[Callable[[LogWriteError], None]] = []
        # Event type -> (tag, schema version, how to read its index ids for a row).
        self._meta: dict[type, tuple[str, int, IndexIds]] = {}
        # The last event time converted, by identity: every event of a simulated step
        # carries the same clock reading, so most rows skip the conversion.
        self._last_ts: datetime | None = None
        self._last_ts_us = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._is_idle = True  # mirrors `_idle` (checked per append; a bool is cheaper)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checkpoint_wake = asyncio.Event()
        self._rows_since_checkpoint = 0
        # (first seq, last seq) of queued `append_many` batches: the writer never splits one.
        self._units: collections.deque[tuple[int, int]] = collections.deque()
        self._ack_on_append = False
        # Commits elsewhere (acknowledged on append only): how to start the sink, and the
        # sink once it serves (None: the connection thread commits).
        self._sink_starter: SinkStarter | None = None
        self._sink: Sink | None = None
        self._lock_fd: int | None = None  # the writer lock (a sink holds it too)
        # Set once the writer has finished (its sink closed): the close checkpoints after it.
        self._writer_done = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        codec: Codec | None = None,
    ) -> AsyncIterator[EventLog]:
        if synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, got {synchronous!r}")
        self = cls(Path(path), codec or default_codec(), synchronous)
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = self._lock_fd = _lock_writer(self.path)
        try:
            await self._connect()
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer)
                tg.start_soon(self._checkpointer)
                try:
                    yield self
                finally:
                    self._closing = True
                    self._wake.set()
                    self._checkpoint_wake.set()
        finally:
            self._closed = True
            try:
                if self._db is not None:
                    # Shielded: a cancelled close returns at once while the connection's
                    # thread goes on closing (its last checkpoint writes the main file), so
                    # the writer lock would be released and a reader would open a file still
                    # being written.
                    with anyio.CancelScope(shield=True):
                        await self._db.close()
                    self._db = None
            finally:
                if lock_fd is not None:
                    os.close(lock_fd)

    async def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_file_header(self.path)
        try:
            db = await aiosqlite.connect(
                str(self.path), isolation_level=None, cached_statements=_STATEMENT_CACHE
            )
        except sqlite3.DatabaseError as e:
            raise CorruptLogError(f"{self.path}: cannot open log: {e}") from None
        self._db = db
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            for pragma in _writer_pragmas(self.synchronous):
                await db.execute(pragma)
            await db.executescript(_SCHEMA)
            await _check_format(db, self.path, writable=True)
            async with db.execute(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
            ) as cur:
                last = await cur.fetchone()
        except BaseException as e:
            # Whatever refused the file (damage, a newer format), close what was opened: a
            # leaked connection's thread later calls into a closed event loop.
            with anyio.CancelScope(shield=True):
                await db.close()
            self._db = None
            if isinstance(e, sqlite3.DatabaseError):
                raise CorruptLogError(f"{self.path}: damaged log ({e})") from None
            raise
        if last is not None:
            self._next_seq = last[0] + 1
            self._prev_hash = self._committed_head = last[1]
            self._committed_seq = last[0]

    # --- appending ---------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The highest seq that is durable."""
        return self._committed_seq

    @property
    def assigned_seq(self) -> int:
        """The highest seq handed out (durable or still in the commit queue)."""
        return self._next_seq - 1

    @property
    def last_hash(self) -> bytes:
        """The hash of the newest appended row (the chain head). While a sink chains the
        hashes it is known once everything appended is committed (after a `flush`)."""
        if self._prev_hash is not None:
            return self._prev_hash
        if self._failed is not None:
            raise self._failed
        if self._committed_seq != self.assigned_seq:
            raise LogError(f"{self.path}: the chain head is the log writer's to compute; "
                           "flush the log first")
        return self._committed_head

    @property
    def failed(self) -> LogWriteError | None:
        return self._failed

    def subscribe(self, fn: Subscriber, types: Iterable[type[Event]] | None = None) -> None:
        """`fn(seq, event)` is called for each event, in seq order, when it is appended (its
        place in the log is fixed then). This is where projections fold: in-memory state is
        always the fold of the whole appended log, whatever the disk's timing, which keeps
        runs deterministic. Nothing that leaves the process may act on an event before it is
        durable — that is what awaiting `append` (or `on_commit`) is for; and since commits
        are in seq order, a later event can not become durable without every earlier one.
        `fn` must not block or raise.

        With `types`, `fn` hears only events of exactly those classes (a subscriber that
        ignores the rest would otherwise be called for every bar); subscribers that take an
        event are called in the order they subscribed either way."""
        self._subscribers.append((fn, None if types is None else frozenset(types)))
        self._fanout.clear()

    def on_commit(self, fn: Subscriber) -> None:
        """`fn(seq, event)` is called for each event, in seq order, once it is durable."""
        self._commit_listeners.append(fn)

    def on_failure(self, fn: Callable[[LogWriteError], None]) -> None:
        self._failure_listeners.append(fn)

    def acknowledge_on_append(self, sink: SinkStarter | None = None) -> None:
        """For a simulation only, where nothing an event causes leaves the process: from now
        on an append's future gives its seq as soon as its place in the log is fixed, instead
        of after the commit that holds it. Commits still run in groups behind the loop, in
        seq order; a failed one still fails the log (every later append raises, `flush`
        raises). A crash loses at most the uncommitted tail of a run that is reproducible
        from its input; what waited for each commit (a decision's answer) was waiting for
        nothing that mattered. Never call this where a broker call or a caller's answer can
        follow an append. Groups are then handed to the thread in batches of at least
        `_ACK_GROUP_ROWS` rows (a `flush` or the close takes what is left).

        `sink`: commit those groups elsewhere (`events.sink.ProcessSink.start`: in a child
        process, off this process's GIL). The writer starts it once a whole group is queued
        (a run too short for one never starts it) and the groups already sent to the thread
        are committed, and uses it from then on; if it does not start (None), the thread goes
        on committing. Either way the same rows land in the same order and groups."""
        self._ack_on_append = True
        self._group_min = _ACK_GROUP_ROWS
        if sink is not None and self._sink is None:
            self._sink_starter = sink

    @property
    def acknowledges_on_append(self) -> bool:
        return self._ack_on_append

    def append_nowait(self, event: Event) -> asyncio.Future[int]:
        """Queue `event`; its place in the log is fixed now. The future gives its seq once
        durable (or the write error). Raises at once if the log is closed or failed, or if the
        event cannot be encoded."""
        self._check_open()
        return self._enqueue_one(self._row(event, self._next_seq, self._prev_hash), event)

    def enqueue(self, event: Event) -> int:
        """`append_nowait` for a caller that never waits on the commit (a bar, a strategy
        error): the same row at the same place, and its seq instead of a future, which spares
        a future per row. Not waiting loses nothing: commits are in seq order, so whatever
        waits on a later event waits on this one too, and a failed commit fails the log (the
        next append raises, `flush` raises)."""
        if self._failed is not None or self._closing or self._closed:
            self._check_open()  # raises (tested inline: every bar comes through here)
        row = self._row(event, self._next_seq, self._prev_hash)
        self._place(row, event, None)
        return row[0]

    async def append(self, event: Event) -> int:
        """Append one event; returns its seq once committed."""
        return await self.append_nowait(event)

    def append_many_nowait(self, events: Sequence[Event]) -> list[asyncio.Future[int]]:
        """Queue `events` as one unit: every one is encoded before any is queued (one that
        cannot be encoded raises and queues none), and the writer commits them in a single
        transaction, so all or none of them become durable."""
        self._check_open()
        rows: list[Row] = []
        seq, prev = self._next_seq, self._prev_hash
        for event in events:
            row = self._row(event, seq, prev)
            rows.append(row)
            seq, prev = seq + 1, row[8]
        if len(rows) > 1:
            # The writer may split what is queued; never inside this range.
            self._units.append((rows[0][0], rows[-1][0]))
        return self._enqueue(rows, list(events))

    async def append_many(self, events: Sequence[Event]) -> list[int]:
        """Append several events in one transaction (all or none are durable)."""
        return [await f for f in self.append_many_nowait(events)]

    def _check_open(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closing or self._closed:
            raise LogClosedError(f"{self.path}: log is closed")

    def _row(self, event: Event, seq: int, prev: bytes | None) -> Row:
        """The stored row of `event` at `seq` chained onto `prev`; changes no state, so a
        batch can be encoded whole before any of it is queued."""
        cls = type(event)
        meta = self._meta.get(cls)
        if meta is None:
            tag = tag_of(cls)
            if tag not in self.codec.types:
                raise LogError(f"{cls.__name__} is not in the event catalogue")
            meta = self._meta[cls] = (tag, self.codec.versions[tag], _index_ids_of(cls))
        tag, version, ids = meta
        payload = bytearray()  # the INSERT binds a bytearray without an adapter lookup
        self.codec.encode_into(event, payload)
        intent_id, coid, symbol = ids(event)
        ts = event.ts
        if ts is self._last_ts:
            ts_us = self._last_ts_us
        else:
            ts_us = ts_to_us(ts)
            self._last_ts, self._last_ts_us = ts, ts_us
        # No previous hash: a sink chains it (`Sink`), off the event loop.
        h = row_hash(prev, seq, ts_us, version, payload) if prev is not None else None
        return (seq, ts_us, tag, version, intent_id, coid, symbol, payload, h)

    def _enqueue(self, rows: list[Row], events: Sequence[Event]) -> list[asyncio.Future[int]]:
        return [self._enqueue_one(row, event) for row, event in zip(rows, events)]

    def _enqueue_one(self, row: Row, event: Event) -> asyncio.Future[int]:
        assert self._loop is not None
        fut: asyncio.Future[int] = self._loop.create_future()
        if self._ack_on_append:
            fut.set_result(row[0])
            self._place(row, event, None)  # already answered: the commit owes it nothing
        else:
            self._place(row, event, fut)
        return fut

    def _place(self, row: Row, event: Event, fut: asyncio.Future[int] | None) -> None:
        """Fix the place of a prepared row in the log: the chain head moves, subscribers fold
        it, the writer is woken. `fut` (if any) gets the seq when the row is committed."""
        seq = row[0]
        self._next_seq = seq + 1
        self._prev_hash = row[8]
        self._rows.append(row)
        self._events.append(event)
        self._futs.append(fut)
        cls = type(event)
        fns = self._fanout.get(cls)
        if fns is None:
            fns = self._fanout[cls] = tuple(
                fn for fn, types in self._subscribers if types is None or cls in types)
        for fn in fns:
            try:
                fn(seq, event)
            except Exception:  # a subscriber bug must not stop the log
                log.exception("event-log subscriber failed at seq %s", seq)
        if self._is_idle:
            self._is_idle = False
            self._idle.clear()
        if not self._wake_pending and len(self._rows) >= self._group_min:
            self._wake_pending = True
            self._wake.set()

    async def flush(self) -> None:
        """Wait until everything appended so far is durable (or raise the write error)."""
        self._urgent += 1
        self._wake.set()  # however few rows are queued
        try:
            await self._idle.wait()
        finally:
            self._urgent -= 1
        if self._failed is not None:
            raise self._failed

    async def _writer(self) -> None:
        """Group commit, pipelined: up to `_MAX_IN_FLIGHT` groups queue at the connection's
        thread (which runs them strictly in order), so the event loop prepares the next group
        while SQLite commits the previous one."""
        assert self._db is not None
        db = self._db
        conn = db._conn
        in_flight: collections.deque[tuple[_Group, asyncio.Future[bytes]]] = (
            collections.deque())
        guard = WriteGuard()
        signal = self._wake
        wake = signal.set

        def on_done(_: object) -> None:
            wake()

        try:
            while True:
                if (self._rows and len(in_flight) < _MAX_IN_FLIGHT and self._failed is None
                        and (len(self._rows) >= self._group_min or self._urgent
                             or self._closing)):
                    if (self._sink_starter is not None and not self._closing
                            and len(self._rows) >= _ACK_GROUP_ROWS):
                        # A whole group is waiting (a run too short for one never pays for
                        # a child). One writer at a time: start once the thread has
                        # committed all it was sent, and send it nothing more meanwhile.
                        if not in_flight:
                            starter, self._sink_starter = self._sink_starter, None
                            self._sink = await starter(self.path, self.synchronous,
                                                       self._lock_fd)
                            if self._sink is not None:
                                # Rows appended from now on leave their hash to the sink.
                                self._prev_hash = None
                            continue
                    else:
                        in_flight.append(self._dispatch(db, conn, guard, not in_flight,
                                                        on_done))
                        continue
                if in_flight and in_flight[0][1].done():
                    group, done = in_flight.popleft()
                    exc = done.exception()
                    if exc is None:
                        self._committed(group, done.result())
                        continue
                    rest = _Group([], [], [])
                    for g, f in in_flight:
                        await asyncio.wait((f,))  # the guard refuses them; let them finish
                        rest.extend(g)
                    in_flight.clear()
                    self._fail(exc, group, rest)
                    continue
                if not in_flight and not self._rows:
                    if self._closing:
                        await self._close_sink()
                    self._idle.set()
                    self._is_idle = True
                    if self._closing:
                        return
                self._wake_pending = False  # the next append wakes us (and clears idle)
                signal.clear()
                await signal.wait()
        finally:
            # Cancelled (the log's task group is shutting down): groups already handed to the
            # thread will run anyway; wait for them so no task outlives the log.
            with anyio.CancelScope(shield=True):
                for _, f in in_flight:
                    await asyncio.wait((f,))
                await self._close_sink()
            self._writer_done.set()  # the close's checkpoint runs after the sink's connection

    async def _close_sink(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            with anyio.CancelScope(shield=True):
                await sink.close()

    def _dispatch(self, db: aiosqlite.Connection, conn: sqlite3.Connection, guard: WriteGuard,
                  idle: bool, on_done: Callable[[object], None]
                  ) -> tuple[_Group, asyncio.Future[bytes]]:
        rows, events, futs = self._rows, self._events, self._futs
        if idle and len(rows) >= _SPLIT_AT and not self._ack_on_append:
            # Nothing is committing: send half now so the thread starts at once, and the other
            # half right after, which keeps it busy while the first half's appenders run
            # again. Otherwise closed-loop appenders all land in one group and the loop and the
            # thread take turns instead of overlapping. (Acknowledged on append, nobody waits
            # on a commit: the loop keeps appending while the thread works anyway.)
            h = self._cut(rows, len(rows) // 2)
        elif self._sink is not None:
            # Exactly a group, or at a flush or the close at most `_SINK_MAX_ROWS` (one pipe
            # frame each, its length a 32-bit number).
            h = self._cut(rows, min(len(rows), _SINK_MAX_ROWS if self._urgent or self._closing
                                    else _ACK_GROUP_ROWS))
        elif self._ack_on_append and not (self._urgent or self._closing):
            # Exactly a group (the rest waits for the next): every group is then the same
            # multi-row INSERT, prepared once and reused from the statement cache. A statement
            # of this size takes SQLite longer to prepare than to run, in the thread.
            h = self._cut(rows, min(len(rows), _ACK_GROUP_ROWS))
        else:
            h = len(rows)
        group = _Group(rows[:h], events[:h], futs[:h])
        self._rows, self._events, self._futs = rows[h:], events[h:], futs[h:]
        units = self._units
        while units and units[0][1] <= group.rows[-1][0]:
            units.popleft()
        task: asyncio.Future[bytes]
        if self._sink is not None:
            task = self._sink.commit(group.rows)
        else:
            task = asyncio.ensure_future(
                db._execute(write_rows, conn, group.rows, guard))  # type: ignore[no-untyped-call]
        task.add_done_callback(on_done)
        return group, task

    def _cut(self, rows: list[Row], h: int) -> int:
        """`h`, moved forward past the end of an `append_many` batch it would split (so a
        batch is one transaction, as its docstring promises)."""
        first = rows[0][0]
        at = first + h
        for lo, hi in self._units:
            if lo < at <= hi:
                return min(hi + 1 - first, len(rows))
            if lo >= at:
                break
        return h

    def _committed(self, group: _Group, head: bytes) -> None:
        """`group` is durable; `head` is its last row's hash."""
        rows, events, futs = group.rows, group.events, group.futs
        self._committed_seq = rows[-1][0]
        self._committed_head = head
        self._rows_since_checkpoint += len(rows)
        if self._rows_since_checkpoint >= _CHECKPOINT_ROWS:
            self._checkpoint_wake.set()
        for fn in self._commit_listeners:
            for row, event in zip(rows, events):
                try:
                    fn(row[0], event)
                except Exception:  # a listener bug must not lose durable events
                    log.exception("event-log commit listener failed at seq %s", row[0])
        for row, fut in zip(rows, futs):
            if fut is not None and not fut.done():
                fut.set_result(row[0])

    async def _checkpointer(self) -> None:
        """Copies the WAL back into the main file on a second connection (PASSIVE: never
        blocks the writer). Runs after every `_CHECKPOINT_ROWS` committed rows and at close."""
        ckpt = await aiosqlite.connect(str(self.path), isolation_level=None)
        try:
            while True:
                await self._checkpoint_wake.wait()
                self._checkpoint_wake.clear()
                if self._closing:
                    # After the writer: every row committed and a sink's connection closed
                    # (`_idle` alone may still be set from a flush before the close).
                    await self._writer_done.wait()
                    with anyio.CancelScope(shield=True):
                        await ckpt.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    return
                self._rows_since_checkpoint = 0
                try:
                    await ckpt.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as e:  # a failed checkpoint loses nothing: the WAL holds it
                    log.warning("%s: checkpoint failed: %s", self.path, e)
        finally:
            with anyio.CancelScope(shield=True):
                await ckpt.close()

    def _fail(self, exc: BaseException, group: _Group, queued: _Group) -> None:
        err = LogWriteError(
            f"{self.path}: commit of seq {group.rows[0][0]}..{group.rows[-1][0]} failed: {exc}"
        )
        self._failed = err
        log.error("%s", err)
        for fut in group.futs + queued.futs + self._futs:
            if fut is not None and not fut.done():
                fut.set_exception(err)
                fut.add_done_callback(_mark_retrieved)
        self._rows, self._events, self._futs = [], [], []
        self._units.clear()
        for fn in self._failure_listeners:
            try:
                fn(err)
            except Exception:
                log.exception("event-log failure listener failed")

    # --- reading (through the reader API on a second connection) -----------------------

    def reader(self) -> LogReader:
        """A reader on its own connection; see `LogReader`."""
        return LogReader(self.path, self.codec)


def check_file_header(path: Path) -> None:
    """Refuse a file that is not SQLite, or that is shorter than its header says (truncated)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        raise CorruptLogError(f"{path}: not an event log (no SQLite header; {size} bytes)")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    change_counter = int.from_bytes(head[24:28], "big")
    valid_for = int.from_bytes(head[92:96], "big")
    if pages and change_counter == valid_for and size < pages * page_size:
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            # A live log: a checkpoint may be copying the WAL into the file right now, and
            # the header (page 1, copied first) runs ahead of the file's size until it ends.
            # SQLite reads those pages from the WAL meanwhile; a page really lost surfaces
            # as an error reading it.
            return
        raise CorruptLogError(
            f"{path}: log file is truncated ({size} bytes, header says {pages} pages of "
            f"{page_size} bytes); restore it from a backup or inspect it with "
            "`python -m engine.replay verify`"
        )


async def _check_format(db: aiosqlite.Connection, path: Path, *, writable: bool) -> None:
    async with db.execute("SELECT value FROM meta WHERE key = 'format_version'") as cur:
        row = await cur.fetchone()
    if row is None:
        if writable:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES ('format_version', ?)", (str(FORMAT_VERSION),)
            )
        return
    found = int(row[0])
    if found > FORMAT_VERSION:
        raise SchemaTooNewError(
            None,
            f"{path}: log format v{found} was written by a newer MiniQuantDesk "
            f"(this build reads up to v{FORMAT_VERSION})",
        )


class LogReader:
    """Reads a log on its own connection (never blocks the writer). Safe on a live log: it
    sees only committed rows. Use `async with LogReader(path) as r:` or `await r.open()`."""

    def __init__(self, path: str | os.PathLike[str], codec: Codec | None = None,
                 *, read_only: bool = True) -> None:
        self.path = Path(path)
        self.codec = codec or default_codec()
        self._read_only = read_only
        self._db: aiosqlite.Connection | None = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        if not self.path.exists():
            raise LogError(f"{self.path}: no such event log")
        check_file_header(self.path)
        uri = f"file:{self.path}?mode={'ro' if self._read_only else 'rw'}"
        try:
            self._db = await aiosqlite.connect(uri, uri=True, isolation_level=None)
            await _check_format(self._db, self.path, writable=False)
        except BaseException as e:
            with anyio.CancelScope(shield=True):  # a newer format too: never leak the thread
                await self.close()
            if isinstance(e, sqlite3.DatabaseError):
                raise CorruptLogError(f"{self.path}: cannot read log: {e}") from None
            raise

    async def close(self) -> None:
        if self._db is not None:
            with anyio.CancelScope(shield=True):  # cancelled, it would leave its thread running
                await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise LogClosedError(f"{self.path}: reader is not open")
        return self._db

    async def last_seq(self) -> int:
        async with self.db.execute("SELECT MAX(seq) FROM events") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    async def rows(
        self,
        from_seq: int = 1,
        to_seq: int | None = None,
        *,
        where: str = "",
        params: Iterable[Any] = (),
        batch_size: int = 5000,
        columns: str = _ROW_COLUMNS,
        match: Match | None = None,
        limit: int | None = None,
    ) -> AsyncGenerator[list[Any], None]:
        """Raw rows in seq order, in batches (all columns unless `columns` says otherwise;
        `seq` must come first), those `match` selects (at most `limit` of them). `where` is
        an extra SQL condition (trusted; kept for older callers — say it with `match`).

        The next batch is fetched on the connection's thread while the caller works on this
        one."""
        sql = f"SELECT {columns} FROM events WHERE seq >= ?"
        args: list[Any] = [from_seq]
        if to_seq is not None:
            sql += " AND seq <= ?"
            args.append(to_seq)
        if where:
            sql += f" AND ({where})"
            args.extend(params)
        if match is not None:
            cond, more = match.sql()
            if cond:
                sql += f" AND {cond}"
                args += more
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        last = from_seq - 1
        try:
            async with self.db.execute(sql, args) as cur:
                ahead = asyncio.ensure_future(cur.fetchmany(batch_size))
                try:
                    while True:
                        batch = cast(list[Any], await ahead)  # sqlite3 returns a list
                        if not batch:
                            return
                        ahead = asyncio.ensure_future(cur.fetchmany(batch_size))
                        last = batch[-1][0]
                        yield batch
                finally:
                    if not ahead.done():
                        ahead.cancel()
                    with anyio.CancelScope(shield=True):
                        await asyncio.wait((ahead,))
                    if not ahead.cancelled():
                        # A consumer that stopped early (verify at a bad row) never awaits
                        # the read-ahead: if it failed on a damaged page behind that row, its
                        # error is dropped here, not reported as "never retrieved".
                        ahead.exception()
        except sqlite3.DatabaseError as e:
            raise CorruptLogError(
                f"{self.path}: log is damaged after seq {last}: {e}", seq=last + 1
            ) from None

    async def read(
        self,
        from_seq: int = 1,
        to_seq: int | None = None,
        *,
        batch_size: int = 5000,
        where: str = "",
        params: Iterable[Any] = (),
        types: Iterable[str] = (),
        symbols: Iterable[str] | None = None,
        client_order_ids: Iterable[str] | None = None,
        match: Match | None = None,
        limit: int | None = None,
    ) -> AsyncGenerator[tuple[int, Event], None]:
        """Decoded events in seq order, those of the given `types` (log tags), `symbols` and
        `client_order_ids` (each: any of; None: no condition) and `match`, at most `limit`.
        A row that fails to decode raises `DecodeError` naming its seq; nothing is ever
        skipped silently."""
        decode = self.codec.decode
        sel = Match.of(types=types, symbols=symbols, client_order_ids=client_order_ids)
        if match is not None:
            sel = sel.also(match)
        # aclosing: when the caller stops early (a decode error, a break), the cursor and
        # its read-ahead are closed now, not by the loop after the connection is gone.
        async with contextlib.aclosing(self.rows(from_seq, to_seq, where=where, params=params,
                                                 batch_size=batch_size, match=sel,
                                                 limit=limit)) as batches:
            async for batch in batches:
                for row in batch:
                    yield row[0], decode(row[2], row[3], row[7], row[0])

    async def by_intent(self, intent_id: str) -> list[tuple[int, Event]]:
        return [x async for x in self.read(match=Match.of(intent_ids=(intent_id,)))]

    async def by_client_order_id(self, client_order_id: str) -> list[tuple[int, Event]]:
        return [x async for x in self.read(client_order_ids=(client_order_id,))]

    # --- point queries (indexes and the primary key; what projections, forensics and the
    # engine ask of the log besides a scan) -------------------------------------------------

    async def _one(self, sql: str, args: Sequence[Any]) -> Any:
        try:
            async with self.db.execute(sql, args) as cur:
                return await cur.fetchone()
        except sqlite3.DatabaseError as e:
            raise CorruptLogError(f"{self.path}: cannot read log: {e}") from None

    async def seq_at(self, ts: datetime) -> int:
        """The last seq recorded at or before `ts` (0: none)."""
        row = await self._one("SELECT MAX(seq) FROM events WHERE ts <= ?", (ts_to_us(ts),))
        return int(row[0]) if row and row[0] is not None else 0

    async def ts_at(self, seq: int) -> datetime | None:
        """The recorded time of the row at `seq` (None if there is none)."""
        row = await self._one("SELECT ts FROM events WHERE seq = ?", (seq,))
        return us_to_ts(int(row[0])) if row is not None else None

    async def hash_at(self, seq: int) -> bytes | None:
        """The chain hash of the row at `seq` (None if there is none)."""
        row = await self._one("SELECT hash FROM events WHERE seq = ?", (seq,))
        return bytes(row[0]) if row is not None else None

    async def has_intent(self, intent_id: str) -> bool:
        return await self._one("SELECT 1 FROM events WHERE intent_id = ? LIMIT 1",
                               (intent_id,)) is not None

    async def has_client_order_id(self, client_order_id: str) -> bool:
        return await self._one("SELECT 1 FROM events WHERE client_order_id = ? LIMIT 1",
                               (client_order_id,)) is not None

    async def client_order_ids(self, *, symbol: str | None = None,
                               intent_id: str | None = None) -> set[str]:
        """Client order ids on rows of `symbol` / `intent_id` (both given: of both)."""
        sel = Match.of(symbols=None if symbol is None else (symbol,),
                       intent_ids=None if intent_id is None else (intent_id,))
        cond, args = sel.sql()
        sql = "SELECT DISTINCT client_order_id FROM events WHERE client_order_id IS NOT NULL"
        if cond:
            sql += f" AND {cond}"
        try:
            async with self.db.execute(sql, args) as cur:
                return {r[0] for r in await cur.fetchall()}
        except sqlite3.DatabaseError as e:
            raise CorruptLogError(f"{self.path}: cannot read log: {e}") from None

    async def _bars(self, sql: str, args: Sequence[Any]) -> list[tuple[int, Event]]:
        decode = self.codec.decode
        try:
            async with self.db.execute(sql, args) as cur:
                rows = await cur.fetchall()
        except sqlite3.DatabaseError as e:
            raise CorruptLogError(f"{self.path}: cannot read log: {e}") from None
        return [(seq, decode(tag, v, payload, seq)) for seq, tag, v, payload in rows]

    async def bars_before(self, symbol: str, before_seq: int,
                          limit: int = 64) -> list[tuple[int, Event]]:
        """The last `limit` bars of `symbol` recorded before `before_seq`, newest first
        (a backward walk of the primary key)."""
        return await self._bars(
            f"SELECT {REPLAY_COLUMNS} FROM events WHERE seq < ? AND type = 'bar' AND "
            "symbol = ? ORDER BY seq DESC LIMIT ?", (before_seq, symbol, limit))

    async def newest_bars(self, symbols: Iterable[str],
                          per_symbol: int) -> list[tuple[int, Event]]:
        """The newest `per_symbol` bar events of each of `symbols`, in seq order. One
        backward walk of the primary key per symbol, each stopping at its `per_symbol`-th
        bar, so a long log costs what the bars asked for, not its length."""
        if per_symbol <= 0:
            return []
        out: list[tuple[int, Event]] = []
        for symbol in sorted(set(symbols)):
            out += await self.bars_before(symbol, 1 << 62, limit=per_symbol)
        out.sort(key=lambda x: x[0])
        return out

    async def bar_before(self, symbol: str, seq: int) -> tuple[int, Event] | None:
        """The last bar of `symbol` recorded before `seq` (a backward walk of the primary
        key from `seq`, so it costs the rows between, not the log's length)."""
        got = await self.bars_before(symbol, seq, limit=1)
        return got[0] if got else None

    async def bar_after(self, symbol: str, seq: int) -> tuple[int, Event] | None:
        """The first bar of `symbol` recorded after `seq` (a forward walk from `seq`)."""
        got = await self._bars(
            f"SELECT {REPLAY_COLUMNS} FROM events WHERE seq > ? AND type = 'bar' AND "
            "symbol = ? ORDER BY seq LIMIT 1", (seq, symbol))
        return got[0] if got else None

    async def verify(self, *, decode: bool = True) -> VerifyResult:
        """Walk the hash chain from the first row; report the first bad seq.

        Checks: seqs are gap-free from 1, each row's hash matches sha256(previous + row), and
        (with `decode`) every payload decodes.
        """
        walk = ChainWalk()
        try:
            async with contextlib.aclosing(self.rows(
                    batch_size=10_000,
                    columns=_ROW_COLUMNS if decode else CHAIN_COLUMNS)) as batches:
                async for batch in batches:
                    if not decode:
                        if not walk.feed(batch):
                            break
                        continue
                    start = walk.rows
                    walk.feed([(r[0], r[1], r[3], r[7], r[8]) for r in batch])
                    # A payload that does not decode before the first broken link is the
                    # first bad row.
                    for seq, ts_us, tag, v, iid, coid, sym, payload, _ in batch[
                            :walk.rows - start]:
                        try:
                            event = self.codec.decode(tag, v, payload, seq)
                        except DecodeError as e:
                            return VerifyResult(False, seq - 1, seq - 1, seq, str(e))
                        if correlation(event) != (iid, coid, sym) or ts_to_us(event.ts) != ts_us:
                            return VerifyResult(False, seq - 1, seq - 1, seq,
                                                f"seq {seq}: index columns disagree with payload")
                    if walk.bad_seq is not None:
                        break
        except CorruptLogError as e:
            walk.fail(walk.expected, str(e))
        return walk.result()


# What the chain covers of a row, in `ChainWalk.feed`'s order.
CHAIN_COLUMNS = "seq, ts, schema_version, payload, hash"


class ChainWalk:
    """The hash chain, walked batch by batch from the first row: the one implementation of
    the check behind `LogReader.verify`, usable on any connection's rows
    (`CHAIN_COLUMNS`), so a verifier can follow a log that is still being written."""

    __slots__ = ("bad_seq", "expected", "prev", "reason")

    def __init__(self) -> None:
        self.prev = GENESIS_HASH
        self.expected = 1
        self.bad_seq: int | None = None
        self.reason = ""

    @property
    def rows(self) -> int:
        """Rows found good so far (they are seqs 1..rows)."""
        return self.expected - 1

    def feed(self, batch: Iterable[tuple[int, int, int, bytes, bytes]]) -> bool:
        """Check the next rows; False (and `bad_seq`, `reason` set) at the first bad one."""
        if self.bad_seq is not None:
            return False
        # The hot loop of every verify: locals only, one hash per row.
        prev, expected = self.prev, self.expected
        sha256, head = hashlib.sha256, _HEAD.pack
        try:
            for seq, ts_us, v, payload, h in batch:
                if seq != expected:
                    self.fail(expected, f"seq {expected} is missing (next row is {seq})")
                    return False
                if sha256(prev + head(seq, ts_us, v) + payload).digest() != h:
                    self.fail(seq, f"seq {seq}: hash mismatch (row altered or corrupt)")
                    return False
                prev = h
                expected += 1
        finally:
            self.prev, self.expected = prev, expected
        return True

    def fail(self, seq: int, reason: str) -> None:
        if self.bad_seq is None:
            self.bad_seq, self.reason = seq, reason

    def result(self) -> VerifyResult:
        if self.bad_seq is None:
            return VerifyResult(True, self.rows, self.rows)
        return VerifyResult(False, self.rows, self.rows, self.bad_seq, self.reason)


def follow_chain(path: str | os.PathLike[str], wakes: Iterable[object],
                 batch_size: int = 20_000) -> tuple[VerifyResult, bytes]:
    """Walk the chain of a log that another process is still writing (blocking): at each
    item of `wakes` everything committed so far, then once more when `wakes` ends (the
    writer has closed the log: every row). Returns the result and the last good row's hash,
    which the writer compares with its own head.

    Each read is one short statement, so no read transaction outlives it (a long one would
    hold the WAL back from checkpoints, and would not see later commits)."""
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, isolation_level=None)
    walk = ChainWalk()
    sql = f"SELECT {CHAIN_COLUMNS} FROM events WHERE seq >= ? ORDER BY seq LIMIT ?"

    def catch_up() -> bool:
        while walk.bad_seq is None:
            rows = conn.execute(sql, (walk.expected, batch_size)).fetchall()
            walk.feed(rows)
            if len(rows) < batch_size:
                break
        return walk.bad_seq is None

    try:
        check_file_header(Path(path))
        for _ in wakes:
            if not catch_up():
                break
        else:
            catch_up()
    except (sqlite3.DatabaseError, CorruptLogError) as e:
        walk.fail(walk.expected, f"{path}: log is damaged after seq {walk.rows}: {e}")
    finally:
        conn.close()
    return walk.result(), walk.prev
