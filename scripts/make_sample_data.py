"""Generate the synthetic sample bars shipped in engine/sample_data/ (seeded, reproducible).

    python scripts/make_sample_data.py [--seed 20261028] [--out-dir engine/sample_data]

What it makes (see engine/sample_data/README.md):
- 1-minute regular-session bars, 09:30-16:00 New York, for 5 symbols over 5 NYSE trading
  days starting 2026-10-28. US daylight saving time ends on 2026-11-01, inside the range, so
  the session opens at 13:30 UTC for the first three days and at 14:30 UTC after.
- prices: a slow random walk with drift (the "anchor") plus fast mean-reverting noise (an
  Ornstein-Uhlenbeck process in log price, half-life ~8 minutes) and rare shocks that revert,
  so price keeps crossing its session VWAP and VWAP mean reversion has something to trade.
  Volatility and volume are U-shaped over the day (busy open and close, quiet lunch).
- each bar: OHLC from a few intra-minute points, volume, a VWAP inside [low, high] and a
  trade count; prices in cents, VWAP to 4 decimals.
- assets.csv: eligibility flags. SPY is priced around $600 (a $200 account cannot buy one
  share) and F is marked non-fractionable.

The simulation itself uses floats (it is a random model, not money); every number is
written as fixed-point text and read back by the engine as Decimal. The same seed gives
byte-identical files on the same Python version.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(ROOT))

from engine.marketdata.csv_io import write_bars_csv
from events.market import Bar
from projections.calendar import NEW_YORK, business_days_from

DEFAULT_SEED = 20261028
FIRST_DAY = date(2026, 10, 28)
DAYS = 5
SESSION_MINUTES = 390  # 09:30-16:00


@dataclass(frozen=True)
class SymbolSpec:
    symbol: str
    price: float  # first open
    drift_per_day: float  # expected log return per day
    anchor_vol: float  # per-minute st.dev. of the slow walk (log)
    noise_vol: float  # per-minute st.dev. of the OU innovations (log)
    theta: float  # OU mean-reversion speed per minute
    base_volume: float  # shares per minute at midday
    trade_size: float  # average shares per trade
    tradable: bool = True
    fractionable: bool = True
    shortable: bool = True


SYMBOLS = (
    SymbolSpec("AAPL", 190.00, 0.0008, 0.00035, 0.0006, 0.08, 9_000, 90),
    SymbolSpec("AMD", 140.00, -0.0010, 0.00055, 0.0009, 0.07, 7_000, 110),
    SymbolSpec("F", 11.50, 0.0002, 0.00040, 0.0007, 0.09, 25_000, 300,
               fractionable=False, shortable=False),
    SymbolSpec("MSFT", 420.00, 0.0005, 0.00030, 0.0005, 0.08, 4_000, 60),
    SymbolSpec("SPY", 600.00, 0.0003, 0.00020, 0.0004, 0.10, 12_000, 150),
)


def session_start_utc(day: date) -> datetime:
    return datetime.combine(day, time(9, 30), tzinfo=NEW_YORK).astimezone(UTC)


def u_shape(minute: int) -> float:
    """Intraday activity: ~3.5x at the open, ~2.5x into the close, 1x at lunch."""
    return (1.0 + 2.5 * math.exp(-minute / 20.0)
            + 1.5 * math.exp(-(SESSION_MINUTES - 1 - minute) / 25.0))


def cents(x: float) -> Decimal:
    return Decimal(f"{x:.2f}")


def simulate(spec: SymbolSpec, days: list[date], rng: random.Random) -> list[Bar]:
    bars: list[Bar] = []
    anchor = math.log(spec.price)
    x = 0.0  # mean-reverting deviation from the anchor, in log price
    prev_close = spec.price
    mu = spec.drift_per_day / SESSION_MINUTES
    for day_no, day in enumerate(days):
        open_utc = session_start_utc(day)
        if day_no:
            anchor += rng.gauss(0.0, 0.006)  # overnight gap
            x *= 0.3
        for m in range(SESSION_MINUTES):
            act = u_shape(m)
            vol_mult = math.sqrt(act)
            anchor += mu + rng.gauss(0.0, spec.anchor_vol * vol_mult)
            x = (1.0 - spec.theta) * x + rng.gauss(0.0, spec.noise_vol * vol_mult)
            if rng.random() < 0.012:  # a shock that the OU pull then undoes
                x += rng.choice((-1.0, 1.0)) * rng.uniform(3.0, 6.0) * spec.noise_vol * 3
            close = math.exp(anchor + x)
            open_ = prev_close if m else math.exp(anchor + x * 0.5)
            path = [open_ + (close - open_) * k / 5 + rng.gauss(0.0, close * spec.noise_vol * 0.6)
                    for k in range(1, 5)]
            o, c = cents(open_), cents(close)
            h = max(o, c, cents(max(path)))
            lo = min(o, c, cents(min(path)))
            ret = abs(math.log(close / open_)) / (spec.noise_vol * vol_mult)
            volume = max(100, int(spec.base_volume * act * rng.lognormvariate(0.0, 0.35)
                                  * (1.0 + 0.5 * min(ret, 4.0))))
            vw = (float(o) + float(h) + float(lo) + float(c) + sum(path)) / (4 + len(path))
            vwap = min(max(Decimal(f"{vw:.4f}"), lo), h)
            trades = max(1, round(volume / spec.trade_size * rng.lognormvariate(0.0, 0.2)))
            bars.append(Bar(symbol=spec.symbol, start=open_utc + timedelta(minutes=m),
                            interval_s=60, open=o, high=h, low=lo, close=c,
                            volume=Decimal(volume), vwap=vwap, trade_count=trades,
                            provider="sample"))
            prev_close = float(c)
    return bars


def generate(seed: int = DEFAULT_SEED, first_day: date = FIRST_DAY,
             n_days: int = DAYS) -> list[Bar]:
    days = business_days_from(first_day, n_days)
    rng = random.Random(seed)
    bars: list[Bar] = []
    for spec in SYMBOLS:  # one stream of random numbers, symbols in a fixed order
        bars.extend(simulate(spec, days, rng))
    bars.sort(key=lambda b: (b.start, b.symbol))
    return bars


def write_assets(path: Path) -> None:
    lines = ["symbol,tradable,fractionable,shortable"]
    for s in SYMBOLS:
        lines.append(f"{s.symbol},{str(s.tradable).lower()},{str(s.fractionable).lower()},"
                     f"{str(s.shortable).lower()}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "engine" / "sample_data")
    ap.add_argument("--first-day", type=date.fromisoformat, default=FIRST_DAY)
    ap.add_argument("--days", type=int, default=DAYS)
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    bars = generate(args.seed, args.first_day, args.days)
    n = write_bars_csv(args.out_dir / "bars.csv", bars)
    write_assets(args.out_dir / "assets.csv")
    print(f"wrote {n} bars for {len(SYMBOLS)} symbols to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
