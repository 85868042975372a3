"""VWAP mean reversion on constructed series: the exact bars, prices and ids it trades."""

from __future__ import annotations

from contextlib import aclosing
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from engine.clock import SimClock
from engine.marketdata import (
    BarValidator,
    CsvBarProvider,
    read_assets_csv,
    sample_assets_path,
    sample_bars_path,
)
from engine.strategies import StrategyRunner, VwapMeanReversion
from events.catalogue import OrderIntent
from events.market import Bar

from .helpers import Book, drive, mkbar, ny

D = Decimal
QUIET = ["100.00", "100.02", "100.00", "100.02", "100.00"]  # fills a 5-bar window
P = {"window": 5, "entry_z": 1.5}


def stop_of(o: OrderIntent) -> Decimal | None:
    """The entry's stop: its stop-loss leg (protected, whole shares) or its planning stop."""
    return o.stop_loss.stop_price if o.stop_loss is not None else o.stop_price


def series(closes: list[Any], start: tuple[int, int] = (10, 0), symbol: str = "AAPL"
           ) -> list[Bar]:
    t0 = ny(*start)
    out = []
    for i, c in enumerate(closes):
        t = t0 + timedelta(minutes=i)
        out.append(c if isinstance(c, Bar) else mkbar(symbol, t, c))
    return out


def run(params: dict, bars: list[Bar], *, cash: str = "10000", fractionable: bool = True
        ) -> tuple[list[tuple[int, OrderIntent]], Book]:
    clock = SimClock(ny(9, 0))
    book = Book(clock)
    book.account(cash)
    for sym in {b.symbol for b in bars}:
        book.asset(sym, fractionable=fractionable)
    runner = StrategyRunner([VwapMeanReversion(params)], projections=book.proj, clock=clock)
    out = drive(bars, runner, book, BarValidator(clock))
    assert runner.paused() == {}
    return out, book


def brief(out: list[tuple[int, OrderIntent]]) -> list[tuple]:
    return [(i, o.intent_id, o.side, o.qty, o.notional, stop_of(o), o.reduce_only)
            for i, o in out]


def test_entry_below_vwap_and_exit_on_reversion():
    bars = series(QUIET + ["99.50", "99.60", "99.90", "100.05", "100.04"])
    out, book = run(P, bars)
    assert brief(out) == [
        # 10:05 NY = 15:05 UTC: z = -1.79 <= -1.5 -> buy 10% of $10,000, stop 1% below close
        (5, "vwap_mean_reversion:AAPL:20261123T1505:0", "buy", None, D("1000.00"), D("98.50"),
         False),
        # filled at the next open (99.60); z back above 0 at 10:07 -> sell it all
        (7, "vwap_mean_reversion:AAPL:20261123T1507:0", "sell", D("10.040160642"), None, None,
         True),
    ]
    entry, exit_ = out[0][1], out[1][1]
    assert entry.allow_notional and entry.order_type == "market"
    assert entry.reason == "z=-1.79 close=99.50 vwap=99.92"
    assert entry.signal_time == bars[5].end and entry.ts == bars[5].end
    assert exit_.reason == "reverted: z=0.77"
    assert book.proj.positions.positions["AAPL"].qty == 0


def test_stop_exit_when_a_low_touches_the_stop():
    bars = series(QUIET + ["99.50"])
    bars.append(mkbar("AAPL", ny(10, 6), "99.00", open_="99.60", low="98.60"))  # stop 98.604
    out, _ = run(P, bars)
    assert brief(out)[1] == (6, "vwap_mean_reversion:AAPL:20261123T1506:0", "sell",
                             D("10.040160642"), None, None, True)
    assert out[1][1].reason == "stop: low 98.60 <= 98.60"


def test_flat_by_the_close_and_no_entries_after_last_entry():
    falling = [str(D("99.50") - D("0.05") * k) for k in range(1, 21)]
    bars = series(QUIET + ["99.50"] + falling, start=(15, 30))
    out, _ = run({**P, "stop_pct": 5}, bars)
    assert [(i, o.intent_id, o.side, o.notional, o.qty, o.reason.split(":")[0])
            for i, o in out] == [  # 15:30 NY = 20:30 UTC
        (5, "vwap_mean_reversion:AAPL:20261123T2035:0", "buy", D("1000.00"), None,
         "z=-1.79 close=99.50 vwap=99.92"),
        (9, "vwap_mean_reversion:AAPL:20261123T2039:0", "sell", None, D("10.055304172"),
         "reverted"),
        # re-entry with equity after the small loss; 15:54's bar closes at 15:55 -> flat
        (10, "vwap_mean_reversion:AAPL:20261123T2040:0", "buy", D("999.79"), None,
         "z=-1.51 close=99.25 vwap=99.66"),
        (24, "vwap_mean_reversion:AAPL:20261123T2054:0", "sell", None, D("10.078528225"),
         "flat by the close"),
    ]
    late = series(QUIET + ["99.50", "99.60"], start=(15, 41))  # the drop closes at 15:47
    assert run(P, late)[0] == []


def test_short_side_is_off_by_default_and_uses_whole_shares():
    bars = series(QUIET + ["100.50", "100.45", "100.00"])
    assert run(P, bars)[0] == []
    out, _ = run({**P, "allow_short": True}, bars)
    assert brief(out) == [
        (5, "vwap_mean_reversion:AAPL:20261123T1505:0", "sell", D(9), None, D("101.51"), False),
        (7, "vwap_mean_reversion:AAPL:20261123T1507:0", "buy", D(9), None, None, True),
    ]


def test_non_fractionable_symbol_gets_whole_shares_or_nothing():
    bars = series(QUIET + ["99.50", "99.60", "99.90"])
    out, _ = run(P, bars, fractionable=False)
    assert out[0][1].qty == D(10) and out[0][1].notional is None  # floor(1000 / 99.50)
    assert run(P, bars, cash="500", fractionable=False)[0] == []  # $50 buys no $99.50 share


def test_ignores_symbols_it_was_not_configured_for():
    bars = series(QUIET + ["99.50", "99.60"])
    assert run({**P, "symbols": ["MSFT"]}, bars)[0] == []
    strategy = VwapMeanReversion({**P, "symbols": ["MSFT"]})
    assert strategy.on_bar(bars[0], None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(("gate", "entry_bars"), [
    ("silent", [4, 8, 12, 16]),  # undecided: wait pending_timeout_bars (3), then give up
    ("approves", [4]),  # an open order at the broker: wait as long as it is open
    ("rejects", list(range(4, 17))),  # refused: free to try again on the next bar
])
def test_no_new_entry_while_the_last_intent_is_undecided(gate, entry_bars):
    clock = SimClock(ny(9, 0))
    book = Book(clock)
    book.account("10000")
    book.asset("AAPL")
    runner = StrategyRunner([VwapMeanReversion({**P, "entry_z": 1, "pending_timeout_bars": 3})],
                            projections=book.proj, clock=clock)
    falling = [str(D("99.50") - D("0.30") * k) for k in range(12)]  # z stays below -1
    produced = []
    for i, b in enumerate(series(QUIET + falling)):
        clock.set(b.end)
        for intent in runner.on_bar(b):
            produced.append(i)
            if gate == "approves":
                book.approve(intent, b.close)
            elif gate == "rejects":
                book.reject(intent)
    assert produced == entry_bars


async def test_trades_the_sample_data_deterministically():
    async with aclosing(CsvBarProvider(sample_bars_path()).stream()) as items:
        bars = [b async for b in items]

    def once() -> list[tuple]:
        clock = SimClock(bars[0].start)
        book = Book(clock)
        book.account("200")
        for a in read_assets_csv(sample_assets_path(), clock.now()):
            book.apply(a)
        runner = StrategyRunner([VwapMeanReversion({"entry_z": 2.0})], projections=book.proj,
                                clock=clock)
        return [(i, o.intent_id, o.side, o.qty, o.notional, stop_of(o), o.reason)
                for i, o in drive(bars, runner, book, BarValidator(clock))]

    first = once()
    assert first == once()  # same input, same intents
    entries = [x for x in first if x[2] == "buy"]
    exits = [x for x in first if x[2] == "sell"]
    assert len(entries) >= 20 and len(exits) == len(entries)
    for x in first:
        assert all(v is None or isinstance(v, Decimal) for v in x[3:6])
    # with ~$200 equity, 10% buys one whole F share (non-fractionable, ~$11.50) and a
    # ~$20 notional slice of SPY (~$600 a share)
    f_entries = [x for x in entries if ":F:" in x[1]]
    spy_entries = [x for x in entries if ":SPY:" in x[1]]
    assert f_entries and all(x[3] == D(1) and x[4] is None for x in f_entries)
    assert spy_entries and all(x[3] is None and D(19) < x[4] < D(21) for x in spy_entries)
    # strictly alternating per symbol: never a second position in the same symbol
    for sym in ("AAPL", "AMD", "F", "MSFT", "SPY"):
        sides = [x[2] for x in first if f":{sym}:" in x[1]]
        assert sides == ["buy", "sell"] * (len(sides) // 2)


@pytest.mark.parametrize("bad", [
    {"entry_z": 0}, {"window": 2}, {"stop_pct": 0}, {"notional_fraction": 2},
    {"last_entry": "15:58"},
])
def test_params_are_validated(bad):
    from engine.strategies import StrategyConfigError

    with pytest.raises(StrategyConfigError):
        VwapMeanReversion(bad)
