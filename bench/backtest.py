"""Bars/s of one SMA(10/30), 10-share crossover backtest over minute bars through three engines
in the same run: ours (validator, strategy, risk gate with every check, execution,
SimulatedBroker, projections, the log on disk and verified), backtrader and NautilusTrader.

    python -m bench.backtest [--sizes 100000,1000000] [--repeat 3]
    pip install -e '.[bench]'   # NautilusTrader; without it the line says so and goes on

The data is a seeded random walk (one symbol, regular-session minutes), one CSV per size. Each
engine trades the same rule: on an upward cross of SMA(10) over SMA(30) (judged against the
last non-zero difference, as backtrader's CrossOver does) buy 10 shares if flat; on a
downward cross sell the position. The engines are interleaved within each repetition (so a
noisy neighbour hurts all three alike) and the figures are medians over the repetitions.

What is timed: ours end to end from the CSV file (read, validate, sort, decide, log,
flush, verify); the peers only their run over data already loaded in their own form (a
pandas frame for backtrader, nautilus `Bar` objects), which flatters them a little.

Sameness: `agree` says every engine sent the same number of orders for the same net shares
(and every repetition traded alike). Filled orders and final positions are reported too;
they may differ by the last order, and fill prices are not compared, because the engines
fill at different times by design (ours and backtrader at the next bar's open,
NautilusTrader on the bar the order was sent). The float engines treat averages closer than
`TIE` as equal, as our exact (Decimal) comparison does.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import random
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.common import emit, median

FAST, SLOW, QTY = 10, 30, 10
SYMBOL = "BENCH"
DEFAULT_SIZES = (100_000, 1_000_000)


# Averages of cent prices closer than this are a tie for the float engines (their rounding
# noise, ~1e-14, must not decide a cross that exact arithmetic calls a tie).
TIE = 1e-9


class Cross:
    """The peers' crossing rule, the same for both: the sign of fast - slow with differences
    under `TIE` taken as a tie (no sign, no cross); +1 / -1 when the sign flips up / down from
    an earlier sign, else 0."""

    def __init__(self) -> None:
        self.last = 0

    def __call__(self, diff: float) -> int:
        sign = 0 if abs(diff) < TIE else (1 if diff > 0 else -1)
        if sign == 0:
            return 0
        prev, self.last = self.last, sign
        return 0 if prev in (0, sign) else sign


@dataclass(frozen=True)
class Run:
    bars_per_s: float
    bars: int
    orders: int  # orders sent
    net_ordered: int  # signed shares over all orders sent
    fills: int  # orders filled
    position: int  # final position in shares

    def trades(self) -> dict[str, int]:
        return {"orders": self.orders, "net_ordered": self.net_ordered, "fills": self.fills,
                "position": self.position}

    def same_orders(self) -> tuple[int, int]:
        return self.orders, self.net_ordered


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
            w.writerow([SYMBOL, ts.strftime("%Y-%m-%dT%H:%M:%SZ"), f"{o / 100:.2f}",
                        f"{h / 100:.2f}", f"{lo / 100:.2f}", f"{c / 100:.2f}",
                        1000 + rng.randint(0, 5000)])
            price = c
            minute += 1
            if minute == 390:
                minute = 0
                day += timedelta(days=3 if day.weekday() == 4 else 1)


# --- ours ------------------------------------------------------------------------------------

async def filled_orders(log: Path) -> int:
    """How many orders the log holds a fill for."""
    from events.store import LogReader
    async with LogReader(log) as r:
        return len({getattr(e, "client_order_id", None)
                    async for _, e in r.read(types=("fill",))})


def run_ours(data: Path, out: Path) -> Run:
    from engine.config import load_settings
    from engine.rebuild import rebuild_from_path
    from projections.positions import position_qty
    from replay.backtest.driver import run_backtest

    assets = out.parent / "assets.csv"
    assets.write_text(f"symbol,tradable,fractionable,shortable\n{SYMBOL},true,true,false\n")
    settings = load_settings(
        data_dir=out.parent, sim={"cash": "1000000", "volume_participation": "1"},
        data={"source": "csv", "path": str(data), "assets_path": str(assets)},
        # No protective stop legs: the peers' rule has none, and the work must be the same.
        strategies=({"name": "sma_crossover",
                     "params": {"fast": FAST, "slow": SLOW, "qty": QTY, "protect": False}},),
        risk={"max_order_notional": 100000, "max_symbol_exposure": 200000,
              "max_gross_exposure": 400000, "day_trade_mode": "off",
              "stale_after_bars": 10_000_000})
    start = time.perf_counter()
    result = asyncio.run(run_backtest(settings, data, out))
    elapsed = time.perf_counter() - start
    # Outside the timing: what the log says was traded.
    fills = asyncio.run(filled_orders(out))
    proj = asyncio.run(rebuild_from_path(out))
    orders = list(proj.orders.orders.values())
    net = sum((o.qty or 0) * (1 if o.side == "buy" else -1) for o in orders)
    pos = position_qty(proj.positions, SYMBOL)
    return Run(result.bars / elapsed, result.bars, len(orders), int(net), int(fills), int(pos))


# --- backtrader ------------------------------------------------------------------------------

def load_frame(data: Path) -> Any:
    import pandas as pd

    df = pd.read_csv(data, parse_dates=["timestamp"]).set_index("timestamp")
    return df[["open", "high", "low", "close", "volume"]]


def run_backtrader(frame: Any) -> Run:
    import backtrader as bt

    df = frame.copy()
    df.index = df.index.tz_localize(None)
    fills = orders = net = 0

    class Sma(bt.Strategy):  # type: ignore[misc]
        # bt.ind.CrossOver would do, but judges float noise around a tie as a cross.
        def __init__(self) -> None:
            self.fast = bt.ind.SMA(period=FAST)
            self.slow = bt.ind.SMA(period=SLOW)
            self.cross = Cross()

        def notify_order(self, order: Any) -> None:
            nonlocal fills
            if order.status == order.Completed:
                fills += 1

        def next(self) -> None:
            nonlocal orders, net
            sign = self.cross(self.fast[0] - self.slow[0])
            if sign > 0 and not self.position:
                self.buy(size=QTY)
                orders, net = orders + 1, net + QTY
            elif sign < 0 and self.position:
                net -= self.position.size
                orders += 1
                self.close()

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=df))
    cerebro.addstrategy(Sma)
    cerebro.broker.setcash(1_000_000)
    start = time.perf_counter()
    strat = cerebro.run()[0]
    elapsed = time.perf_counter() - start
    return Run(len(df) / elapsed, len(df), orders, int(net), fills, int(strat.position.size))


# --- NautilusTrader --------------------------------------------------------------------------

def nautilus_version() -> str | None:
    try:
        import nautilus_trader
    except ImportError:
        return None
    return str(nautilus_trader.__version__)


def run_nautilus(frame: Any) -> Run:
    """The same rule against NautilusTrader's Strategy API, on its BacktestEngine with a
    simulated cash venue and 1-minute last-price bars (stamped at their close, its
    convention)."""
    from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
    from nautilus_trader.config import LoggingConfig, StrategyConfig
    from nautilus_trader.indicators import SimpleMovingAverage
    from nautilus_trader.model.currencies import USD
    from nautilus_trader.model.data import Bar, BarType
    from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
    from nautilus_trader.model.events import OrderFilled
    from nautilus_trader.model.identifiers import InstrumentId, Symbol, TraderId, Venue
    from nautilus_trader.model.instruments import Equity
    from nautilus_trader.model.objects import Money, Price, Quantity
    from nautilus_trader.persistence.wranglers import BarDataWrangler
    from nautilus_trader.trading.strategy import Strategy

    venue = Venue("XNAS")
    instrument = Equity(
        instrument_id=InstrumentId(Symbol(SYMBOL), venue), raw_symbol=Symbol(SYMBOL),
        currency=USD, price_precision=2, price_increment=Price.from_str("0.01"),
        lot_size=Quantity.from_int(1), ts_event=0, ts_init=0)
    bar_type = BarType.from_str(f"{instrument.id}-1-MINUTE-LAST-EXTERNAL")
    df = frame.copy()
    df.index = df.index + timedelta(minutes=1)
    bars = BarDataWrangler(bar_type, instrument).process(df)

    class SmaConfig(StrategyConfig, frozen=True):
        instrument_id: InstrumentId
        bar_type: BarType

    class SmaCross(Strategy):  # type: ignore[misc]
        def __init__(self, config: SmaConfig) -> None:
            super().__init__(config)
            self.fast = SimpleMovingAverage(FAST)
            self.slow = SimpleMovingAverage(SLOW)
            self.cross = Cross()
            self.fills = self.orders = self.net = 0
            self.qty = Quantity.from_int(QTY)

        def on_start(self) -> None:
            self.register_indicator_for_bars(self.config.bar_type, self.fast)
            self.register_indicator_for_bars(self.config.bar_type, self.slow)
            self.subscribe_bars(self.config.bar_type)

        def on_bar(self, bar: Bar) -> None:
            if not self.slow.initialized:
                return
            sign = self.cross(self.fast.value - self.slow.value)
            iid = self.config.instrument_id
            if sign > 0 and self.portfolio.is_flat(iid):
                self.submit_order(self.order_factory.market(iid, OrderSide.BUY, self.qty))
                self.orders, self.net = self.orders + 1, self.net + QTY
            elif sign < 0 and self.portfolio.is_net_long(iid):
                held = int(Decimal(str(self.portfolio.net_position(iid))))
                self.submit_order(self.order_factory.market(
                    iid, OrderSide.SELL, Quantity.from_int(held)))
                self.orders, self.net = self.orders + 1, self.net - held

        def on_order_filled(self, event: OrderFilled) -> None:
            self.fills += 1

    engine = BacktestEngine(BacktestEngineConfig(
        trader_id=TraderId("BENCH-001"), logging=LoggingConfig(log_level="ERROR")))
    engine.add_venue(venue=venue, oms_type=OmsType.NETTING, account_type=AccountType.CASH,
                     base_currency=USD, starting_balances=[Money(1_000_000, USD)])
    engine.add_instrument(instrument)
    engine.add_data(bars)
    strategy = SmaCross(SmaConfig(instrument_id=instrument.id, bar_type=bar_type))
    engine.add_strategy(strategy)
    start = time.perf_counter()
    engine.run()
    elapsed = time.perf_counter() - start
    net = engine.portfolio.net_position(instrument.id)
    run = Run(len(bars) / elapsed, len(bars), strategy.orders, strategy.net, strategy.fills,
              int(Decimal(str(net))))
    engine.dispose()
    return run


# --- the run ---------------------------------------------------------------------------------

def measure(sizes: list[int], repeat: int, tmp: Path) -> dict[str, Any]:
    have_nautilus = nautilus_version() is not None
    engines = ["ours", "backtrader"] + (["nautilus"] if have_nautilus else [])
    out: dict[str, Any] = {}
    for n in sizes:
        data = tmp / f"bars-{n}.csv"
        write_bars(data, n)
        frame = load_frame(data)
        runs: dict[str, list[Run]] = {e: [] for e in engines}
        for r in range(repeat):
            for e in engines:
                gc.collect()
                if e == "ours":
                    runs[e].append(run_ours(data, tmp / f"bt-{n}-{r}.sqlite"))
                elif e == "backtrader":
                    runs[e].append(run_backtrader(frame))
                else:
                    runs[e].append(run_nautilus(frame))
        rates = {e: round(median([x.bars_per_s for x in rs])) for e, rs in runs.items()}
        trades = {e: rs[0].trades() for e, rs in runs.items()}
        # Same input, same rule: every repetition of an engine must trade alike, and the
        # engines must send the same orders. Fills and positions at the end may differ by the
        # last order: NautilusTrader fills it on the bar it was sent, the others on the next.
        stable = all(x.trades() == rs[0].trades() for rs in runs.values() for x in rs)
        agree = stable and len({rs[0].same_orders() for rs in runs.values()}) == 1
        size: dict[str, Any] = {"bars": runs["ours"][0].bars, "bars_per_s": rates,
                                "trades": trades, "agree": agree}
        size["ours_over_backtrader"] = round(rates["ours"] / rates["backtrader"], 2)
        if have_nautilus:
            size["ours_over_nautilus"] = round(rates["ours"] / rates["nautilus"], 2)
        out[str(n)] = size
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES),
                    help="bar counts, comma-separated (default: 100000,1000000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per engine and size")
    args = ap.parse_args()
    try:
        sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--sizes takes bar counts like 100000,1000000, got {args.sizes!r}")
    if not sizes or min(sizes) < SLOW + 1 or args.repeat < 1:
        ap.error(f"--sizes must each be more than {SLOW} bars and --repeat at least 1")
    version = nautilus_version()
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(sizes, args.repeat, Path(tmp))
    extra: dict[str, Any] = {}
    if len(sizes) > 1:
        # Does our rate hold as the run grows? (the target: the largest within 10% of the
        # smallest)
        lo, hi = figures[str(min(sizes))], figures[str(max(sizes))]
        extra["ours_largest_over_smallest"] = round(
            hi["bars_per_s"]["ours"] / lo["bars_per_s"]["ours"], 2)
    emit("backtest", {
        "repeat": args.repeat, "sizes": figures,
        "nautilus": version or "not installed (pip install -e '.[bench]')",
        "agree": all(s["agree"] for s in figures.values()), **extra,
        "target": {"ours_over_nautilus": 2.0, "ours_over_backtrader": 3.0,
                   "1m_within_100k": 0.10},
    })


if __name__ == "__main__":
    main()
