"""Bar files in any row order, delivered in (time, symbol) order, in bounded memory.

Exports write rows grouped by symbol, split over several files, or interleaved; the engine's
clock only moves forward, so a bar older than the clock would be refused (and the run would
trade on the symbols that happened to come first). `OrderedFileProvider` reads every file,
sorts the bars by (start, symbol) and hands them on in that order — an external sort: rows
are collected in runs of at most `run_rows`, each run is sorted and, when there is more than
one, spilled to a temporary file; the runs are then merged (`heapq.merge`), so memory holds
one run plus one bar per run, whatever the file size.

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
import struct
import tempfile
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from events.market import Bar

from .types import BadInput, BarProvider, MarketItem, items_from_thread

RUN_ROWS = 200_000  # ~ 150 MB of bars in memory at most, whatever the file size
OUT_BATCH = 512  # bars handed on per hop: part of the memory bound
_LEN = struct.Struct("<I")
_MOD = 1 << 256

BatchSource = Callable[[], Iterator[list[MarketItem]]]


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
    """A sorted run on disk: length-prefixed msgpack records [start_us, symbol, n, bar]."""

    def __init__(self, directory: str, index: int) -> None:
        self.path = Path(directory) / f"run-{index:05d}.bin"

    def write(self, records: list[tuple[int, str, int, Bar]]) -> None:
        enc = msgspec.msgpack.Encoder()
        with open(self.path, "wb") as f:
            for rec in records:
                _write_frame(f, enc.encode(rec))

    def read(self) -> Iterator[tuple[int, str, int, Bar]]:
        return _read_frames(self.path, msgspec.msgpack.Decoder(tuple[int, str, int, Bar]))


def _write_frame(f: IO[bytes], data: bytes) -> None:
    f.write(_LEN.pack(len(data)))
    f.write(data)


def _read_frames(path: Path, dec: msgspec.msgpack.Decoder[Any]) -> Iterator[Any]:
    """The records a spill file holds, in the order they were written (lazily: the merge
    keeps one file of each run open at once)."""
    with open(path, "rb", buffering=1 << 16) as f:
        while head := f.read(4):
            (n,) = _LEN.unpack(head)
            yield dec.decode(f.read(n))


def _key(bar: Bar) -> int:
    """The bar's start in microseconds (an int compares faster than a datetime)."""
    s = bar.start
    off = s.utcoffset()
    if off:
        s = s - off  # wall fields in UTC
    return ((s.toordinal() * 86400 + s.hour * 3600 + s.minute * 60 + s.second) * 1_000_000
            + s.microsecond)


def ordered_batches(sources: Sequence[BatchSource], stats: OrderStats, *,
                    run_rows: int = RUN_ROWS,
                    tmp_dir: str | None = None) -> Generator[list[MarketItem], None, None]:
    """The blocking sort (run it in a worker thread, a batch per hop)."""
    if run_rows < 1:
        raise ValueError("run_rows must be >= 1")
    enc = msgspec.msgpack.Encoder()
    with tempfile.TemporaryDirectory(prefix="mqd-sort-", dir=tmp_dir) as tmp:
        bad = _Spill(tmp, 0)
        bad_file = open(bad.path, "wb")  # noqa: SIM115 - closed below, also on error
        n_bad = 0
        spills: list[_Spill] = []
        run: list[tuple[int, str, int, Bar]] = []
        seq = 0
        last: tuple[int, str] | None = None
        acc = 0
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
                            data = enc.encode(item)
                            acc += int.from_bytes(hashlib.sha256(
                                enc.encode((item.reason, item.raw))).digest())
                            _write_frame(bad_file, data)
                            n_bad += 1
                            continue
                        bar: Bar = item
                        k = (_key(bar), bar.symbol)
                        if last is not None and k < last:
                            stats.was_sorted = False
                        last = k
                        acc += int.from_bytes(hashlib.sha256(enc.encode(bar)).digest())
                        stats.bars += 1
                        stats.symbols.add(bar.symbol)
                        stats.intervals[bar.interval_s] += 1
                        run.append((k[0], k[1], seq, bar))
                        if len(run) >= run_rows:
                            stats.max_run = max(stats.max_run, len(run))
                            run.sort(key=_rec_key)
                            spill = _Spill(tmp, len(spills) + 1)
                            spill.write(run)
                            spills.append(spill)
                            run = []
        finally:
            bad_file.close()
        stats.max_run = max(stats.max_run, len(run))
        stats.runs = len(spills) + (1 if spills and run else 0)
        stats.digest_acc = acc % _MOD
        stats.complete = True
        if n_bad:
            yield from _chunks(_read_bad(bad))
        run.sort(key=_rec_key)
        if not spills:
            merged: Iterator[tuple[int, str, int, Bar]] = iter(run)
        else:
            if run:
                spill = _Spill(tmp, len(spills) + 1)
                spill.write(run)
                spills.append(spill)
                run = []
            merged = heapq.merge(*(s.read() for s in spills), key=_rec_key)
        out: list[MarketItem] = []
        for rec in merged:
            out.append(rec[3])
            if len(out) >= OUT_BATCH:
                yield out
                out = []
        if out:
            yield out


def _rec_key(rec: tuple[int, str, int, Bar]) -> tuple[int, str, int]:
    return rec[0], rec[1], rec[2]


def _read_bad(spill: _Spill) -> Iterator[MarketItem]:
    return _read_frames(spill.path, msgspec.msgpack.Decoder(BadInput))


def _chunks(items: Iterator[MarketItem]) -> Iterator[list[MarketItem]]:
    out: list[MarketItem] = []
    for item in items:
        out.append(item)
        if len(out) >= OUT_BATCH:
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
        # One stream per provider (as for every provider): `stats` describes that one.
        gen = ordered_batches([p.batches for p in self.providers], self.stats,
                              run_rows=self._run_rows, tmp_dir=self._tmp_dir)
        async with aclosing(items_from_thread(gen)) as items:
            async for item in items:
                yield item
