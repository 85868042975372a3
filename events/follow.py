"""The on-disk check of a log, done while it is written: a verifier in another process.

A backtest must end with its log verified on disk (every row read back, the hash chain
walked from the first row to the head the writer holds). Walking it after the run costs
as much as a fifth of the run's own time; a child process can walk it meanwhile, on
another core, reading only committed rows on its own read-only connection. The writer
wakes it now and then (`wake`, a newline on its stdin) and at the end closes its stdin: the
child walks what is left, prints its verdict and exits.

The verdict counts only if it covers the very rows written (same last seq, same head
hash) and the closed file still opens as that log (its header and page count checked, its
last row the same seq and hash). Anything else (the child could not start, died, said something else) is answered by
walking the log in this process, as before: the follower can make the check earlier, never
weaker.

Run as `python -m events.follow LOG` (what `ChainFollower` does).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
from anyio.abc import Process

from events.store import LogReader, VerifyResult, follow_chain

log = logging.getLogger(__name__)


class ChainFollower:
    """Use as `async with ChainFollower(path) as f:` once the log exists; `await f.wake()`
    when rows were committed; after the writer closed the log, `await f.verdict(last_seq,
    head)`. Leaving the block early kills the child."""

    # How long the verdict may take once the log is closed (the child walks what it has not
    # yet walked); past it the child is killed and the log walked here. A guard against a
    # stuck child, not a deadline for a slow one: the walk here takes as long.
    VERDICT_TIMEOUT_S = 120.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._proc: Process | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "events.follow", str(self.path)]

    async def __aenter__(self) -> Self:
        if getattr(sys, "frozen", False) or not sys.executable:
            # A frozen app's executable is the app itself, not an interpreter that can run
            # `-m events.follow`: the check happens at the end instead.
            return self
        try:
            self._proc = await anyio.open_process(
                self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL)
        except Exception as e:  # noqa: BLE001 - any start failure (no process to spare, a
            # loop that cannot run subprocesses: NotImplementedError) only moves the check to
            # the end; it must never fail the run
            log.debug("log follower not started: %s", e)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with anyio.CancelScope(shield=True):
                if proc.returncode is None:
                    proc.kill()
                await proc.aclose()

    async def wake(self) -> None:
        """Tell the child that more rows are committed (it reads them when it gets to it)."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        try:
            await proc.stdin.send(b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            self._proc = None  # it is gone; the verdict falls back to walking here
            await _reap(proc)

    async def verdict(self, last_seq: int, head: bytes) -> VerifyResult:
        """The check of the closed log: the child's, if it covers exactly these rows, else
        a walk in this process."""
        proc, self._proc = self._proc, None
        got: tuple[VerifyResult, bytes] | None = None
        if proc is not None and proc.stdin is not None and proc.stdout is not None:
            try:
                out = b""
                code: int | None = None
                with anyio.move_on_after(self.VERDICT_TIMEOUT_S):
                    await proc.stdin.aclose()  # end of wakes: walk the rest
                    async for chunk in proc.stdout:
                        out += chunk
                    code = await proc.wait()
                if code is None:
                    log.warning("%s: no verdict from the log follower within %.0f s; walking "
                                "the log here", self.path, self.VERDICT_TIMEOUT_S)
                got = _parse(out) if code == 0 else None
                if got is None and code is not None:
                    log.info("%s: log follower ended without a verdict (exit %s); walking the "
                             "log here", self.path, code)
                if got is not None and not (got[0].ok and got[0].last_seq == last_seq
                                            and got[1] == head):
                    log.warning("%s: log follower disagrees (%s); walking the log here",
                                self.path, got[0].reason or f"head at seq {got[0].last_seq}")
                    got = None
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as e:
                log.debug("log follower lost: %s", e)
                got = None
            finally:
                await _reap(proc)
        if got is not None and await _closed_file_agrees(self.path, last_seq, head):
            return got[0]
        async with LogReader(self.path) as reader:
            return await reader.verify(decode=False)


async def _closed_file_agrees(path: Path, last_seq: int, head: bytes) -> bool:
    """The child read most rows from the WAL while the run went on; after the close
    (checkpointed into the main file) the file must still open as a whole log (header, page
    count) ending at the same row with the same hash, or the full walk here decides."""
    try:
        async with LogReader(path) as reader:
            return await reader.hash_at(last_seq) == head and await reader.last_seq() == last_seq
    except Exception as e:  # noqa: BLE001 - whatever refuses the file, the full walk reports it
        log.warning("%s: the closed log does not open as the follower saw it (%s); walking "
                    "it here", path, e)
        return False


async def _reap(proc: Process) -> None:
    with anyio.CancelScope(shield=True):
        if proc.returncode is None:
            proc.kill()
        await proc.aclose()


def _parse(out: bytes) -> tuple[VerifyResult, bytes] | None:
    try:
        d = json.loads(out)
        return (VerifyResult(bool(d["ok"]), int(d["rows"]), int(d["last_seq"]),
                             d["bad_seq"], str(d["reason"])), bytes.fromhex(d["head"]))
    except (ValueError, KeyError, TypeError):
        return None


def main(argv: list[str]) -> int:
    """The child: walk the log at each line on stdin and once more at its end."""
    result, head = follow_chain(argv[0], sys.stdin.buffer)
    print(json.dumps({"ok": result.ok, "rows": result.rows_checked,
                      "last_seq": result.last_seq, "bad_seq": result.first_bad_seq,
                      "reason": result.reason, "head": head.hex()}))
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # The verdict is printed and the log's reader closed: skip the interpreter's teardown
    # (~20 ms, which the backtest's verdict waits for).
    sys.stdout.flush()
    os._exit(code)
