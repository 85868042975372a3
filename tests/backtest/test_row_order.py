"""Row order never changes a result: bar files grouped by symbol, interleaved, or split over
several files replay exactly like the same rows sorted by time (byte-identical logs), and the
sort stays in bounded memory for files larger than its run size."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import load_settings
from engine.marketdata.csv_io import CsvBarProvider
from engine.marketdata.ordered import OrderedFileProvider, OrderStats, ordered_batches
from engine.strategies.base import Strategy
from engine.strategies.context import StrategyContext
from events.catalogue import BarReceived, DataRejected, FillReceived, OrderIntent
from events.market import Bar
from events.store import LogReader
from projections.calendar import business_days_from
from replay.backtest.driver import NoBarsError, run_backtest, stuck_orders_line
from tests.backtest.test_backtest_determinism import payload_digest
from tests.owndata import grouped, minute_rows, shuffled, write_csv

DAYS = business_days_from(date(2026, 3, 2), 2)


def _settings(tmp_path: Path):
    return load_settings(data_dir=tmp_path, sim={"cash": "100000"}, strategies=[
        {"name": "sma_crossover", "params": {"fast": 5, "slow": 20}}])


async def _events(path: Path) -> list[object]:
    async with LogReader(path) as r:
        return [e async for _, e in r.read()]


async def test_grouped_interleaved_and_split_files_give_the_sorted_log(tmp_path: Path) -> None:
    rows = minute_rows(["AAA", "BBB"], DAYS)
    sorted_csv = write_csv(tmp_path / "sorted.csv", rows)
    grouped_csv = write_csv(tmp_path / "grouped.csv", grouped(rows))
    shuffled_csv = write_csv(tmp_path / "shuffled.csv", shuffled(rows))
    parts = [write_csv(tmp_path / "part-b.csv", [r for r in rows if r[0] == "BBB"]),
             write_csv(tmp_path / "part-a.csv", [r for r in rows if r[0] == "AAA"][::-1])]
    settings = _settings(tmp_path)
    ref = await run_backtest(settings, sorted_csv, tmp_path / "ref.sqlite")
    ref_digest = await payload_digest(ref.log_path)
    fills = Counter(e.symbol for e in await _events(ref.log_path)
                    if isinstance(e, FillReceived))
    assert fills["AAA"] > 0 and fills["BBB"] > 0, "both symbols must trade for this to test"
    assert ref.bars == len(rows) and not ref.open_orders
    for name, data in (("grouped", grouped_csv), ("shuffled", shuffled_csv), ("split", parts)):
        res = await run_backtest(settings, data, tmp_path / f"{name}.sqlite")
        assert res.run_id == ref.run_id, name
        assert await payload_digest(res.log_path) == ref_digest, name


async def test_grouped_file_delivers_every_bar_in_time_order(tmp_path: Path) -> None:
    rows = minute_rows(["AAA", "BBB", "CCC"], DAYS[:1])
    path = write_csv(tmp_path / "g.csv", grouped(rows))
    res = await run_backtest(_settings(tmp_path), path, tmp_path / "g.sqlite")
    events = await _events(res.log_path)
    assert not [e for e in events if isinstance(e, DataRejected)]
    starts = [(e.bar.start, e.bar.symbol) for e in events if isinstance(e, BarReceived)]
    assert starts == sorted(starts) and len(starts) == len(rows)


async def test_duplicates_are_refused_wherever_they_sit_in_the_file(tmp_path: Path) -> None:
    rows = grouped(minute_rows(["AAA", "BBB"], DAYS[:1]))
    dup = list(rows[10])
    dup[3] = dup[5] = "99.99"  # same symbol and time, other prices: the first row wins
    path = write_csv(tmp_path / "d.csv", [*rows, dup])
    res = await run_backtest(_settings(tmp_path), path, tmp_path / "d.sqlite")
    rejected = [e for e in await _events(res.log_path) if isinstance(e, DataRejected)]
    assert [r.reason for r in rejected] == ["DUPLICATE_TIMESTAMP"]
    assert rejected[0].symbol == "AAA" and "99.99" in rejected[0].raw


def _drain(path: Path, run_rows: int, stats: OrderStats) -> tuple[int, bool, str]:
    """Sort the file; keep only the count, whether the output was in (start, symbol) order
    and a hash of the bars in output order (not the bars: what is measured is what the sort
    itself holds)."""
    provider = CsvBarProvider(path, batch_rows=64, interval_s=None)
    n, in_order, last = 0, True, None
    h = hashlib.sha256()
    enc = msgspec.msgpack.Encoder()
    for batch in ordered_batches([provider.batches], stats, run_rows=run_rows,
                                 tmp_dir=str(path.parent)):
        for b in batch:
            assert isinstance(b, Bar)
            key = (b.start, b.symbol)
            in_order = in_order and (last is None or key > last)
            last = key
            n += 1
            h.update(enc.encode(b))
    return n, in_order, h.hexdigest()


def test_a_file_larger_than_the_run_size_streams_through_spilled_runs(tmp_path: Path) -> None:
    rows = grouped(minute_rows(["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"],
                               business_days_from(date(2026, 3, 2), 6)))
    path = write_csv(tmp_path / "big.csv", rows)
    tracemalloc.start()
    try:
        whole = OrderStats()
        n_whole, sorted_whole, hash_whole = _drain(path, 10**9, whole)
        _, peak_whole = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        small = OrderStats()
        n_small, sorted_small, hash_small = _drain(path, 500, small)
        _, peak_small = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n_small == n_whole == len(rows) == 14040 and sorted_small and sorted_whole
    assert hash_small == hash_whole
    assert small.runs >= len(rows) // 500 and small.max_run <= 500 and not small.was_sorted
    assert whole.runs == 0 and whole.max_run == len(rows)
    # The whole-file sort holds every bar; the spilling one a run (plus what it keeps as a
    # list of output) — the bound must show in what was allocated at the peak.
    assert peak_small < peak_whole / 3, (peak_small, peak_whole)
    assert small.digest == whole.digest
    assert not list(tmp_path.glob("mqd-sort-*")), "spilled runs are removed"


async def test_every_row_refused_says_how_many_and_why(tmp_path: Path) -> None:
    rows = [[s, ts.replace("Z", ""), *rest] for s, ts, *rest in
            minute_rows(["AAA"], DAYS[:1])[:50]]
    path = write_csv(tmp_path / "naive.csv", rows)
    with pytest.raises(NoBarsError) as e:
        await run_backtest(_settings(tmp_path), path, tmp_path / "n.sqlite")
    msg = str(e.value)
    assert "all 50 rows were refused" in msg and "NAIVE_TIMESTAMP" in msg
    assert "naive.csv line 2" in msg and "--tz" in msg
    assert "no bars in the requested range" not in msg


async def test_the_provider_reports_what_it_read(tmp_path: Path) -> None:
    rows = minute_rows(["AAA", "BBB"], DAYS[:1], step_min=5)
    path = write_csv(tmp_path / "five.csv", grouped(rows))
    provider = OrderedFileProvider([CsvBarProvider(path, interval_s=None)])
    async with provider:
        items = [i async for i in provider.stream()]
    assert provider.stats.symbols == {"AAA", "BBB"} and provider.stats.bars == len(items)
    assert {i.interval_s for i in items if isinstance(i, Bar)} == {300}


class _BuyOnBar(Strategy):
    """Buys 10 shares of each symbol on its `n`-th bar (a test strategy)."""

    name = "buy_on_bar"

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.seen: Counter[str] = Counter()

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent] | None:
        self.seen[bar.symbol] += 1
        if self.seen[bar.symbol] == self.n:
            return [ctx.order("buy", symbol=bar.symbol, qty=Decimal(10), reason="test")]
        return None


async def test_an_order_the_data_ended_under_is_reported(tmp_path: Path) -> None:
    # AAA's file ends after 30 bars, BBB's runs all day: an order on AAA's last bar can never
    # fill, and the result must say so rather than end as if nothing were pending.
    rows = minute_rows(["AAA", "BBB"], DAYS[:1])
    aaa = [r for r in rows if r[0] == "AAA"][:30]
    files = [write_csv(tmp_path / "aaa.csv", aaa),
             write_csv(tmp_path / "bbb.csv", [r for r in rows if r[0] == "BBB"])]
    res = await run_backtest(_settings(tmp_path), files, tmp_path / "s.sqlite",
                             strategies=[_BuyOnBar(30)])
    assert [(o.symbol, o.side, o.qty) for o in res.open_orders] == [("AAA", "buy", 10)]
    assert res.open_orders[0].last_bar is not None
    line = stuck_orders_line(res.open_orders)
    assert line is not None and line.startswith("1 order(s) still open when the data ended")
    fills = [e for e in await _events(res.log_path) if isinstance(e, FillReceived)]
    assert [f.symbol for f in fills] == ["BBB"]


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["AAA", "BBB", "CCC"]),
                               st.integers(min_value=0, max_value=40)),
                     min_size=1, max_size=120),
       run_rows=st.integers(min_value=1, max_value=50), seed=st.integers(0, 2**16))
def test_any_permutation_sorts_to_the_same_stream(rows: list[tuple[str, int]], run_rows: int,
                                                  seed: int) -> None:
    import random
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    bars = [Bar(symbol=s, start=t0 + timedelta(minutes=m), interval_s=60, open=Decimal(1 + i),
                high=Decimal(1 + i), low=Decimal(1 + i), close=Decimal(1 + i),
                volume=Decimal(i), provider="t") for i, (s, m) in enumerate(rows)]
    shuffled_bars = list(bars)
    random.Random(seed).shuffle(shuffled_bars)

    def sort(items: list[Bar], n: int) -> tuple[list[Bar], OrderStats]:
        stats = OrderStats()
        out = [b for batch in ordered_batches([lambda: iter([list(items)])], stats, run_rows=n)
               for b in batch]
        return out, stats  # type: ignore[return-value]

    a, sa = sort(bars, run_rows)
    b, sb = sort(shuffled_bars, 10**6)
    # the same (start, symbol) sequence; among duplicates input order decides, so compare
    # keys, and the bars themselves where a key is unique
    keys = [(x.start, x.symbol) for x in a]
    assert keys == sorted(keys) == [(x.start, x.symbol) for x in b]
    unique = {k for k, n in Counter(keys).items() if n == 1}
    assert [x for x in a if (x.start, x.symbol) in unique] == [
        x for x in b if (x.start, x.symbol) in unique]
    assert sa.digest == sb.digest and sa.bars == sb.bars == len(bars)
    # ties keep input order: the first of two equal keys in the input comes first
    firsts = {}
    for x in bars:
        firsts.setdefault((x.start, x.symbol), x)
    seen = set()
    for x in a:
        k = (x.start, x.symbol)
        if k not in seen:
            assert x == firsts[k]
            seen.add(k)


async def test_parquet_in_any_row_order_and_export_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = minute_rows(["AAA", "BBB"], DAYS[:1])

    def write(path: Path, rs: list[list[str]], group_rows: int) -> Path:
        table = pa.table({
            "Ticker": [r[0] for r in rs],
            "Datetime": pa.array([r[1] for r in rs]).cast(pa.timestamp("s", tz="UTC")),
            **{name: pa.array([Decimal(r[i]) for r in rs], pa.decimal128(18, 2))
               for i, name in ((2, "Open"), (3, "High"), (4, "Low"), (5, "Close"))},
            "Volume": pa.array([int(r[6]) for r in rs], pa.int64())})
        pq.write_table(table, path, row_group_size=group_rows)
        return path

    settings = _settings(tmp_path)
    ref = await run_backtest(settings, write(tmp_path / "s.parquet", rows, 500),
                             tmp_path / "ref.sqlite")
    got = await run_backtest(settings, write(tmp_path / "g.parquet", grouped(rows), 97),
                             tmp_path / "g.sqlite")
    assert ref.bars == got.bars == len(rows) and ref.intents > 0
    assert await payload_digest(got.log_path) == await payload_digest(ref.log_path)


async def test_some_rows_refused_are_counted_with_the_first_and_the_fix(tmp_path: Path) -> None:
    rows = grouped(minute_rows(["AAA", "BBB"], DAYS[:1]))
    rows[5][3] = "null"  # as Yahoo writes a missing price
    rows[400][1] = "2026-03-02 09:31"  # a naive time among offsets
    path = write_csv(tmp_path / "some.csv", rows)
    res = await run_backtest(_settings(tmp_path), path, tmp_path / "s.sqlite")
    assert res.refused_rows == {"BAD_NUMBER": 1, "NAIVE_TIMESTAMP": 1}
    assert res.bars == len(rows) - 2
    line = res.refused_rows_line()
    assert line is not None and line.startswith("2 input row(s) refused: BAD_NUMBER 1, ")
    assert "first: some.csv line 7: high='null' is not a number" in line
    rejected = [e for e in await _events(res.log_path) if isinstance(e, DataRejected)]
    assert sorted(e.reason for e in rejected) == ["BAD_NUMBER", "NAIVE_TIMESTAMP"]


@pytest.mark.parametrize("layout", ["sorted", "day_files", "reversed_runs",
                                    "overlapping_files"])
def test_runs_that_follow_each_other_are_concatenated_like_a_merge(tmp_path: Path,
                                                                   layout: str) -> None:
    # Sorted input (and files each covering a later span) spill runs that do not overlap:
    # those are concatenated rather than merged, and must give the very same stream, with
    # the last run never written to disk.
    days = business_days_from(date(2026, 3, 2), 3)
    rows = minute_rows(["AAA", "BBB"], days)
    if layout == "sorted":
        files = [write_csv(tmp_path / "all.csv", rows)]
    elif layout == "reversed_runs":  # out of order within each run, the runs in order
        files = [write_csv(tmp_path / "rev.csv", [r for i in range(0, len(rows), 300)
                                                  for r in rows[i:i + 300][::-1]])]
    else:
        per_day = [[r for r in rows if r[1].startswith(d.isoformat())] for d in days]
        if layout == "overlapping_files":  # the last file reaches back into the day before
            per_day[2].append(per_day[1].pop())
        files = [write_csv(tmp_path / f"day-{i}.csv", part) for i, part in enumerate(per_day)]

    def drain(run_rows: int) -> tuple[list[Bar], OrderStats]:
        stats = OrderStats()
        sources = [CsvBarProvider(f, interval_s=None).batches for f in files]
        out = [b for batch in ordered_batches(sources, stats, run_rows=run_rows,
                                              tmp_dir=str(tmp_path)) for b in batch]
        return out, stats  # type: ignore[return-value]

    whole, ws = drain(10**9)
    small, ss = drain(300)
    keys = [(b.start, b.symbol) for b in whole]
    assert keys == sorted(keys) and len(whole) == len(rows)
    assert small == whole and ss.digest == ws.digest and ss.bars == ws.bars
    assert ss.runs == -(-len(rows) // 300) and ws.runs == 0
    assert ss.was_sorted == (layout in ("sorted", "day_files"))
    assert not list(tmp_path.glob("mqd-sort-*"))
