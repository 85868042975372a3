"""An independent check: the project's SMA crossover through the full engine against the same
rules in backtrader, trade for trade.

Settings match backtrader's default fill rule: a market order fills at the next bar's open
(ours: next bar's open, no slippage, no fees, no volume cap in the way, and gtc orders so a
signal on a session's last bar fills at the next session's open as backtrader's would).
Backtrader's SMAs are floats and ours exact, so a signal on a bar where the two averages are
within float noise of a tie may go either way: trades with an entry or exit signal there are
left out of the comparison on both sides (there must be few), every other trade must match
in symbol, entry and exit time and price.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_settings
from events.catalogue import FillReceived
from events.store import LogReader
from projections.calendar import NEW_YORK, is_business_day
from replay.backtest.driver import run_backtest

bt = pytest.importorskip("backtrader")
pd = pytest.importorskip("pandas")

D = Decimal
FAST, SLOW, QTY = 5, 20, 10
SYMBOLS = ("AAA", "BBB")
TIE = 1e-9  # |fast - slow| / price below this is float noise, not a signal


@dataclass(frozen=True)
class Row:
    symbol: str
    start: datetime
    o: Decimal
    h: Decimal
    lo: Decimal
    c: Decimal
    v: int


def sessions(first: date, n: int) -> list[date]:
    out, d = [], first
    while len(out) < n:
        if is_business_day(d):
            out.append(d)
        d += timedelta(days=1)
    return out


def random_walk(symbol: str, starts: list[datetime], rng: random.Random) -> list[Row]:
    price = rng.randint(4000, 9000)  # cents
    rows = []
    for t in starts:
        o = price
        c = max(100, o + rng.randint(-15, 15))
        h = max(o, c) + rng.randint(0, 5)
        lo = max(50, min(o, c) - rng.randint(0, 5))
        rows.append(Row(symbol, t, D(o) / 100, D(h) / 100, D(lo) / 100, D(c) / 100,
                        1000 + rng.randint(0, 4000)))
        price = c
    return rows


def minute_rows(seed: int, days: int = 5) -> dict[str, list[Row]]:
    rng = random.Random(seed)
    starts = [datetime.combine(d, time(9, 30), tzinfo=NEW_YORK).astimezone(UTC)
              + timedelta(minutes=m) for d in sessions(date(2026, 11, 2), days) for m in range(390)]
    return {s: random_walk(s, starts, rng) for s in SYMBOLS}


def daily_rows(seed: int, days: int = 1000) -> dict[str, list[Row]]:
    """Daily bars: each row is a session, stamped (in the file) with its date only; the
    engine reads that as the session from 09:30 New York, so the rows here start there."""
    rng = random.Random(seed)
    starts = [datetime.combine(d, time(9, 30), tzinfo=NEW_YORK).astimezone(UTC)
              for d in sessions(date(2023, 1, 3), days)]
    return {s: random_walk(s, starts, rng) for s in SYMBOLS}


def write_csv(path: Path, by_symbol: dict[str, list[Row]], *, grouped: bool,
              date_only: bool = False) -> None:
    rows = [r for s in SYMBOLS for r in by_symbol[s]]  # all of one symbol, then the other
    if not grouped:
        rows.sort(key=lambda r: (r.start, r.symbol))
    lines = ["symbol,timestamp,open,high,low,close,volume"]
    for r in rows:
        ts = r.start.astimezone(NEW_YORK).date().isoformat() if date_only \
            else r.start.strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f"{r.symbol},{ts},{r.o},{r.h},{r.lo},{r.c},{r.v}")
    path.write_text("\n".join(lines) + "\n")


# --- the two engines ------------------------------------------------------------------------

Trade = tuple[str, datetime, Decimal, datetime | None, Decimal | None]  # sym, in, px, out, px


def pair(fills: list[tuple[str, datetime, str, Decimal]]) -> list[Trade]:
    """Fills (symbol, bar start, side, price) to long round trips."""
    open_: dict[str, tuple[datetime, Decimal]] = {}
    out: list[Trade] = []
    for sym, t, side, px in fills:
        if side == "buy":
            assert sym not in open_, f"{sym}: a second entry while long at {t}"
            open_[sym] = (t, px)
        else:
            t0, p0 = open_.pop(sym)
            out.append((sym, t0, p0, t, px))
    out += [(s, t0, p0, None, None) for s, (t0, p0) in open_.items()]
    return sorted(out, key=lambda x: (x[1], x[0]))


async def ours(tmp: Path, data: Path) -> list[Trade]:
    assets = tmp / "assets.csv"
    assets.write_text("symbol,tradable,fractionable,shortable\n"
                      + "".join(f"{s},true,false,false\n" for s in SYMBOLS))
    settings = load_settings(
        data_dir=tmp, sim={"cash": "1000000", "slippage_bps": "0", "volume_participation": "1"},
        data={"assets_path": str(assets)},
        strategies=({"name": "sma_crossover", "params": {
            "fast": FAST, "slow": SLOW, "qty": str(QTY), "time_in_force": "gtc"}},),
        risk={"max_order_notional": 100000, "max_symbol_exposure": 200000,
              "max_gross_exposure": 400000, "max_orders_per_minute": 1000,
              "day_trade_mode": "off", "stale_after_bars": 5})
    res = await run_backtest(settings, data, tmp / "ours.sqlite")
    fills = []
    async with LogReader(res.log_path) as r:
        async for _, e in r.read(types=("fill",)):
            if isinstance(e, FillReceived):
                assert e.qty == QTY and e.order_done
                fills.append((e.symbol, e.broker_time, e.side, e.price))
    return pair(fills)


def theirs(by_symbol: dict[str, list[Row]]) -> list[Trade]:
    fills: list[tuple[str, datetime, str, Decimal]] = []

    class Sma(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            self.cross = {d._name: bt.ind.CrossOver(bt.ind.SMA(d.close, period=FAST),
                                                    bt.ind.SMA(d.close, period=SLOW))
                          for d in self.datas}

        def notify_order(self, order: Any) -> None:
            if order.status == order.Completed:
                when = bt.num2date(order.executed.dt).replace(tzinfo=UTC)
                fills.append((order.data._name, when, "buy" if order.isbuy() else "sell",
                              D(str(round(order.executed.price, 4)))))

        def next(self) -> None:
            for d in self.datas:
                cross = self.cross[d._name][0]
                pos = self.getposition(d).size
                if not pos and cross > 0:
                    self.buy(data=d, size=QTY)
                elif pos and cross < 0:
                    self.close(data=d)

    cerebro = bt.Cerebro(stdstats=False)
    for sym in SYMBOLS:
        rows = by_symbol[sym]
        df = pd.DataFrame({"open": [float(r.o) for r in rows], "high": [float(r.h) for r in rows],
                           "low": [float(r.lo) for r in rows], "close": [float(r.c) for r in rows],
                           "volume": [r.v for r in rows]},
                          index=pd.DatetimeIndex([r.start.replace(tzinfo=None) for r in rows]))
        cerebro.adddata(bt.feeds.PandasData(dataname=df), name=sym)
    cerebro.addstrategy(Sma)
    cerebro.broker.setcash(1_000_000)
    cerebro.run()
    fills.sort(key=lambda f: (f[1], f[0]))
    return pair(fills)


# --- ties -----------------------------------------------------------------------------------

def noisy_signal_bars(by_symbol: dict[str, list[Row]]) -> set[tuple[str, datetime]]:
    """(symbol, start of the bar after) for every bar where the exact averages are within
    float noise of each other: an order placed on such a bar fills on the next one."""
    out = set()
    for sym, rows in by_symbol.items():
        closes = [r.c for r in rows]
        for i in range(SLOW - 1, len(rows) - 1):
            fast = sum(closes[i - FAST + 1: i + 1]) / FAST
            slow = sum(closes[i - SLOW + 1: i + 1]) / SLOW
            if abs(float(fast - slow)) <= TIE * float(closes[i]):
                out.add((sym, rows[i + 1].start))
    return out


def compare(a: list[Trade], b: list[Trade], noisy: set[tuple[str, datetime]]) -> None:
    def clean(ts: list[Trade]) -> list[Trade]:
        return [t for t in ts if (t[0], t[1]) not in noisy
                and (t[3] is None or (t[0], t[3]) not in noisy)]

    ca, cb = clean(a), clean(b)
    assert len(ca) >= 50, f"too few trades to compare ({len(ca)})"
    assert len(a) - len(ca) <= max(2, len(a) // 20), "too many trades left out as ties"
    mismatched = [(x, y) for x, y in zip(ca, cb, strict=False) if x != y]
    assert ca == cb, f"{len(ca)} vs {len(cb)} trades; first differences: {mismatched[:3]}"


async def test_sma_crossover_matches_backtrader_on_sorted_minute_bars(tmp_path: Path) -> None:
    rows = minute_rows(seed=12)
    data = tmp_path / "bars.csv"
    write_csv(data, rows, grouped=False)
    compare(await ours(tmp_path, data), theirs(rows), noisy_signal_bars(rows))


async def test_sma_crossover_matches_backtrader_on_rows_grouped_by_symbol(
        tmp_path: Path) -> None:
    """All of AAA's rows, then all of BBB's, as many exports write them."""
    rows = minute_rows(seed=21)
    data = tmp_path / "grouped.csv"
    write_csv(data, rows, grouped=True)
    assert data.read_text().splitlines()[1].startswith("AAA,")
    assert data.read_text().splitlines()[-1].startswith("BBB,")
    compare(await ours(tmp_path, data), theirs(rows), noisy_signal_bars(rows))


async def test_sma_crossover_matches_backtrader_on_date_only_daily_bars(tmp_path: Path) -> None:
    """Daily bars stamped with a date only (as Yahoo or Stooq export them), grouped by symbol:
    a signal at a session's close fills at the next session's open, in both."""
    rows = daily_rows(seed=33)
    data = tmp_path / "daily.csv"
    write_csv(data, rows, grouped=True, date_only=True)
    assert data.read_text().splitlines()[1].split(",")[1] == "2023-01-03"
    compare(await ours(tmp_path, data), theirs(rows), noisy_signal_bars(rows))
