"""Bars/s of an SMA-crossover backtest over minute bars through the full engine (validator,
strategy, risk gate, execution, SimulatedBroker, projections, the log on disk), and the same
strategy on the same data in backtrader, measured in the same run; prints both and the ratio.

    python -m bench.backtest [--bars 1000000] [--repeat 1]

The data is a seeded random walk (one symbol, regular-session minutes). Both engines trade a
fixed 10 shares on each crossover of SMA(10) and SMA(30): backtrader with its defaults
(preloaded data, vectorised indicators), ours through every check and a durable log.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import emit, median

FAST, SLOW, QTY = 10, 30, 10


def write_bars(path: Path, n: int, seed: int = 42) -> None:
    rng = random.Random(seed)
    price = 10_000  # cents
    day = datetime(2015, 1, 5, 14, 30, tzinfo=UTC)
    minute = 0
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["symbol", "timestamp", "open", "high", "low", "close", "volume"])
        for _ in range(n):
            o = price
            c = max(100, o + rng.randint(-12, 12))
            h = max(o, c) + rng.randint(0, 6)
            lo = max(50, min(o, c) - rng.randint(0, 6))
            ts = day + timedelta(minutes=minute)
            w.writerow(["BENCH", ts.strftime("%Y-%m-%dT%H:%M:%SZ"), f"{o / 100:.2f}",
                        f"{h / 100:.2f}", f"{lo / 100:.2f}", f"{c / 100:.2f}",
                        1000 + rng.randint(0, 5000)])
            price = c
            minute += 1
            if minute == 390:
                minute = 0
                day += timedelta(days=3 if day.weekday() == 4 else 1)


def run_ours(data: Path, out: Path) -> tuple[float, int, int]:
    from engine.config import load_settings
    from replay.backtest import run_backtest

    assets = out.parent / "assets.csv"
    assets.write_text("symbol,tradable,fractionable,shortable\nBENCH,true,true,false\n")
    settings = load_settings(
        data_dir=out.parent, sim={"cash": "1000000", "volume_participation": "1"},
        data={"source": "csv", "path": str(data), "assets_path": str(assets)},
        strategies=({"name": "sma_crossover",
                     "params": {"fast": FAST, "slow": SLOW, "qty": QTY}},),
        risk={"max_order_notional": 100000, "max_symbol_exposure": 200000,
              "max_gross_exposure": 400000, "day_trade_mode": "off",
              "stale_after_bars": 10_000_000})
    start = time.perf_counter()
    result = asyncio.run(run_backtest(settings, data, out))
    elapsed = time.perf_counter() - start
    return result.bars / elapsed, result.bars, result.intents


def run_backtrader(data: Path) -> tuple[float, int, int]:
    import backtrader as bt
    import pandas as pd

    df = pd.read_csv(data, parse_dates=["timestamp"]).set_index("timestamp")
    df.index = df.index.tz_localize(None)
    orders = 0

    class Sma(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            fast = bt.ind.SMA(period=FAST)
            slow = bt.ind.SMA(period=SLOW)
            self.cross = bt.ind.CrossOver(fast, slow)

        def next(self) -> None:
            nonlocal orders
            if not self.position and self.cross > 0:
                self.buy(size=QTY)
                orders += 1
            elif self.position and self.cross < 0:
                self.close()
                orders += 1

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=df))
    cerebro.addstrategy(Sma)
    cerebro.broker.setcash(1_000_000)
    start = time.perf_counter()
    cerebro.run()
    elapsed = time.perf_counter() - start
    return len(df) / elapsed, len(df), orders


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    ours, theirs, ratios = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bars.csv"
        write_bars(data, args.bars)
        for r in range(args.repeat):
            o_rate, bars, o_orders = run_ours(data, Path(tmp) / f"bt-{r}.sqlite")
            t_rate, _, t_orders = run_backtrader(data)
            ours.append(o_rate)
            theirs.append(t_rate)
            ratios.append(o_rate / t_rate)
    emit("backtest", {
        "bars": bars, "engine_bars_per_s": round(median(ours)),
        "backtrader_bars_per_s": round(median(theirs)), "ratio": round(median(ratios), 2),
        "engine_intents": o_orders, "backtrader_orders": t_orders, "repeat": args.repeat,
        "target_ratio": 5.0,
    })


if __name__ == "__main__":
    main()
