"""Bars/s through BarValidator + VWAP mean reversion (via StrategyRunner): no log, no gate.

The bars are built before timing (a `Bar(...)` with its contract checks is a provider's
cost, reported separately as `bar_construct_per_s`). Per bar the timed loop does what a
replay does: move the `SimClock` to the bar's close (a no-op for the other symbols of the
same minute), validate, and run the strategies. The account and asset projections are set up so sizing runs for real; nothing answers the
intents, so the strategy also exercises its "undecided intent" path. Medians of --repeat.

Rates are per second of this process's CPU time: the loops are single-threaded, CPU-bound
and do no I/O, so on an idle machine CPU time equals wall time, while on a shared one wall
time also counts other processes' time slices. `bars_per_s_wall` is the same loop by the
wall clock, for comparison.

    python -m bench.strategy [--bars 200000] [--symbols 8] [--repeat 5]
"""

from __future__ import annotations

import argparse
import math
import random
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from bench.common import emit, median
from engine.clock import SimClock
from engine.marketdata import BarValidator
from engine.strategies import StrategyRunner, VwapMeanReversion
from events.catalogue import AccountSnapshot, AssetInfo, BarReceived
from events.market import Bar
from projections.calendar import NEW_YORK, is_business_day
from projections.state import Projections

SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "SPY", "QQQ", "TSLA", "AMD", "META", "GOOG")
FIRST_DAY = date(2026, 11, 2)


def session_starts(n_minutes: int) -> list[datetime]:
    """`n_minutes` regular-session minute starts (UTC) over consecutive NYSE days."""
    out: list[datetime] = []
    d = FIRST_DAY
    while len(out) < n_minutes:
        if is_business_day(d):
            open_ = datetime(d.year, d.month, d.day, 9, 30, tzinfo=NEW_YORK).astimezone(UTC)
            out.extend(open_ + timedelta(minutes=m) for m in range(390))
        d += timedelta(days=1)
    return out[:n_minutes]


def make_bars(n: int, n_symbols: int, seed: int = 7) -> list[Bar]:
    """Mean-reverting minute bars (as the sample data), time-major, symbols in order."""
    rng = random.Random(seed)
    syms = SYMBOLS[:n_symbols]
    starts = session_starts(math.ceil(n / n_symbols))
    state = {s: (math.log(50.0 + 40 * i), 0.0) for i, s in enumerate(syms)}
    bars: list[Bar] = []
    for t in starts:
        for s in syms:
            anchor, x = state[s]
            anchor += rng.gauss(0, 0.0003)
            x = 0.92 * x + rng.gauss(0, 0.0008)
            state[s] = (anchor, x)
            c = Decimal(f"{math.exp(anchor + x):.2f}")
            h = c + Decimal(f"{abs(rng.gauss(0, 0.03)):.2f}")
            lo = c - Decimal(f"{abs(rng.gauss(0, 0.03)):.2f}")
            bars.append(Bar(symbol=s, start=t, interval_s=60, open=c, high=h, low=lo, close=c,
                            volume=Decimal(rng.randint(500, 50_000)), vwap=c,
                            trade_count=rng.randint(5, 400), provider="bench"))
            if len(bars) == n:
                return bars
    return bars


def setup(bars: list[Bar], n_symbols: int) -> tuple[SimClock, BarValidator, StrategyRunner]:
    clock = SimClock(bars[0].start)
    proj = Projections()
    proj.apply(1, AccountSnapshot(ts=clock.now(), equity=Decimal(100_000),
                                  cash=Decimal(100_000), buying_power=Decimal(100_000)))
    for i, s in enumerate(SYMBOLS[:n_symbols]):
        proj.apply(2 + i, AssetInfo(ts=clock.now(), symbol=s, tradable=True,
                                    fractionable=i % 3 != 0, shortable=True))
    runner = StrategyRunner([VwapMeanReversion({"entry_z": 2.0})], projections=proj,
                            clock=clock)
    return clock, BarValidator(clock), runner


def run_full(bars: list[Bar], n_symbols: int) -> tuple[float, float, int]:
    """(bars per CPU second, bars per wall second, intents)."""
    clock, validator, runner = setup(bars, n_symbols)
    validate, on_bar, set_clock = validator.validate, runner.on_bar, clock.set
    step = timedelta(seconds=60)
    intents = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for b in bars:
        set_clock(b.start + step)
        for e in validate(b):
            if type(e) is BarReceived:
                intents += len(on_bar(b))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return len(bars) / cpu, len(bars) / wall, intents


def run_validator(bars: list[Bar], n_symbols: int) -> float:
    clock, validator, _ = setup(bars, n_symbols)
    clock.set(bars[-1].start + timedelta(minutes=1))
    validate = validator.validate
    t = time.process_time()
    for b in bars:
        validate(b)
    return len(bars) / (time.process_time() - t)


def run_strategy(bars: list[Bar], n_symbols: int) -> float:
    clock, _, runner = setup(bars, n_symbols)
    clock.set(bars[-1].start + timedelta(minutes=1))
    on_bar = runner.on_bar
    t = time.process_time()
    for b in bars:
        on_bar(b)
    return len(bars) / (time.process_time() - t)


def bar_construct_rate(bars: list[Bar], n: int = 50_000) -> float:
    sample = bars[:n]
    fields = [(b.symbol, b.start, b.open, b.high, b.low, b.close, b.volume, b.vwap,
               b.trade_count) for b in sample]
    t = time.process_time()
    for s, st, o, h, lo, c, v, vw, tc in fields:
        Bar(symbol=s, start=st, interval_s=60, open=o, high=h, low=lo, close=c, volume=v,
            vwap=vw, trade_count=tc, provider="bench")
    return len(fields) / (time.process_time() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=200_000)
    ap.add_argument("--symbols", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    bars = make_bars(args.bars, args.symbols)
    full, full_wall, val, strat, construct = [], [], [], [], []
    intents = 0
    for _ in range(args.repeat):
        rate, rate_wall, intents = run_full(bars, args.symbols)
        full.append(rate)
        full_wall.append(rate_wall)
        val.append(run_validator(bars, args.symbols))
        strat.append(run_strategy(bars, args.symbols))
        construct.append(bar_construct_rate(bars))
    emit("strategy", {
        "bars": len(bars),
        "symbols": args.symbols,
        "bars_per_s": round(median(full)),
        "bars_per_s_wall": round(median(full_wall)),
        "validator_only_bars_per_s": round(median(val)),
        "strategy_only_bars_per_s": round(median(strat)),
        "bar_construct_per_s": round(median(construct)),
        "intents": intents,
        "repeat": args.repeat,
        "targets": {"bars_per_s": 200_000},
    })


if __name__ == "__main__":
    main()
