"""CSV and Parquet: parsing rules, time zones, and exact round trips."""

from __future__ import annotations

from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.marketdata import (
    BadInput,
    CsvBarProvider,
    DataFileError,
    ParquetBarProvider,
    RecordedLogProvider,
    write_bars_csv,
    write_bars_parquet,
)
from engine.marketdata.types import BarProvider, MarketItem
from events.catalogue import BarReceived, DataRejected
from events.market import Bar
from events.store import EventLog

D = Decimal
T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
HEADER = "symbol,timestamp,open,high,low,close,volume,vwap,trade_count\n"


async def collect(provider: BarProvider) -> list[MarketItem]:
    async with provider, aclosing(provider.stream()) as items:
        return [item async for item in items]


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    p = tmp_path / "bars.csv"
    p.write_text(header + body)
    return p


def mk(i: int, symbol: str = "AAPL", close: str = "190.37") -> Bar:
    c = D(close)
    return Bar(symbol=symbol, start=T0 + timedelta(minutes=i), interval_s=60, open=c,
               high=c + D("0.13"), low=c - D("0.2"), close=c, volume=D(1200 + i),
               vwap=c - D("0.0125"), trade_count=17 + i, provider="csv")


# --- timestamps ------------------------------------------------------------------------------

@pytest.mark.parametrize("ts", [
    "2026-11-23T15:00:00Z", "2026-11-23T15:00:00+00:00", "2026-11-23T10:00:00-05:00",
    "2026-11-23 15:00:00Z", "1795446000", "1795446000.0",
])
async def test_timestamps_with_an_offset_or_epoch(tmp_path, ts):
    (item,) = await collect(CsvBarProvider(write(tmp_path, f"AAPL,{ts},1,1,1,1,1,,\n")))
    assert isinstance(item, Bar) and item.start == T0 and item.start.tzinfo is UTC


async def test_epoch_units(tmp_path):
    p = write(tmp_path, "AAPL,1795446000000,1,1,1,1,1,,\n")
    (item,) = await collect(CsvBarProvider(p, epoch_unit="ms"))
    assert isinstance(item, Bar) and item.start == T0
    with pytest.raises(ValueError, match="epoch_unit"):
        CsvBarProvider(p, epoch_unit="minutes")


async def test_naive_timestamps_are_refused_unless_a_zone_is_declared(tmp_path):
    p = write(tmp_path, "AAPL,2026-11-23T10:00:00,1,1,1,1,1,,\n")
    (item,) = await collect(CsvBarProvider(p))
    assert isinstance(item, BadInput) and item.reason == "NAIVE_TIMESTAMP"
    assert item.raw == "AAPL,2026-11-23T10:00:00,1,1,1,1,1,," and "line 2" in item.detail
    (item,) = await collect(CsvBarProvider(p, tz="America/New_York"))
    assert isinstance(item, Bar) and item.start == T0  # 10:00 EST is 15:00 UTC
    (item,) = await collect(CsvBarProvider(p, tz="UTC"))
    assert isinstance(item, Bar) and item.start == T0 - timedelta(hours=5)


async def test_declared_zone_refuses_dst_fold_and_gap(tmp_path):
    p = write(tmp_path, "AAPL,2026-11-01T01:30:00,1,1,1,1,1,,\n"  # happens twice
                        "AAPL,2026-03-08T02:30:00,1,1,1,1,1,,\n"  # never happens
                        "AAPL,2026-07-01T09:30:00,1,1,1,1,1,,\n")  # EDT: 13:30 UTC
    a, b, c = await collect(CsvBarProvider(p, tz="America/New_York"))
    assert isinstance(a, BadInput) and a.reason == "AMBIGUOUS_TIMESTAMP"
    assert isinstance(b, BadInput) and b.reason == "NONEXISTENT_TIMESTAMP"
    assert isinstance(c, Bar) and c.start == datetime(2026, 7, 1, 13, 30, tzinfo=UTC)


def test_unknown_zone_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        CsvBarProvider(tmp_path / "x.csv", tz="Mars/Olympus")


# --- numbers and rows --------------------------------------------------------------------

async def test_decimals_come_from_the_text_not_from_float(tmp_path):
    p = write(tmp_path, "AAPL,2026-11-23T15:00:00Z,0.1,0.30000000000000004,0.1,0.2,0.5,0.15,3\n")
    (b,) = await collect(CsvBarProvider(p))
    assert isinstance(b, Bar)
    assert (b.open, b.high, b.close, b.volume, b.vwap) == (
        D("0.1"), D("0.30000000000000004"), D("0.2"), D("0.5"), D("0.15"))
    assert str(b.open) == "0.1" and b.trade_count == 3


async def test_bad_rows_are_yielded_not_raised(tmp_path):
    p = write(tmp_path, "AAPL,2026-11-23T15:00:00Z,1,1,1,1,1,,\n"
                        "AAPL,2026-11-23T15:01:00Z,1,1,1\n"
                        "AAPL,2026-11-23T15:02:00Z,1,1,1,1,1,,2.5\n"
                        ",2026-11-23T15:03:00Z,1,1,1,1,1,,\n"
                        "AAPL,2026-11-23T15:04:00Z,1,1,1,1,1,,\n")
    items = await collect(CsvBarProvider(p))
    assert [type(i).__name__ for i in items] == ["Bar", "BadInput", "BadInput", "BadInput", "Bar"]
    assert [i.reason for i in items if isinstance(i, BadInput)] == [
        "BAD_ROW", "BAD_NUMBER", "MISSING_FIELD"]


async def test_missing_column_is_a_file_error(tmp_path):
    p = write(tmp_path, "AAPL,2026-11-23T15:00:00Z,1,1,1,1\n",
              header="symbol,timestamp,open,high,low,close\n")
    with pytest.raises(DataFileError, match="missing column.*volume"):
        await collect(CsvBarProvider(p))


async def test_symbol_filter_and_interval_column(tmp_path):
    p = write(tmp_path, "AAPL,2026-11-23T15:00:00Z,1,1,1,1,1,,,300\n"
                        "MSFT,2026-11-23T15:00:00Z,1,1,1,1,1,,,300\n",
              header=HEADER.strip() + ",interval_s\n")
    (b,) = await collect(CsvBarProvider(p, symbols=["MSFT"]))
    assert isinstance(b, Bar) and b.symbol == "MSFT" and b.interval_s == 300


async def test_large_file_streams_in_batches(tmp_path):
    body = "".join(f"AAPL,{1795446000 + 60 * i},1,1,1,1,1,,\n" for i in range(5000))
    items = await collect(CsvBarProvider(write(tmp_path, body), batch_rows=700))
    assert len(items) == 5000 and items[-1].start == T0 + timedelta(minutes=4999)


# --- round trips -------------------------------------------------------------------------

async def test_csv_round_trip_is_exact(tmp_path):
    bars = [mk(i, s) for i in range(3) for s in ("AAPL", "MSFT")]
    bars.append(Bar(symbol="F", start=T0 + timedelta(microseconds=250), interval_s=60,
                    open=D("11.5"), high=D("11.5"), low=D("11.5"), close=D("11.5"),
                    volume=D("0.5"), provider="csv"))
    p = tmp_path / "out.csv"
    assert write_bars_csv(p, bars) == len(bars)
    assert await collect(CsvBarProvider(p)) == bars


async def test_csv_writer_keeps_intervals_honest(tmp_path):
    b5 = Bar(symbol="A", start=T0, interval_s=300, open=D(1), high=D(1), low=D(1), close=D(1),
             volume=D(1), provider="csv")
    with pytest.raises(ValueError, match="interval_s=300"):
        write_bars_csv(tmp_path / "x.csv", [b5])
    write_bars_csv(tmp_path / "y.csv", [b5], interval_s=None)
    assert await collect(CsvBarProvider(tmp_path / "y.csv")) == [b5]


async def test_parquet_round_trip_is_exact(tmp_path):
    bars = [mk(i, s) for i in range(3) for s in ("AAPL", "SPY")]
    p = tmp_path / "out.parquet"
    assert write_bars_parquet(p, bars) == len(bars)
    schema = pq.read_schema(p)
    assert schema.field("close").type == pa.decimal128(38, 9)
    assert str(schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    got = await collect(ParquetBarProvider(p, provider="csv"))
    assert got == bars  # equal values; Decimal('190.370000000') == Decimal('190.37')


def test_parquet_writer_refuses_to_round(tmp_path):
    b = Bar(symbol="A", start=T0, interval_s=60, open=D("1.0000000001"), high=D(2), low=D(1),
            close=D(1), volume=D(1))
    with pytest.raises(ValueError, match="decimal128"):
        write_bars_parquet(tmp_path / "x.parquet", [b])


def _table(tmp_path: Path, price_type: pa.DataType, values: list, ts: pa.Array) -> Path:
    p = tmp_path / "in.parquet"
    n = len(values)
    cols = {"symbol": pa.array(["AAPL"] * n), "timestamp": ts}
    for c in ("open", "high", "low", "close", "volume"):
        cols[c] = pa.array(values, type=price_type)
    pq.write_table(pa.table(cols), p)
    return p


async def test_parquet_float_columns_are_refused_unless_allowed(tmp_path):
    ts = pa.array([T0], type=pa.timestamp("s", tz="UTC"))
    p = _table(tmp_path, pa.float64(), [10.2], ts)
    with pytest.raises(DataFileError, match="'open' is double.*allow_float"):
        await collect(ParquetBarProvider(p))
    (b,) = await collect(ParquetBarProvider(p, allow_float=True))
    assert isinstance(b, Bar) and b.close == D("10.2") and str(b.close) == "10.2"


async def test_parquet_string_columns_parse_as_decimal_text(tmp_path):
    ts = pa.array(["2026-11-23T10:00:00-05:00"])
    (b,) = await collect(ParquetBarProvider(_table(tmp_path, pa.string(), ["0.1"], ts)))
    assert isinstance(b, Bar) and b.start == T0 and b.close == D("0.1")


async def test_parquet_naive_timestamp_column_needs_a_zone(tmp_path):
    ts = pa.array([datetime(2026, 11, 23, 10, 0)], type=pa.timestamp("ns"))
    p = _table(tmp_path, pa.decimal128(10, 2), [D("1.00")], ts)
    with pytest.raises(DataFileError, match="without a time zone"):
        await collect(ParquetBarProvider(p))
    (b,) = await collect(ParquetBarProvider(p, tz="America/New_York"))
    assert isinstance(b, Bar) and b.start == T0


async def test_parquet_bad_rows_are_yielded(tmp_path):
    ts = pa.array([T0, T0 + timedelta(minutes=1)], type=pa.timestamp("us", tz="UTC"))
    p = _table(tmp_path, pa.string(), ["1", "-1"], ts)
    good, bad = await collect(ParquetBarProvider(p))
    assert isinstance(good, Bar)
    assert isinstance(bad, BadInput) and bad.reason == "NON_POSITIVE_PRICE"
    assert '"open": "-1"' in bad.raw and "row 2" in bad.detail


price = st.decimals(min_value=D("0.0001"), max_value=D("99999"), places=4, allow_nan=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(price, price, price, price,
                               st.decimals(min_value=0, max_value=10**9, places=3),
                               st.one_of(st.none(), price), st.one_of(st.none(), st.integers(0, 10**6))),
                     min_size=1, max_size=20))
async def test_round_trips_hold_for_any_bars(tmp_path, rows):
    bars = []
    for i, (a, b, c, d, vol, vwap, n) in enumerate(rows):
        o, cl = a, b
        hi, lo = max(a, b, c, d), min(a, b, c, d)
        bars.append(Bar(symbol="AAPL", start=T0 + timedelta(minutes=i), interval_s=60, open=o,
                        high=hi, low=lo, close=cl, volume=vol, vwap=vwap, trade_count=n,
                        provider="csv"))
    write_bars_csv(tmp_path / "h.csv", bars)
    assert await collect(CsvBarProvider(tmp_path / "h.csv")) == bars
    write_bars_parquet(tmp_path / "h.parquet", bars)
    assert await collect(ParquetBarProvider(tmp_path / "h.parquet", provider="csv")) == bars


# --- a recorded log ----------------------------------------------------------------------

async def test_recorded_log_gives_back_its_bars(tmp_path):
    bars = [mk(i, s) for i in range(4) for s in ("AAPL", "MSFT")]
    path = tmp_path / "log.sqlite"
    async with EventLog.open(path) as log:
        for b in bars:
            await log.append(BarReceived(ts=b.end, bar=b))
            await log.append(DataRejected(ts=b.end, reason="X", detail="noise"))
    assert await collect(RecordedLogProvider(path)) == bars
    assert await collect(RecordedLogProvider(path, symbols=["MSFT"])) == bars[1::2]
    assert await collect(RecordedLogProvider(path, to_seq=4)) == bars[:2]


_OFFSETS = st.sampled_from(["Z", "+00:00", "-05:00", "+05:30", "", " ", "z"])


@settings(max_examples=200, deadline=None)
@given(when=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1)),
       offset=_OFFSETS, sep=st.sampled_from(["T", " "]),
       spec=st.sampled_from(["seconds", "minutes", "microseconds", "date", "epoch"]),
       sessions=st.booleans(), tz=st.sampled_from([None, "America/New_York"]))
def test_the_csv_fast_path_reads_every_timestamp_as_the_general_parser(
        when: datetime, offset: str, sep: str, spec: str, sessions: bool,
        tz: str | None) -> None:
    # `_CsvRows.parse` reads a UTC ISO cell itself and leaves every other cell to
    # `RowParser`; the bar (or the refusal) must be the very one `RowParser.parse` makes.
    from engine.marketdata.csv_io import _CsvRows
    from engine.marketdata.parse import RowParser, resolve_tz

    if spec == "date":
        text = when.date().isoformat()
    elif spec == "epoch":
        text = str(int(when.replace(tzinfo=UTC).timestamp()))
    else:
        text = when.isoformat(sep=sep, timespec=spec) + offset
    names = ["symbol", "timestamp", "open", "high", "low", "close", "volume"]
    cells = ["AAPL", text, "10.00", "10.50", "9.90", "10.20", "1200"]

    def parser() -> RowParser:
        return RowParser(provider="csv", tz=resolve_tz(tz), sessions=sessions)

    fast = _CsvRows(names, parser()).parse(list(cells))
    slow = parser().parse(dict(zip(names, cells)), lambda: ",".join(cells))
    assert fast == slow
    if isinstance(fast, Bar):
        assert fast.start.tzinfo is UTC
