"""Bar files in any row order, delivered in (time, symbol) order, in bounded memory.

Exports write rows grouped by symbol, split over several files, or interleaved; the engine's
clock only moves forward, so a bar older than the clock would be refused (and the run would
trade on the symbols that happened to come first). `OrderedFileProvider` reads every file,
sorts the bars by (start, symbol) and hands them on in that order — an external sort: rows
are collected in runs of at most `run_rows`, each run is sorted and, when there is more than
one, spilled to a temporary file (all but the last, which stays in memory); the runs are then
merged (`heapq.merge`), so memory holds one run plus a small frame of each spilled run,
whatever the file size. Runs that do not overlap (input already in order, files each
covering a later span) are concatenated instead: the same stream without the merge.

Ties keep input order (files in the order given, rows in file order), so of two rows with
the same (symbol, start) the first is the bar and the second is refused by the validator as
`DUPLICATE_TIMESTAMP`, as before. Rows that never became a bar (`BadInput`) come first, in
input order, before any bar.

`stats` says what the input held (bars, symbols, refused rows by reason, runs spilled) and
`digest` is a hash of the input that does not depend on row order, so the same rows in any
order make the same backtest run id — and byte-identical logs. Both are complete once the
first item has been yielded: the sort reads everything before it yields anything.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import struct
import tempfile
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgspec

from events.market import Bar

from .types import BadInput, BarProvider, MarketItem, batches_from_thread

RUN_ROWS = 200_000  # ~ 150 MB of bars in memory at most, whatever the file size
OUT_BATCH = 4096  # bars handed on per hop (a hop costs a thread round trip; ~3 MB a batch)
SPILL_CHUNK = 1024  # records per frame of a spilled run (decoded in one call)
_LEN = struct.Struct("<I")
_MOD = 1 << 256
_BEFORE_ALL = (datetime.min.replace(tzinfo=UTC), "")

BatchSource = Callable[[], Iterator[list[MarketItem]]]
# (start, symbol, input position, bar): a sort key that compares in C and never reaches the
# bar, since the input position is unique (it also keeps ties in input order).
Rec = tuple[datetime, str, int, Bar]
# A record being read: also the bar's msgpack bytes (made for the digest, reused to spill).
_InRec = tuple[datetime, str, int, Bar, bytes]


@dataclass
class OrderStats:
    bars: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    symbols: set[str] = field(default_factory=set)
    intervals: Counter[int] = field(default_factory=Counter)
    runs: int = 0  # sorted runs spilled to disk (0: the input fitted in one run)
    max_run: int = 0  # the most bars held in memory at once
    was_sorted: bool = True  # the input was already in (time, symbol) order
    first_refusal: str | None = None  # the first refused row's detail, for messages
    digest_acc: int = 0
    complete: bool = False

    @property
    def digest(self) -> str:
        return f"{self.digest_acc:064x}"[:32]


class _Spill:
    """A sorted run on disk: length-prefixed msgpack frames, each `[positions, bars]`.

    A frame is written from the bars' own msgpack bytes (already made for the digest), so
    spilling costs a join, not a second encoding."""

    def __init__(self, directory: str, index: int) -> None:
        self.path = Path(directory) / f"run-{index:05d}.bin"
        self.first: tuple[datetime, str, int] | None = None  # its smallest key
        self.last: tuple[datetime, str, int] | None = None  # and its largest

    def write(self, records: list[_InRec], chunk: int) -> None:
        self.first, self.last = records[0][:3], records[-1][:3]
        enc = msgspec.msgpack.Encoder()
        with open(self.path, "wb") as f:
            for i in range(0, len(records), chunk):
                part = records[i:i + chunk]
                _write_frame(f, b"".join((
                    b"\x92", enc.encode([r[2] for r in part]),
                    _ARRAY32.pack(0xDD, len(part)), *[r[4] for r in part])))

    def frames(self) -> Iterator[tuple[list[int], list[Bar]]]:
        return _read_frames(self.path, msgspec.msgpack.Decoder(tuple[list[int], list[Bar]]))

    def records(self) -> Iterator[Rec]:
        for seqs, bars in self.frames():
            yield from [(b.start, b.symbol, n, b) for n, b in zip(seqs, bars)]


_ARRAY32 = struct.Struct(">BI")  # a msgpack array header (array 32) and its length


def _write_frame(f: IO[bytes], data: bytes) -> None:
    f.write(_LEN.pack(len(data)))
    f.write(data)


def _read_frames(path: Path, dec: msgspec.msgpack.Decoder[Any]) -> Iterator[Any]:
    """The frames a spill file holds, in the order they were written (lazily: the merge
    keeps one frame of each run in memory at once)."""
    with open(path, "rb", buffering=1 << 16) as f:
        while head := f.read(4):
            (n,) = _LEN.unpack(head)
            yield dec.decode(f.read(n))


def ordered_batches(sources: Sequence[BatchSource], stats: OrderStats, *,
                    run_rows: int = RUN_ROWS,
                    tmp_dir: str | None = None) -> Generator[list[MarketItem], None, None]:
    """The blocking sort (run it in a worker thread, a batch per hop).

    This is on every backtest's critical path (nothing can start before the digest), so the
    per-row work is kept to what the result needs: the digest term, one key tuple that
    compares in C, and counts. Input that is already in order (the usual export) is not
    sorted again, and runs that do not overlap are concatenated instead of merged; both give
    exactly what the sort and the merge would, since a sorted list sorts to itself."""
    if run_rows < 1:
        raise ValueError("run_rows must be >= 1")
    # Small runs (tests of the memory bound) read back in proportionally small frames, so
    # the merge never holds more than a fraction of a run per run.
    chunk = max(1, min(SPILL_CHUNK, run_rows // 16))
    out_batch = max(1, min(OUT_BATCH, run_rows // 4))  # likewise what is handed on at once
    enc = msgspec.msgpack.Encoder()
    encode, sha256, from_bytes = enc.encode, hashlib.sha256, int.from_bytes
    with tempfile.TemporaryDirectory(prefix="mqd-sort-", dir=tmp_dir) as tmp:
        bad = _Spill(tmp, 0)
        bad_file = open(bad.path, "wb")  # noqa: SIM115 - closed below, also on error
        n_bad = 0
        spills: list[_Spill] = []
        run: list[_InRec] = []
        run_sorted = True  # the current run is in key order as read
        seq = 0
        last = _BEFORE_ALL
        acc = 0
        n_bars = 0
        symbols, intervals = stats.symbols, stats.intervals
        last_sym, last_iv, same_iv = "", 0, 0
        try:
            for source in sources:
                for batch in source():
                    for item in batch:
                        seq += 1
                        if type(item) is not Bar:
                            assert isinstance(item, BadInput)
                            stats.refused[item.reason] += 1
                            if stats.first_refusal is None:
                                stats.first_refusal = item.detail
                            acc += from_bytes(sha256(encode((item.reason, item.raw))).digest())
                            _write_frame(bad_file, encode(item))
                            n_bad += 1
                            continue
                        bar: Bar = item
                        sym = bar.symbol
                        k = (bar.start, sym)
                        if k < last:
                            stats.was_sorted = False
                            if run:
                                run_sorted = False
                        last = k
                        # The digest is a sum of per-bar hashes: the same for any row order.
                        data = encode(bar)
                        acc += from_bytes(sha256(data).digest())
                        n_bars += 1
                        if sym != last_sym:
                            symbols.add(sym)
                            last_sym = sym
                        if bar.interval_s != last_iv:  # counted in stretches, not per bar
                            if same_iv:
                                intervals[last_iv] += same_iv
                            last_iv, same_iv = bar.interval_s, 0
                        same_iv += 1
                        run.append((k[0], sym, seq, bar, data))
                        if len(run) >= run_rows:
                            stats.max_run = max(stats.max_run, len(run))
                            if not run_sorted:
                                run.sort()
                            spill = _Spill(tmp, len(spills) + 1)
                            spill.write(run, chunk)
                            spills.append(spill)
                            run, run_sorted = [], True
        finally:
            bad_file.close()
        if same_iv:
            intervals[last_iv] += same_iv
        stats.bars = n_bars
        stats.max_run = max(stats.max_run, len(run))
        stats.runs = len(spills) + (1 if spills and run else 0)
        stats.digest_acc = acc % _MOD
        stats.complete = True
        if n_bad:
            yield from _chunks(_read_frames(bad.path, msgspec.msgpack.Decoder(BadInput)),
                               out_batch)
        if not run_sorted:
            run.sort()
        if not spills:
            for i in range(0, len(run), out_batch):
                yield [rec[3] for rec in run[i:i + out_batch]]
            return
        # The last run stays in memory (it is no bigger than one run, the bound held while
        # reading) and joins the others as it is.
        runs = [*[(s.first, s.last) for s in spills], (run[0][:3], run[-1][:3])] if run else [
            (s.first, s.last) for s in spills]
        if all(a[1] < b[0] for a, b in itertools.pairwise(runs)):  # type: ignore[operator]
            # The runs follow each other (input in order, or files each covering a later
            # span): their concatenation is the merge.
            out: list[MarketItem] = []
            for spill in spills:
                for _, bars in spill.frames():
                    out += bars
                    if len(out) >= out_batch:  # hand on whole batches, not frames
                        yield out
                        out = []
            if out:
                yield out
            for i in range(0, len(run), out_batch):
                yield [rec[3] for rec in run[i:i + out_batch]]
            return
        merged: Iterator[Rec | _InRec] = heapq.merge(*(s.records() for s in spills), iter(run))
        out = []
        for rec in merged:
            out.append(rec[3])
            if len(out) >= out_batch:
                yield out
                out = []
        if out:
            yield out


def _chunks(items: Iterator[MarketItem], size: int) -> Iterator[list[MarketItem]]:
    out: list[MarketItem] = []
    for item in items:
        out.append(item)
        if len(out) >= size:
            yield out
            out = []
    if out:
        yield out


class OrderedFileProvider(BarProvider):
    """Several bar-file providers (anything with a blocking `batches()`), as one stream in
    (start, symbol) order. See the module docstring."""

    def __init__(self, providers: Sequence[Any], *, run_rows: int = RUN_ROWS,
                 tmp_dir: str | None = None, name: str = "files") -> None:
        if not providers:
            raise ValueError("no bar files given")
        self.providers = list(providers)
        self.name = name
        self.stats = OrderStats()
        self._run_rows = run_rows
        self._tmp_dir = tmp_dir

    async def stream(self) -> AsyncGenerator[MarketItem, None]:
        async with aclosing(self.stream_batches()) as batches:
            async for batch in batches:
                for item in batch:
                    yield item

    def stream_batches(self) -> AsyncGenerator[list[MarketItem], None]:
        """The stream a batch at a time (what a replay loop iterates: one async step per
        batch, not per bar). One stream per provider (as for every provider): `stats`
        describes that one."""
        gen = ordered_batches([p.batches for p in self.providers], self.stats,
                              run_rows=self._run_rows, tmp_dir=self._tmp_dir)
        return batches_from_thread(gen)
