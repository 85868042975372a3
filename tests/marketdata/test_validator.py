"""BarValidator: each rule has a bar that fails it; bad bars never cost good ones."""

from __future__ import annotations

import json
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.clock import SimClock
from engine.marketdata import BadInput, BarValidator, CsvBarProvider
from engine.marketdata.parse import RowParser
from events.catalogue import BarReceived, DataGap, DataRejected
from events.market import Bar

D = Decimal
T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # 10:00 New York
HEADER = "symbol,timestamp,open,high,low,close,volume,vwap,trade_count\n"


def bar(start: datetime = T0, symbol: str = "AAPL", close: str = "100") -> Bar:
    c = D(close)
    return Bar(symbol=symbol, start=start, interval_s=60, open=c, high=c, low=c, close=c,
               volume=D(10), provider="test")


def row(**over: str) -> BadInput | Bar:
    cells = {"symbol": "AAPL", "timestamp": "2026-11-23T15:00:00Z", "open": "100",
             "high": "101", "low": "99", "close": "100.5", "volume": "1000"}
    cells.update(over)
    return RowParser(provider="csv").parse(cells, lambda: json.dumps(cells))


@pytest.fixture
def clock() -> SimClock:
    return SimClock(T0 + timedelta(hours=1))


@pytest.fixture
def validator(clock: SimClock) -> BarValidator:
    return BarValidator(clock)


def only(events: list) -> object:
    assert len(events) == 1, events
    return events[0]


# --- contract rules: the provider could not build a Bar, the validator records why --------

@pytest.mark.parametrize(("over", "reason"), [
    ({"open": "NaN"}, "NON_FINITE_PRICE"),
    ({"close": "Infinity", "high": "Infinity"}, "NON_FINITE_PRICE"),
    ({"low": "0"}, "NON_POSITIVE_PRICE"),
    ({"low": "-1"}, "NON_POSITIVE_PRICE"),
    ({"high": "100.2"}, "HIGH_BELOW_OPEN_CLOSE"),  # high < close 100.5
    ({"low": "100.2"}, "LOW_ABOVE_OPEN_CLOSE"),  # low > open 100
    ({"high": "98"}, "HIGH_BELOW_LOW"),
    ({"volume": "-5"}, "NEGATIVE_VOLUME"),
    ({"timestamp": "2026-11-23T10:00:00"}, "NAIVE_TIMESTAMP"),
    ({"close": "abc"}, "BAD_NUMBER"),
    ({"volume": ""}, "MISSING_FIELD"),
    ({"timestamp": "yesterday"}, "BAD_TIMESTAMP"),
])
def test_contract_violations_are_recorded_with_reason_and_raw(validator, over, reason):
    item = row(**over)
    assert isinstance(item, BadInput) and item.reason == reason
    rej = only(validator.validate(item))
    assert isinstance(rej, DataRejected)
    assert rej.reason == reason and rej.symbol == "AAPL" and rej.provider == "csv"
    assert json.loads(rej.raw) == {**json.loads(rej.raw), **over}  # the raw input is kept
    assert validator.last_good("AAPL") is None


def test_good_bar_is_received_and_becomes_last_good(validator, clock):
    b = bar()
    got = only(validator.validate(b))
    assert isinstance(got, BarReceived) and got.bar is b and got.ts == clock.now()
    assert validator.last_good("AAPL") is b
    assert validator.last_good_end("AAPL") == T0 + timedelta(minutes=1)


def test_duplicate_timestamp_is_rejected(validator):
    validator.validate(bar(close="100"))
    rej = only(validator.validate(bar(close="101")))
    assert isinstance(rej, DataRejected) and rej.reason == "DUPLICATE_TIMESTAMP"
    assert json.loads(rej.raw)["close"] == "101"
    assert validator.last_good("AAPL").close == D("100")  # the first one stays


def test_out_of_order_is_rejected(validator):
    validator.validate(bar(T0 + timedelta(minutes=5)))
    rej = only(validator.validate(bar(T0 + timedelta(minutes=4))))
    assert isinstance(rej, DataRejected) and rej.reason == "OUT_OF_ORDER"
    assert validator.last_good("AAPL").start == T0 + timedelta(minutes=5)


def test_order_is_per_symbol(validator):
    validator.validate(bar(T0 + timedelta(minutes=5), "AAPL"))
    assert isinstance(only(validator.validate(bar(T0, "MSFT"))), BarReceived)


def test_bar_from_the_future_is_rejected_until_it_has_closed():
    clock = SimClock(T0 + timedelta(seconds=59))
    validator = BarValidator(clock)
    rej = only(validator.validate(bar(T0)))
    assert isinstance(rej, DataRejected) and rej.reason == "FUTURE_BAR"
    clock.set(T0 + timedelta(seconds=60))  # bar.end == now: usable
    assert isinstance(only(validator.validate(bar(T0))), BarReceived)


def test_gap_is_flagged_and_the_bar_still_accepted(validator):
    validator.validate(bar(T0))
    gap, got = validator.validate(bar(T0 + timedelta(minutes=4)))
    assert isinstance(gap, DataGap) and isinstance(got, BarReceived)
    assert (gap.symbol, gap.previous_start, gap.start, gap.missing_bars) == (
        "AAPL", T0, T0 + timedelta(minutes=4), 3)
    assert validator.last_good("AAPL").start == T0 + timedelta(minutes=4)


def test_overnight_is_not_a_gap(clock, validator):
    close = datetime(2026, 11, 23, 20, 59, tzinfo=UTC)  # 15:59 New York
    next_open = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)  # 09:30 New York
    clock.set(next_open + timedelta(hours=1))
    validator.validate(bar(close))
    assert isinstance(only(validator.validate(bar(next_open))), BarReceived)


def test_prime_restores_ordering_after_a_restart(validator):
    validator.prime("AAPL", T0)
    assert only(validator.validate(bar(T0))).reason == "DUPLICATE_TIMESTAMP"
    assert isinstance(only(validator.validate(bar(T0 + timedelta(minutes=1)))), BarReceived)


def test_something_that_is_not_a_bar_is_recorded(validator):
    rej = only(validator.validate({"o": 1}))  # type: ignore[arg-type]
    assert isinstance(rej, DataRejected) and rej.reason == "UNSUPPORTED_MESSAGE"


async def test_one_bad_bar_in_a_stream_loses_no_good_bar(tmp_path: Path, clock, validator):
    lines = [f"AAPL,2026-11-23T15:{m:02d}:00Z,100,101,99,100.5,1000,100.2,12\n"
             for m in range(10)]
    lines[4] = "AAPL,2026-11-23T15:04:00Z,100,99.5,99,100.5,1000,,\n"  # high < open: bad
    path = tmp_path / "bars.csv"
    path.write_text(HEADER + "".join(lines))
    events = []
    async with aclosing(CsvBarProvider(path).stream()) as items:
        async for item in items:
            events.extend(validator.validate(item))
    received = [e.bar.start.minute for e in events if isinstance(e, BarReceived)]
    rejected = [e for e in events if isinstance(e, DataRejected)]
    gaps = [e for e in events if isinstance(e, DataGap)]
    assert received == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert len(rejected) == 1 and rejected[0].reason == "HIGH_BELOW_OPEN_CLOSE"
    assert rejected[0].raw == lines[4].strip() and "line 6" in rejected[0].detail
    assert [g.missing_bars for g in gaps] == [1]  # the hole the bad bar left is flagged
    assert (validator.accepted, validator.rejected, validator.gaps) == (9, 1, 1)


def test_clock_skew_tolerance_is_explicit_and_bounded():
    clock = SimClock(T0 + timedelta(seconds=59, milliseconds=700))  # our clock runs 300 ms late
    assert only(BarValidator(clock).validate(bar(T0))).reason == "FUTURE_BAR"
    lenient = BarValidator(clock, max_clock_skew=timedelta(seconds=1))
    assert isinstance(only(lenient.validate(bar(T0))), BarReceived)
    assert only(lenient.validate(bar(T0 + timedelta(minutes=1)))).reason == "FUTURE_BAR"
    with pytest.raises(ValueError):
        BarValidator(clock, max_clock_skew=timedelta(seconds=-1))


def _gap_reference(bars: list[Bar]) -> list[tuple[str, int]]:
    """The gap rule spelled out on its own: per symbol, an accepted bar that does not start
    where the last accepted one (of the same interval) ended, on the same New York day,
    flags the bars missing between them."""
    from projections.calendar import trading_day

    last: dict[str, Bar] = {}
    out: list[tuple[str, int]] = []
    for b in bars:
        prev = last.get(b.symbol)
        if prev is not None and b.start <= prev.start:
            continue  # refused: duplicate or out of order
        last[b.symbol] = b
        if prev is None or prev.interval_s != b.interval_s or b.start == prev.end:
            continue
        missing = (b.start - prev.start) // timedelta(seconds=b.interval_s) - 1
        if missing > 0 and trading_day(b.start) == trading_day(prev.start):
            out.append((b.symbol, missing))
    return out


@settings(max_examples=150)
@given(st.lists(st.tuples(st.sampled_from(["AAPL", "MSFT"]), st.integers(0, 600),
                          st.sampled_from([60, 300])), max_size=40))
def test_gaps_follow_the_rule_for_any_bar_sequence(spec: list[tuple[str, int, int]]) -> None:
    bars = [Bar(symbol=s, start=T0 + timedelta(minutes=m), interval_s=i, open=D(1), high=D(1),
                low=D(1), close=D(1), volume=D(1)) for s, m, i in spec]
    v = BarValidator(SimClock(T0 + timedelta(days=2)))
    got = [(e.symbol, e.missing_bars) for b in bars for e in v.validate(b)
           if isinstance(e, DataGap)]
    assert got == _gap_reference(bars)
    for sym in ("AAPL", "MSFT"):
        good = v.last_good(sym)
        assert v.last_good_end(sym) == (good.end if good is not None else None)
