"""Bars from and to CSV files (columns documented in `engine.marketdata.parse`).

Reading happens in a worker thread, a batch of rows per hop, so a large file never blocks
the event loop. Every cell is parsed from its text: prices and volume with `Decimal(text)`,
never through float. A row that cannot become a bar is yielded as `BadInput` with its line
number and the line itself; a missing required column is a `DataFileError` at once.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import os
from collections.abc import AsyncGenerator, Generator, Iterable, Iterator
from contextlib import aclosing
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from pathlib import Path

import anyio

from events.market import Bar

from .parse import (
    DAILY_GAP_S,
    REQUIRED_COLUMNS,
    InputError,
    RowParser,
    check_epoch_unit,
    infer_interval,
    normalize_columns,
    resolve_tz,
    symbol_from_filename,
)
from .types import BadInput, BarProvider, DataFileError, MarketItem, items_from_thread

BATCH_ROWS = 8192
_fromiso = datetime.fromisoformat


def _render_line(cells: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(cells)
    return buf.getvalue()


class _Decimals(dict[str, Decimal]):
    """`Decimal(text)` by cell text, remembered: prices repeat (a cent grid), and a lookup
    costs a quarter of a construction. A Decimal made from text is exact and immutable, so
    sharing one is the same as making it again. Bounded: forgets everything at `LIMIT`."""

    LIMIT = 8192

    def __missing__(self, text: str) -> Decimal:
        value = Decimal(text)  # raises for a bad cell, which is then not remembered
        if len(self) >= self.LIMIT:
            self.clear()
        self[text] = value
        return value


class _CsvRows:
    """Parses CSV rows by column index. Good rows take the fast path (every cell is text, so
    `Decimal(cell)` directly); anything that raises there is parsed again by the general
    `RowParser`, which says exactly what is wrong. Both paths build the same `Bar`."""

    def __init__(self, names: list[str], parser: RowParser) -> None:
        self.names = names
        self.parser = parser
        ix = {n: i for i, n in enumerate(names)}
        # A file without a symbol column is one symbol's (`symbol`): the cell is appended.
        self.i_sym, self.i_ts = ix.get("symbol", len(names)), ix["timestamp"]
        self.i_o, self.i_h, self.i_l, self.i_c = ix["open"], ix["high"], ix["low"], ix["close"]
        self.i_v = ix["volume"]
        self.i_vw = ix.get("vwap")
        self.i_n = ix.get("trade_count")
        self.i_int = ix.get("interval_s")
        self.decimals = _Decimals()

    def parse(self, cells: list[str]) -> MarketItem:
        p = self.parser
        try:
            ts = cells[self.i_ts]
            # The usual cell (ISO time in UTC, `...Z`) skips the parser's cache and rules:
            # for a time that `fromisoformat` reads as UTC they return that same datetime
            # (it is neither a date, nor an epoch number, nor naive). Sessions always ask.
            start: datetime | None = None
            if not p.sessions:
                try:
                    start = _fromiso(ts)
                except ValueError:
                    pass  # not ISO (an epoch number...): the parser's rules
            session_s = None
            if start is None or start.tzinfo is not UTC:
                start, session_s = p.when(ts)
            vw = cells[self.i_vw] if self.i_vw is not None else ""
            n = cells[self.i_n] if self.i_n is not None else ""
            iv = cells[self.i_int] if self.i_int is not None else ""
            dec = self.decimals
            return Bar(symbol=cells[self.i_sym].strip(), start=start,
                       interval_s=session_s or (int(iv) if iv else p.interval_s),
                       open=dec[cells[self.i_o]], high=dec[cells[self.i_h]],
                       low=dec[cells[self.i_l]], close=dec[cells[self.i_c]],
                       volume=dec[cells[self.i_v]], vwap=dec[vw] if vw else None,
                       trade_count=int(n) if n else None, provider=p.provider)
        except (ArithmeticError, ValueError):  # InvalidOperation, BarError, InputError...
            names = self.names if len(cells) == len(self.names) else [*self.names, "symbol"]
            return p.parse(dict(zip(names, cells)),
                           functools.partial(_render_line, cells[:len(self.names)]))


INFER_ROWS = 2000


def _infer(rows: _CsvRows, sample: list[list[str]]) -> None:
    """Set the parser's interval from the first rows (see `parse.infer_interval`)."""
    keys = []
    for cells in sample:
        try:
            keys.append((cells[rows.i_sym].strip(), rows.parser.timestamp(cells[rows.i_ts])))
        except (IndexError, InputError):
            continue
    gap = infer_interval(keys)
    if gap is not None and gap >= DAILY_GAP_S:
        rows.parser.sessions = True
    elif gap is not None:
        rows.parser.interval_s = gap


def _batches(path: Path, parser: RowParser, symbols: frozenset[str] | None,
             batch_rows: int, symbol: str | None = None,
             infer: bool = False) -> Generator[list[MarketItem], None, None]:
    """Runs in worker threads, one `next()` per hop (the file stays open between hops)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        names = normalize_columns(header)
        own_symbol = None
        if "symbol" not in names:
            own_symbol = symbol or symbol_from_filename(path)
        missing = [c for c in REQUIRED_COLUMNS if c not in names and
                   not (c == "symbol" and own_symbol)]
        if missing:
            raise DataFileError(f"{path}: missing column(s) {', '.join(missing)}; a bar file "
                                f"needs {', '.join(REQUIRED_COLUMNS)} (got {', '.join(names)})")
        width = len(names)
        rows = _CsvRows(names, parser)
        i_sym = rows.i_sym
        out: list[MarketItem] = []
        parse = rows.parse
        # Line numbers are read only for a bad row: `reader.line_num` is the current row's,
        # except for the rows sampled ahead to infer the interval, whose numbers are kept.
        sample_lines: list[int] = []
        cells_in: Iterator[list[str]] = reader
        if infer:
            sample = list(itertools.islice(((reader.line_num, c) for c in reader), INFER_ROWS))
            _infer(rows, [[*c, own_symbol] if own_symbol else c for _, c in sample])
            sample_lines = [n for n, _ in sample]
            cells_in = itertools.chain([c for _, c in sample], reader)
        n_sample, seen = len(sample_lines), 0
        for cells in cells_in:
            seen += 1
            if not cells:
                continue  # blank line
            if len(cells) != width:
                line = sample_lines[seen - 1] if seen <= n_sample else reader.line_num
                out.append(BadInput(reason="BAD_ROW",
                                    detail=f"{path.name} line {line}: {len(cells)} cells, "
                                           f"header has {width}",
                                    raw=_render_line(cells), provider=parser.provider))
            else:
                if own_symbol:
                    cells.append(own_symbol)  # the reader's list is ours to extend
                if symbols is not None and cells[i_sym].strip() not in symbols:
                    continue
                item = parse(cells)
                if type(item) is BadInput:
                    line = sample_lines[seen - 1] if seen <= n_sample else reader.line_num
                    item = BadInput(reason=item.reason,
                                    detail=f"{path.name} line {line}: {item.detail}",
                                    raw=item.raw, symbol=item.symbol, provider=item.provider)
                out.append(item)
            if len(out) >= batch_rows:
                yield out
                out = []
        if out:
            yield out


class CsvBarProvider(BarProvider):
    """Bars from a CSV file, in file order (`engine.marketdata.ordered` sorts them).

    `tz`: the zone naive timestamps are in (IANA name or tzinfo). Without it a naive timestamp
    is refused (`NAIVE_TIMESTAMP`). Timestamps with an offset ignore `tz`.
    `interval_s`: bar length when the file has no `interval_s` column; None infers it from
    the first rows. `sessions=True`: the file holds daily bars (one per trading session).
    `epoch_unit`: unit of bare-number timestamps (s, ms, us, ns).
    `symbols`: keep only these symbols (others are skipped, not rejected).
    `symbol`: the symbol of a file without a symbol column (default: from its file name).
    """

    def __init__(self, path: str | os.PathLike[str], *, tz: str | tzinfo | None = None,
                 interval_s: int | None = 60, epoch_unit: str = "s", provider: str = "csv",
                 symbols: Iterable[str] | None = None, batch_rows: int = BATCH_ROWS,
                 sessions: bool = False, symbol: str | None = None) -> None:
        check_epoch_unit(epoch_unit)
        self.path = Path(path)
        self.name = provider
        self._infer = interval_s is None and not sessions
        self._parser = RowParser(provider=provider, tz=resolve_tz(tz),
                                 interval_s=interval_s or 60, epoch_unit=epoch_unit,
                                 sessions=sessions)
        self._symbols = frozenset(symbols) if symbols is not None else None
        self._batch_rows = batch_rows
        self._symbol = symbol

    @property
    def parser(self) -> RowParser:
        """The row parser (after reading: its interval/sessions as inferred)."""
        return self._parser

    def batches(self) -> Generator[list[MarketItem], None, None]:
        """The blocking batch reader (run it in a worker thread)."""
        return _batches(self.path, self._parser, self._symbols, self._batch_rows,
                        self._symbol, self._infer)

    async def stream(self) -> AsyncGenerator[MarketItem, None]:
        gen = await anyio.to_thread.run_sync(self.batches)
        async with aclosing(items_from_thread(gen)) as items:
            async for item in items:
                yield item


# --- writing -------------------------------------------------------------------------------

CSV_COLUMNS = ("symbol", "timestamp", "open", "high", "low", "close", "volume", "vwap",
               "trade_count")


def format_timestamp(bar: Bar) -> str:
    """ISO-8601 in UTC with a `Z` (seconds; microseconds only when there are some)."""
    s = bar.start
    if s.microsecond:
        return s.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return s.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_bars_csv(path: str | os.PathLike[str], bars: Iterable[Bar], *,
                   interval_s: int | None = 60) -> int:
    """Write bars as CSV (blocking: call it through `anyio.to_thread` from async code).

    Decimals are written in plain notation from their exact value, so reading the file back
    gives equal bars. With `interval_s` set (default 60) every bar must have that interval and
    no interval column is written; with `interval_s=None` an `interval_s` column is added.
    Returns the number of bars written.
    """
    cols = CSV_COLUMNS if interval_s is not None else (*CSV_COLUMNS, "interval_s")
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for b in bars:
            if interval_s is not None and b.interval_s != interval_s:
                raise ValueError(f"{b.symbol} {b.start.isoformat()}: interval_s={b.interval_s}, "
                                 f"file is written for {interval_s}; pass interval_s=None")
            row = [b.symbol, format_timestamp(b), format(b.open, "f"), format(b.high, "f"),
                   format(b.low, "f"), format(b.close, "f"), format(b.volume, "f"),
                   format(b.vwap, "f") if b.vwap is not None else "",
                   str(b.trade_count) if b.trade_count is not None else ""]
            if interval_s is None:
                row.append(str(b.interval_s))
            w.writerow(row)
            n += 1
    return n
