"""A simulation's log commits in a child process: the store's writer, on another core.

Acknowledged on append (`EventLog.acknowledge_on_append`: a simulation, where nothing an event
causes leaves the process), nobody waits for a commit, so the commits need not share the
event loop's process at all. In a thread they do share its GIL: the sqlite3 module binds a
group's ~9,000 values with the GIL held, and every time the loop's `select` lets go of it
the thread takes it for that long, which cost a 100k-bar backtest ~0.3 s of its ~2.4 s. Here
the loop sends each group down a pipe as one msgpack frame (one C call) and the child binds
and commits it (`events.store.write_rows`, the very statement the thread runs), in order.
It also chains the hashes of the rows appended after it started (they come without one), so
sha256 per row leaves the loop too, and answers each commit with its last seq and head;
`EventLog` treats that answer as the thread's. Nothing about the log changes: the same rows (seq and payload fixed by the loop, the
hashes by the same recipe), in the same groups, one writer at a time (the loop's connection
writes nothing while the child is on; the child holds the log's writer lock as well). Each
frame carries the CRC-32 of its bytes, and the child refuses a group its decoded rows do not
re-encode to, so what it stores is what the loop folded. The child only starts serving once
it has opened the log (`READY`); if it cannot, the thread carries on as before. If it dies,
every group not yet answered fails the log like a failed commit. If the loop's process dies,
the child commits every whole frame it still reads and exits at the pipe's end.

Run as `python -m events.sink LOG SYNCHRONOUS` (what `ProcessSink.start` does).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from events.errors import LogWriteError
from events.store import (
    _NULL,
    Row,
    Synchronous,
    WriteGuard,
    head_of,
    open_writer_connection,
    row_hash,
    write_rows,
)

log = logging.getLogger(__name__)

READY = b"R"
_FRAME = struct.Struct("<II")  # a group's length and CRC-32, then its rows (msgpack)
_ACK = struct.Struct("<cq32s")  # b"C", the last seq committed and its hash
_FAILED = b"E"  # then the error's text, to the end of the stream
_STDERR_KEPT = 4096


class ProcessSink:
    """The parent's end: `await ProcessSink.start(path, synchronous)` (None if the child did
    not come up), then `commit(rows)` per group, in seq order; `await close()` at the end."""

    START_TIMEOUT_S = 30.0  # a child that is not serving by then is killed: the thread writes

    def __init__(self, path: Path) -> None:
        self.path = path
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._encode = msgspec.msgpack.Encoder().encode
        self._pending: collections.deque[tuple[int, asyncio.Future[bytes]]] = (
            collections.deque())
        self._buf = bytearray()
        self._ready: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] | None = None
        self._error: str | None = None  # what the child said when a commit failed
        self._stderr = bytearray()
        self.pid: int | None = None  # the child's, once started

    @classmethod
    def command(cls, path: Path, synchronous: str) -> list[str]:
        return [sys.executable, "-m", "events.sink", str(path), synchronous]

    @classmethod
    async def start(cls, path: Path, synchronous: Synchronous,
                    lock_fd: int | None = None) -> ProcessSink | None:
        """The sink for the open log at `path`, serving; None if it did not come up (the
        log's thread then goes on writing). `lock_fd`, the log's writer lock, is inherited
        by the child, so the log counts as written to until the child has exited too."""
        if getattr(sys, "frozen", False) or not sys.executable:
            return None  # no interpreter to run `-m events.sink` with
        self = cls(path)
        loop = asyncio.get_running_loop()
        self._ready, self._done = loop.create_future(), loop.create_future()
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: _Protocol(self), *cls.command(path, synchronous),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=() if lock_fd is None else (lock_fd,))
        except Exception as e:  # noqa: BLE001 - no process to spare, a loop without
            # subprocesses: the thread writes, as it always could
            log.warning("%s: log writer process not started (%s); the thread writes", path, e)
            return None
        self._transport = transport
        self.pid = transport.get_pid()
        self._stdin = transport.get_pipe_transport(0)  # type: ignore[assignment]
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), cls.START_TIMEOUT_S)
        except (TimeoutError, LogWriteError) as e:
            log.warning("%s: log writer process not serving (%s); the thread writes", path, e)
            _kill(transport)  # it was sent nothing: a child stuck before READY must not stay
            await self.close()
            return None
        except BaseException:  # cancelled while it came up: it must not outlive the log
            _kill(transport)
            transport.close()
            raise
        return self

    def commit(self, rows: list[Row]) -> asyncio.Future[bytes]:
        """Send one group; the future is done once the child committed it (or failed), with
        the hash of its last row (the child chains the rows that come without one)."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self._done is None or self._done.done() or self._stdin is None:
            fut.set_exception(self._gone())
            return fut
        body = self._encode(rows)
        self._stdin.write(_FRAME.pack(len(body), zlib.crc32(body)))
        self._stdin.write(body)
        self._pending.append((rows[-1][0], fut))
        return fut

    async def close(self) -> None:
        """No more groups: the child answers what it has, closes the log and exits. Waits for
        that (shielded: a cancelled close must not leave the child writing the file)."""
        transport = self._transport
        if transport is None:
            return
        if self._stdin is not None and not self._stdin.is_closing():
            self._stdin.close()
        assert self._done is not None
        try:
            await asyncio.shield(self._done)
        finally:
            if not self._done.done():  # cancelled while waiting: do not leave it behind
                _kill(transport)
            transport.close()
            self._transport = None

    # --- the protocol's calls ------------------------------------------------------------

    def _on_stdout(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        at = 0
        ready = self._ready
        if ready is not None and not ready.done() and buf[:1] == READY:
            ready.set_result(None)
            at = 1
        while self._error is None and len(buf) - at >= _ACK.size and buf[at:at + 1] == b"C":
            _, seq, head = _ACK.unpack_from(buf, at)
            at += _ACK.size
            pending = self._pending
            while pending and pending[0][0] <= seq:
                _, fut = pending.popleft()
                if not fut.done():
                    fut.set_result(head)
        if self._error is None and buf[at:at + 1] == _FAILED:
            self._error = ""
            at += 1
        if self._error is not None:
            self._error += bytes(buf[at:]).decode(errors="replace")
            at = len(buf)
        del buf[:at]

    def _on_stderr(self, data: bytes) -> None:
        self._stderr += data
        del self._stderr[:-_STDERR_KEPT]

    def _on_lost(self) -> None:
        """The child exited and its pipes are closed: whatever it did not answer failed."""
        err = self._gone()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(err)
            self._ready.exception()  # retrieved here; start() reads it through its shield
        while self._pending:
            _, fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(err)
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _gone(self) -> LogWriteError:
        code = self._transport.get_returncode() if self._transport is not None else None
        if self._error:  # what the child said of the group it refused
            said = self._error.strip()
        else:  # else the end of its stderr (a traceback's last line says what killed it)
            lines = bytes(self._stderr).decode(errors="replace").strip().splitlines()
            said = lines[-1] if lines else ""
        return LogWriteError(f"{self.path}: the log writer process ended (exit {code})"
                             + (f": {said}" if said else ""))


def _kill(transport: asyncio.SubprocessTransport) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has exited already
        transport.kill()


class _Protocol(asyncio.SubprocessProtocol):
    def __init__(self, sink: ProcessSink) -> None:
        self._sink = sink

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self._sink._on_stdout(data)
        else:
            self._sink._on_stderr(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._sink._on_lost()


def _read_exact(f: BinaryIO, n: int) -> bytes | None:
    data = f.read(n)
    return data if len(data) == n else None


def serve(path: str, synchronous: str, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """The child: commit each group read from `stdin` and answer it on `stdout`, until the
    pipe ends (a truncated last frame, from a parent that died mid-write, is dropped: its
    rows were never answered). With nobody left to answer (the parent died), it goes on
    committing whole frames until the pipe ends."""
    conn = open_writer_connection(path, synchronous)
    decoder = msgspec.msgpack.Decoder(list[list[Any]])
    encode = msgspec.msgpack.Encoder().encode
    answering = True

    def say(data: bytes) -> None:
        nonlocal answering
        if answering:
            try:
                stdout.write(data)
                stdout.flush()
            except OSError:  # the parent is gone: the rows still count, the answers not
                answering = False

    try:
        # The log's rows so far are all committed (the log's thread finished before this
        # started): the newest one is what the first row without a hash chains onto.
        prev = head_of(conn)
        say(READY)
        guard = WriteGuard()
        while (head := _read_exact(stdin, _FRAME.size)) is not None:
            size, crc = _FRAME.unpack(head)
            body = _read_exact(stdin, size)
            if body is None:
                break
            rows = decoder.decode(body)
            if zlib.crc32(body) != crc or encode(rows) != body:
                say(_FAILED + f"a group of {len(rows)} rows from seq {rows[0][0] if rows else '?'}"
                              " did not arrive as it was sent".encode())
                return 1
            for row in rows:
                if row[8] is None:
                    row[8] = row_hash(prev, row[0], row[1], row[3], row[7])
                prev = row[8]
                # Blobs bind as bytearrays: the sqlite3 module looks every bytes value up in
                # its adapter table first (the payload, and each missing id, an empty blob).
                row[7] = bytearray(row[7])
                if row[4] == b"":
                    row[4] = _NULL
                if row[5] == b"":
                    row[5] = _NULL
                if row[6] == b"":
                    row[6] = _NULL
            try:
                write_rows(conn, rows, guard)
            except Exception as e:  # noqa: BLE001 - said to the parent, which fails the log
                say(_FAILED + f"commit of seq {rows[0][0]}..{rows[-1][0]}: {e}".encode())
                return 1
            say(_ACK.pack(b"C", rows[-1][0], prev))
        return 0
    finally:
        conn.close()


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group: the parent's orderly close ends this one (the
    # end of its pipe), not the signal, so no group it was sent is dropped.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = serve(sys.argv[1], sys.argv[2], sys.stdin.buffer, sys.stdout.buffer)
    # The log's connection is closed and the answers flushed: nothing is left that the
    # interpreter's teardown (~20 ms, which the log's close waits for) would finish.
    with contextlib.suppress(OSError):
        sys.stdout.flush()
    os._exit(code)
