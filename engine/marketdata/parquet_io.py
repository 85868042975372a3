"""Bars from and to Parquet files (pyarrow, the optional `parquet` extra).

Columns are the same as for CSV (see `engine.marketdata.parse`); their types decide parsing:

- prices and volume: `decimal128` (exact) or `string` (parsed with `Decimal(text)`), or
  integers. **Float columns are refused** with a `DataFileError` naming the column, because a
  binary float cannot say which decimal was meant. Pass `allow_float=True` to accept them
  anyway; each float then becomes the decimal of its shortest round-trip repr (10.2 -> 10.2),
  which is right for floats that were parsed from decimal text with <= 15 significant digits.
- `timestamp`: a timestamp type with a time zone; a timestamp type WITHOUT one is refused
  unless the reader is given `tz` (its wall times are then read in that zone); strings are
  parsed like CSV cells; integers are epoch numbers in `epoch_unit`.
- `trade_count`, `interval_s`: integers.

The writer stores prices, vwap and volume as `decimal128(38, scale)` (default scale 9, Alpaca's
fractional precision) and `timestamp` as `timestamp[us, tz=UTC]`. A value with more decimal
places than `scale` is refused rather than rounded.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, Generator, Iterable
from contextlib import aclosing
from datetime import tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

from events.market import Bar

from .parse import (
    DAILY_GAP_S,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    InputError,
    RowParser,
    check_epoch_unit,
    float_to_decimal,
    infer_interval,
    normalize_columns,
    resolve_tz,
    symbol_from_filename,
    to_decimal,
)
from .types import BadInput, BarProvider, DataFileError, MarketItem, items_from_thread

BATCH_ROWS = 4096
_NUMERIC = ("open", "high", "low", "close", "volume", "vwap")


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:  # pragma: no cover - depends on the install
        raise DataFileError("Parquet support needs pyarrow: pip install 'miniquantdesk[parquet]'"
                            ) from None
    return pyarrow


def _to_decimal_allowing_float(value: Any, field: str) -> Decimal:
    if isinstance(value, float):
        return float_to_decimal(value)
    return to_decimal(value, field)


def _check_schema(pa: Any, path: Path, schema: Any, tz: tzinfo | None,
                  allow_float: bool, own_symbol: bool = False,
                  sessions: bool = False) -> list[str]:
    names = list(schema.names)
    missing = [c for c in REQUIRED_COLUMNS if c not in names
               and not (c == "symbol" and own_symbol)]
    if missing:
        raise DataFileError(f"{path}: missing column(s) {', '.join(missing)}; a bar file needs "
                            f"{', '.join(REQUIRED_COLUMNS)} (got {', '.join(names)})")
    for col in _NUMERIC:
        if col in names and pa.types.is_floating(schema.field(col).type) and not allow_float:
            raise DataFileError(
                f"{path}: column {col!r} is {schema.field(col).type}; prices and volume must be "
                "decimal or string columns (a float cannot say which decimal was meant). Pass "
                "allow_float=True to convert floats through their shortest repr.")
    ts_type = schema.field("timestamp").type
    if pa.types.is_timestamp(ts_type) and ts_type.tz is None and tz is None and not sessions:
        raise DataFileError(f"{path}: column 'timestamp' is {ts_type} without a time zone; "
                            "declare the zone its wall times are in (tz='America/New_York')")
    return [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in names]


def _infer(parser: RowParser, rows: list[dict[str, Any]]) -> None:
    keys = []
    for row in rows:
        try:
            keys.append((str(row["symbol"]), parser.timestamp(row["timestamp"])))
        except InputError:
            continue
    gap = infer_interval(keys)
    if gap is not None and gap >= DAILY_GAP_S:
        parser.sessions = True
    elif gap is not None:
        parser.interval_s = gap


def _batches(path: Path, parser: RowParser, tz: tzinfo | None, allow_float: bool,
             symbols: frozenset[str] | None, batch_rows: int, symbol: str | None = None,
             infer: bool = False) -> Generator[list[MarketItem], None, None]:
    pa = _pyarrow()
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        schema = pf.schema_arrow
        # Export spellings (Date, Ticker...) are matched like CSV headers.
        rename = dict(zip(normalize_columns(list(schema.names)), schema.names))
        own_symbol = None if "symbol" in rename else (symbol or symbol_from_filename(path))
        schema = pa.schema([schema.field(rename[n]).with_name(n) for n in rename])
        cols = _check_schema(pa, path, schema, tz, allow_float, own_symbol is not None,
                             parser.sessions)
        file_cols = [rename[c] for c in cols if c in rename]
        row_no = 0
        first = True
        for batch in pf.iter_batches(batch_size=batch_rows, columns=file_cols):
            batch = batch.rename_columns([c for c in cols if c in rename])
            data: dict[str, list[Any]] = {}
            if own_symbol is not None:
                data["symbol"] = [own_symbol] * batch.num_rows
            for name in cols:
                if name not in rename:
                    continue
                col = batch.column(name)
                if pa.types.is_timestamp(col.type) and col.type.unit != "us":
                    try:
                        col = pc.cast(col, pa.timestamp("us", tz=col.type.tz))
                    except pa.ArrowInvalid as e:
                        raise DataFileError(f"{path}: timestamp column: {e}") from None
                data[name] = col.to_pylist()
            if first and infer:
                _infer(parser, [{n: data[n][i] for n in ("symbol", "timestamp")}
                                for i in range(min(batch.num_rows, 2000))])
            first = False
            out: list[MarketItem] = []
            for i in range(batch.num_rows):
                row_no += 1
                row = {name: data[name][i] for name in cols}
                sym = row["symbol"]
                if symbols is not None and (not isinstance(sym, str) or sym not in symbols):
                    continue

                def raw(r: dict[str, Any] = row) -> str:
                    return json.dumps({k: None if v is None else str(v) for k, v in r.items()})

                item = parser.parse(row, raw)
                if type(item) is BadInput:
                    item = BadInput(reason=item.reason, detail=f"{path.name} row {row_no}: "
                                    f"{item.detail}", raw=item.raw, symbol=item.symbol,
                                    provider=item.provider)
                out.append(item)
            if out:
                yield out


class ParquetBarProvider(BarProvider):
    """Bars from a Parquet file, in file order (see the module docstring for column types;
    `interval_s`, `sessions` and `symbol` as for `CsvBarProvider`). Reads row group by row
    group, so memory stays bounded by `batch_rows`."""

    def __init__(self, path: str | os.PathLike[str], *, tz: str | tzinfo | None = None,
                 interval_s: int | None = 60, epoch_unit: str = "s", provider: str = "parquet",
                 allow_float: bool = False, symbols: Iterable[str] | None = None,
                 batch_rows: int = BATCH_ROWS, sessions: bool = False,
                 symbol: str | None = None) -> None:
        check_epoch_unit(epoch_unit)
        self.path = Path(path)
        self.name = provider
        self._tz = resolve_tz(tz)
        self._allow_float = allow_float
        self._infer = interval_s is None and not sessions
        self._parser = RowParser(
            provider=provider, tz=self._tz, interval_s=interval_s or 60, epoch_unit=epoch_unit,
            sessions=sessions,
            convert=_to_decimal_allowing_float if allow_float else to_decimal)
        self._symbols = frozenset(symbols) if symbols is not None else None
        self._batch_rows = batch_rows
        self._symbol = symbol

    @property
    def parser(self) -> RowParser:
        return self._parser

    def batches(self) -> Generator[list[MarketItem], None, None]:
        """The blocking batch reader (run it in a worker thread)."""
        return _batches(self.path, self._parser, self._tz, self._allow_float, self._symbols,
                        self._batch_rows, self._symbol, self._infer)

    async def stream(self) -> AsyncGenerator[MarketItem, None]:
        gen = self.batches()
        async with aclosing(items_from_thread(gen)) as items:
            async for item in items:
                yield item


# --- writing -------------------------------------------------------------------------------


def write_bars_parquet(path: str | os.PathLike[str], bars: Iterable[Bar], *, scale: int = 9,
                       interval_s: int | None = 60, row_group_rows: int = 65_536) -> int:
    """Write bars as Parquet (blocking: call it through `anyio.to_thread` from async code).

    Decimals are stored as `decimal128(38, scale)`: reading back gives equal values (with
    `scale` decimal places). `interval_s` works as in `write_bars_csv`. Returns the count.
    """
    pa = _pyarrow()
    import pyarrow.parquet as pq

    dec = pa.decimal128(38, scale)
    fields = [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("open", dec, nullable=False),
        pa.field("high", dec, nullable=False),
        pa.field("low", dec, nullable=False),
        pa.field("close", dec, nullable=False),
        pa.field("volume", dec, nullable=False),
        pa.field("vwap", dec),
        pa.field("trade_count", pa.int64()),
    ]
    if interval_s is None:
        fields.append(pa.field("interval_s", pa.int32(), nullable=False))
    schema = pa.schema(fields)
    names = schema.names
    n = 0

    def table(rows: dict[str, list[Any]]) -> Any:
        try:
            return pa.table({k: pa.array(rows[k], type=schema.field(k).type) for k in names},
                            schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ValueError(f"cannot store bars as decimal128(38, {scale}): {e}; "
                             "raise `scale`") from None

    with pq.ParquetWriter(path, schema) as w:
        rows: dict[str, list[Any]] = {k: [] for k in names}
        for b in bars:
            if interval_s is not None and b.interval_s != interval_s:
                raise ValueError(f"{b.symbol} {b.start.isoformat()}: interval_s={b.interval_s}, "
                                 f"file is written for {interval_s}; pass interval_s=None")
            rows["symbol"].append(b.symbol)
            rows["timestamp"].append(b.start)
            rows["open"].append(b.open)
            rows["high"].append(b.high)
            rows["low"].append(b.low)
            rows["close"].append(b.close)
            rows["volume"].append(b.volume)
            rows["vwap"].append(b.vwap)
            rows["trade_count"].append(b.trade_count)
            if interval_s is None:
                rows["interval_s"].append(b.interval_s)
            n += 1
            if len(rows["symbol"]) >= row_group_rows:
                w.write_table(table(rows))
                rows = {k: [] for k in names}
        if rows["symbol"] or n == 0:
            w.write_table(table(rows))
    return n
