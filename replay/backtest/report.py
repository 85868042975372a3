"""Backtest reports from an event log: equity curve, returns, drawdown, Sharpe/Sortino, trades.

A backtest's output is an ordinary event log, so a report is a fold over it: `ReportBuilder`
applies each event to its own `Projections` (the same folds the engine uses, so cash,
positions and fees here are the engine's) and samples what it needs. Use it either after the
fact (`build_report(path)` from synchronous code, `await build_report_async(path)` from async
code) or live, as a subscriber of the log being written (`log.subscribe(builder.apply)`, then
`builder.finish()`), which saves reading the log back.

Conventions (also written into the JSON under "conventions"):

- Equity = cash + sum(qty x last close) over open positions (a position with no bar yet is
  valued at its average cost). Cash is the account projection's: the last `AccountSnapshot`
  plus the cash our fills moved since. It is sampled at every bar close: after each
  `BarReceived`, keyed by the bar's end time, so when several symbols close at the same time
  the sample holds all of them (and the fills booked at those bars' opens). A bar that closes
  earlier than the latest sample (a late symbol) updates the latest sample.
- The curve starts at the starting equity (the first `AccountSnapshot`'s equity, or the
  `starting_equity` given), placed at the start of the first sampled bar; bars before the first
  snapshot are not sampled. Per-bar returns are between consecutive curve points, so n bars
  give n returns and total return = product(1 + r) - 1 = final / starting - 1.
- Annualisation: periods per year = 252 trading days x bars per day, bars per day = 23,400 s
  (the 6.5 h regular session) / the bar interval for intraday bars; 252 for daily bars;
  52 / weeks for multi-week bars, else 252 x 86,400 s / interval. The interval is the most
  common `interval_s` among the log's bars. `periods_per_year` overrides all of this.
  Annualised return = (final / starting) ^ (periods per year / n) - 1 (geometric).
- Sharpe = mean(r - rf) / stdev(r - rf, ddof=1) x sqrt(periods per year); Sortino = mean(r - rf)
  / sqrt(mean(min(r - rf, 0)^2)) x sqrt(periods per year); rf per bar = (1 + risk_free) ^
  (1 / periods per year) - 1, `risk_free` an annual rate (0 by default). None when undefined
  (fewer than two returns, no variance, no downside). These are floats: they are statistics
  of ratios, not money; every money figure (equity, P&L, fees, drawdown amount) is Decimal.
- Max drawdown = the largest fall from a running peak of the curve, as a fraction of that
  peak; its duration runs from that peak to the first point back at or above it (or to the
  end, `max_drawdown_recovered` = False). The longest drawdown (any depth) is reported too.
- Trades are round trips per symbol: from flat to flat (a fill that crosses zero closes one
  trip and opens the next with the remainder; its fee is split pro rata). A closed trip's P&L
  is exit notional - entry notional (long) or the reverse (short), minus fees, which does not
  depend on the cost method; partial exits of a trip still open are valued at average cost,
  as the positions projection does, so realized P&L here equals the projection's. A position
  adjusted by reconciliation marks its trip `adjusted`.
- Won / lost / break-even: a closed trip whose net P&L rounds to $0.00 is break-even, else it
  is won (> 0) or lost (< 0). Win rate = won / closed trips (break-even trips count as not
  won). Exposure = the fraction of bar closes at which any position was open.
- Annualised figures (return, volatility, Sharpe, Sortino) need at least `min_sessions`
  trading days (20 by default); with fewer they are still computed into the JSON but flagged
  `annualised_meaningful: false` and shown as "not meaningful": two days of minute bars
  annualise into numbers nobody should read.
- Benchmark: buy and hold of the traded symbols (those with fills; every symbol if none) over
  the same bars, equal weights, bought at each symbol's first open; see `replay/backtest/benchmark.py`.
  Beta and correlation are of per-point (per bar close) returns, strategy against benchmark.
- Daily and monthly returns: see `replay/backtest/periods.py` (New York trading days; a month chains
  its days).
- The fill model is the simulated broker's as recorded in the run's `RunStarted` (None for
  logs written before it was recorded, or when a real broker filled).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from events.base import UTC, Event
from events.catalogue import (
    AccountSnapshot,
    BarReceived,
    DataRejected,
    FillModel,
    FillReceived,
    OrderCanceled,
    OrderExpired,
    OrderIntent,
    OrderRejected,
    OrderSubmitRequested,
    PositionAdjusted,
    RiskApproved,
    RiskRejected,
    RunStarted,
    StrategyError,
)
from events.store import LogReader, ts_to_us
from events.vocabulary import CENT, ZERO
from projections.state import Projections
from replay.backtest.benchmark import Benchmark, build_benchmark
from replay.backtest.display import table
from replay.backtest.periods import PeriodReturn, daily_returns, day_ends, monthly_returns

SESSION_SECONDS = 23_400  # 09:30-16:00 New York
TRADING_DAYS = 252
MIN_SESSIONS = 20  # trading days before annualised figures mean anything

CONVENTIONS: dict[str, str] = {
    "equity": "cash + sum(qty x last close), sampled after each bar close (by bar end time)",
    "starting_equity": "first AccountSnapshot's equity (or the value given), at the first bar's "
                       "start",
    "returns": "simple per-bar returns between consecutive equity points",
    "annualisation": "252 trading days x bars per day (23,400 s session / bar interval); daily "
                     "bars 252/yr; override with periods_per_year",
    "annualised_return": "geometric: (final/starting)^(periods_per_year/n) - 1",
    "sharpe": "mean(r-rf)/stdev(r-rf, ddof=1) x sqrt(periods_per_year); rf per bar from the "
              "annual rate",
    "sortino": "mean(r-rf)/sqrt(mean(min(r-rf,0)^2)) x sqrt(periods_per_year)",
    "drawdown": "fall from the running peak as a fraction of the peak; duration peak to "
                "recovery (or end)",
    "trades": "round trips flat to flat per symbol; closed P&L = exit - entry notional - fees; "
              "open trips at average cost; break-even = net P&L rounds to 0.00",
    "annualised_meaningful": "annualised figures need at least min_sessions trading days",
    "benchmark": "buy and hold of the traded symbols, equal weights, bought at each one's "
                 "first open, valued at every equity point; beta/correlation of per-point "
                 "returns",
    "daily_returns": "equity at a New York trading day's last bar close vs the day before's",
    "monthly_returns": "equity at a month's last trading day's close vs the month before's",
    "exposure": "fraction of bar closes with any open position",
    "floats": "ratios (returns, Sharpe, Sortino, drawdown %, win rate, exposure) are floats; "
              "money is Decimal",
}


class ReportError(Exception):
    """A report that cannot be made (e.g. no starting equity); one line for the user."""


class EquityPoint(msgspec.Struct, array_like=True, gc=False, frozen=True):
    ts: datetime
    equity: Decimal


class FillPoint(msgspec.Struct, kw_only=True, frozen=True):
    seq: int
    ts: datetime
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    client_order_id: str


class Trade(msgspec.Struct, kw_only=True):
    symbol: str
    side: str  # "long" | "short"
    entry_time: datetime
    exit_time: datetime | None
    qty: Decimal  # total quantity opened during the trip
    entry_price: Decimal  # average price of the opening fills
    exit_price: Decimal | None  # average price of the closing fills
    gross_pnl: Decimal  # realized, before fees (open trips: the part already closed)
    fees: Decimal
    net_pnl: Decimal
    return_pct: float | None  # (net P&L + unrealized, if open) / entry notional
    fills: int
    open: bool = False
    unrealized_pnl: Decimal | None = None  # open trips, at the last close
    adjusted: bool = False


class Counts(msgspec.Struct, kw_only=True):
    intents: int = 0
    approved: int = 0
    risk_rejected: int = 0
    submitted: int = 0
    broker_rejected: int = 0
    canceled: int = 0
    expired: int = 0
    fills: int = 0
    duplicate_fills: int = 0
    strategy_errors: int = 0
    data_rejected: int = 0
    bars: int = 0


@dataclass
class PriceSeries:
    """Closes of one symbol for plotting only (floats in compact arrays: a million bars
    should not cost a million Decimal objects)."""

    times_us: array[int] = field(default_factory=lambda: array("q"))
    closes: array[float] = field(default_factory=lambda: array("d"))


@dataclass(repr=False)
class Report:
    log_path: str
    first_seq: int
    last_seq: int
    runs: list[str]
    strategies: list[str]
    symbols: list[str]
    start: datetime | None
    end: datetime | None
    interval_s: int | None
    periods_per_year: float | None
    bars: int  # equity samples (bar closes)
    starting_equity: Decimal
    final_equity: Decimal
    net_profit: Decimal
    total_return: float
    annualised_return: float | None
    volatility: float | None
    sharpe: float | None
    sortino: float | None
    risk_free: float
    max_drawdown: float
    max_drawdown_amount: Decimal
    max_drawdown_peak: datetime | None
    max_drawdown_trough: datetime | None
    max_drawdown_recovery: datetime | None
    max_drawdown_recovered: bool
    max_drawdown_duration: timedelta
    max_drawdown_bars: int
    longest_drawdown: timedelta
    longest_drawdown_bars: int
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    trades: list[Trade]
    closed_trades: int
    winning_trades: int
    losing_trades: int
    win_rate: float | None
    average_win: Decimal | None
    average_loss: Decimal | None
    profit_factor: float | None
    exposure: float
    counts: Counts
    equity_curve: list[EquityPoint]
    fills: list[FillPoint]
    prices: dict[str, PriceSeries] = field(repr=False)
    sessions: int = 0
    min_sessions: int = MIN_SESSIONS
    annualised_meaningful: bool = True
    break_even_trades: int = 0
    benchmark: Benchmark | None = None
    daily_returns: list[PeriodReturn] = field(default_factory=list)
    monthly_returns: list[PeriodReturn] = field(default_factory=list)
    fill_model: FillModel | None = None
    notes: list[str] = field(default_factory=list)
    conventions: dict[str, str] = field(default_factory=lambda: dict(CONVENTIONS))

    def __repr__(self) -> str:
        # Short on purpose: asyncio formats the repr of a finished task's result, and the
        # default would print every point of a long equity curve.
        return (f"Report({self.log_path!r}, bars={self.bars}, final_equity={self.final_equity}, "
                f"total_return={self.total_return:.6g}, trades={len(self.trades)})")

    def drawdown_series(self) -> list[float]:
        """Drawdown at each curve point as a (non-positive) fraction of the running peak."""
        out: list[float] = []
        peak: Decimal | None = None
        for p in self.equity_curve:
            peak = p.equity if peak is None or p.equity > peak else peak
            out.append(float(p.equity / peak - 1) if peak > 0 else 0.0)
        return out

    def summary(self) -> dict[str, Any]:
        """The headline figures (one row of a sweep table); `trades` is the closed count."""
        return {
            "total_return": self.total_return, "annualised_return": self.annualised_return,
            "max_drawdown": self.max_drawdown, "sharpe": self.sharpe, "sortino": self.sortino,
            "trades": self.closed_trades, "win_rate": self.win_rate, "fees": self.fees,
            "exposure": self.exposure, "starting_equity": self.starting_equity,
            "final_equity": self.final_equity, "net_profit": self.net_profit,
            "bars": self.bars, "sessions": self.sessions,
            "annualised_meaningful": self.annualised_meaningful,
            "won": self.winning_trades, "lost": self.losing_trades,
            "break_even": self.break_even_trades,
            "benchmark_return": self.benchmark.total_return if self.benchmark else None,
            "excess_return": self.benchmark.excess_return if self.benchmark else None,
        }

    def to_builtins(self, *, series: bool = True) -> dict[str, Any]:
        """Everything but the price series, as JSON-ready builtins (Decimals as strings,
        times ISO 8601, durations in seconds under `<name>_s`, the curve as [time, equity]
        pairs). `series=False` leaves out the equity curve and the fills (a long backtest's
        curve is large)."""
        out: dict[str, Any] = {"summary": self.summary()}
        for name in self.__dataclass_fields__:
            if name == "prices" or (not series and name in ("equity_curve", "fills")):
                continue
            v = getattr(self, name)
            if isinstance(v, timedelta):
                out[f"{name}_s"] = v.total_seconds()
            elif isinstance(v, Benchmark):
                b = {k: getattr(v, k) for k in v.__dataclass_fields__ if k != "curve"}
                if series:
                    b["curve"] = v.curve
                out[name] = b
            elif not series and name == "daily_returns":
                continue  # one row per day: a series too
            else:
                out[name] = v
        if series:
            out["equity_curve"] = [[p.ts, p.equity] for p in self.equity_curve]
        return msgspec.to_builtins(out)  # type: ignore[no-any-return]

    def to_json(self, *, series: bool = True, indent: int = 2) -> str:
        raw = msgspec.json.encode(self.to_builtins(series=series))
        return (msgspec.json.format(raw, indent=indent) if indent else raw).decode()

    def write_json(self, path: str | os.PathLike[str], *, series: bool = True) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_json(series=series) + "\n", encoding="utf-8")
        return p


# --- the fold ------------------------------------------------------------------------------


@dataclass
class _Trip:
    symbol: str
    direction: int  # +1 long, -1 short
    entry_time: datetime
    qty: Decimal = ZERO  # signed, current
    avg_cost: Decimal = ZERO
    entry_qty: Decimal = ZERO
    entry_notional: Decimal = ZERO
    exit_qty: Decimal = ZERO
    exit_notional: Decimal = ZERO
    gross: Decimal = ZERO
    fees: Decimal = ZERO
    fills: int = 0
    adjusted: bool = False

    def open_part(self, qty: Decimal, price: Decimal, fee: Decimal) -> None:
        total = abs(self.qty) + qty
        self.avg_cost = (abs(self.qty) * self.avg_cost + qty * price) / total
        self.qty += qty * self.direction
        self.entry_qty += qty
        self.entry_notional += qty * price
        self.fees += fee

    def close_part(self, qty: Decimal, price: Decimal, fee: Decimal) -> None:
        self.gross += qty * (price - self.avg_cost) * self.direction
        self.qty -= qty * self.direction
        self.exit_qty += qty
        self.exit_notional += qty * price
        self.fees += fee
        if self.qty == 0:
            self.avg_cost = ZERO

    def to_trade(self, *, exit_time: datetime | None, last: Decimal | None) -> Trade:
        is_open = exit_time is None
        unreal = None
        if is_open and self.qty != 0:
            mark = last if last is not None else self.avg_cost
            unreal = (mark - self.avg_cost) * self.qty
        net = self.gross - self.fees
        return Trade(
            symbol=self.symbol, side="long" if self.direction > 0 else "short",
            entry_time=self.entry_time, exit_time=exit_time, qty=self.entry_qty,
            entry_price=self.entry_notional / self.entry_qty if self.entry_qty else self.avg_cost,
            exit_price=self.exit_notional / self.exit_qty if self.exit_qty else None,
            gross_pnl=self.gross, fees=self.fees, net_pnl=net,
            return_pct=(float((net + (unreal or ZERO)) / self.entry_notional)
                        if self.entry_notional else None),
            fills=self.fills, open=is_open, unrealized_pnl=unreal, adjusted=self.adjusted)


class ReportBuilder:
    """Folds events (in seq order) into what a `Report` needs. `apply` never does I/O, so it
    can be a live subscriber of an `EventLog`."""

    def __init__(self, *, starting_equity: Decimal | None = None) -> None:
        self.proj = Projections()
        self._given_start = starting_equity
        self._start: Decimal | None = starting_equity
        self._first_bar_start: datetime | None = None
        self._points: list[EquityPoint] = []
        self._exposed = 0
        self._last_exposed = False
        self._intervals: Counter[int] = Counter()
        self._prices: dict[str, PriceSeries] = {}
        self._fills: list[FillPoint] = []
        self._trips: dict[str, _Trip] = {}
        self._trades: list[Trade] = []
        self._fees = ZERO
        self._first_seq = 0
        self._last_seq = 0
        self._runs: list[str] = []
        self._fill_model: FillModel | None = None
        self._first_open: dict[str, Decimal] = {}
        self._strategies: set[str] = set()
        self.counts = Counts()
        self._dispatch: dict[type, Callable[[int, Any], None]] = {
            BarReceived: self._on_bar,
            FillReceived: self._on_fill,
            AccountSnapshot: self._on_snapshot,
            PositionAdjusted: self._on_adjusted,
            RunStarted: self._on_run,
            OrderIntent: self._on_intent,
            RiskApproved: self._on_approved,
            RiskRejected: lambda s, e: self._count("risk_rejected"),
            OrderSubmitRequested: lambda s, e: self._count("submitted") if e.attempt == 1
            else None,
            OrderRejected: lambda s, e: self._count("broker_rejected"),
            OrderCanceled: lambda s, e: self._count("canceled"),
            OrderExpired: lambda s, e: self._count("expired"),
            StrategyError: lambda s, e: self._count("strategy_errors"),
            DataRejected: lambda s, e: self._count("data_rejected"),
        }

    def _count(self, name: str) -> None:
        setattr(self.counts, name, getattr(self.counts, name) + 1)

    # --- folding -----------------------------------------------------------------------

    def apply(self, seq: int, event: Event) -> None:
        if not self._first_seq:
            self._first_seq = seq
        self._last_seq = seq
        t = type(event)
        booked = True
        if t is FillReceived:
            # The projection ignores a repeated execution id; so must the trade list.
            booked = event.execution_id not in self.proj.orders.execution_ids  # type: ignore[attr-defined]
        self.proj.apply(seq, event)
        handler = self._dispatch.get(t)
        if handler is None:
            return
        if t is FillReceived and not booked:
            self.counts.duplicate_fills += 1
            return
        handler(seq, event)

    def _on_run(self, seq: int, e: RunStarted) -> None:
        self._runs.append(e.run_id)
        if e.fill_model is not None:
            self._fill_model = e.fill_model

    def _on_intent(self, seq: int, e: OrderIntent) -> None:
        self.counts.intents += 1
        self._strategies.add(e.strategy)

    def _on_approved(self, seq: int, e: RiskApproved) -> None:
        self.counts.approved += 1
        self._strategies.add(e.strategy)

    def _on_snapshot(self, seq: int, e: AccountSnapshot) -> None:
        if self._start is None:
            self._start = e.equity

    def _on_bar(self, seq: int, e: BarReceived) -> None:
        b = e.bar
        self.counts.bars += 1
        self._intervals[b.interval_s] += 1
        series = self._prices.get(b.symbol)
        if series is None:
            series = self._prices[b.symbol] = PriceSeries()
            self._first_open[b.symbol] = b.open
        end = b.end
        series.times_us.append(ts_to_us(end))
        series.closes.append(float(b.close))  # plotting only
        if self._start is None:
            return  # no starting equity yet: nothing to measure against
        if self._first_bar_start is None:
            self._first_bar_start = b.start
        equity, exposed = self._equity()
        points = self._points
        if points and points[-1].ts >= end:
            points[-1] = EquityPoint(points[-1].ts, equity)
            self._exposed += int(exposed) - int(self._last_exposed)
        else:
            points.append(EquityPoint(end, equity))
            self._exposed += int(exposed)
        self._last_exposed = exposed

    def _equity(self) -> tuple[Decimal, bool]:
        value = ZERO
        exposed = False
        last_bar = self.proj.market.last_bar
        for sym, pos in self.proj.positions.positions.items():
            if pos.qty == 0:
                continue
            exposed = True
            lb = last_bar.get(sym)
            value += pos.qty * (lb.close if lb is not None else pos.avg_cost)
        account = self.proj.account
        # No snapshot yet: the given starting equity is the cash the fills move from.
        cash = account.cash_now if account.known or self._given_start is None \
            else self._given_start + account.cash_since_snapshot
        return cash + value, exposed

    def _on_fill(self, seq: int, e: FillReceived) -> None:
        self.counts.fills += 1
        self._fees += e.fee
        self._fills.append(FillPoint(seq=seq, ts=e.broker_time, symbol=e.symbol, side=e.side,
                                     qty=e.qty, price=e.price, fee=e.fee,
                                     client_order_id=e.client_order_id))
        sign = 1 if e.side == "buy" else -1
        trip = self._trips.get(e.symbol)
        if trip is None or trip.qty == 0:
            trip = self._trips[e.symbol] = _Trip(e.symbol, sign, e.broker_time)
        trip.fills += 1
        if sign == trip.direction:
            trip.open_part(e.qty, e.price, e.fee)
            return
        closed = min(abs(trip.qty), e.qty)
        rest = e.qty - closed
        fee_close = e.fee * closed / e.qty if rest else e.fee
        trip.close_part(closed, e.price, fee_close)
        if trip.qty == 0:
            self._trades.append(trip.to_trade(exit_time=e.broker_time, last=None))
            del self._trips[e.symbol]
            if rest:  # crossed zero: the remainder opens the next trip at this fill
                nxt = self._trips[e.symbol] = _Trip(e.symbol, sign, e.broker_time)
                nxt.fills = 1
                nxt.open_part(rest, e.price, e.fee - fee_close)

    def _on_adjusted(self, seq: int, e: PositionAdjusted) -> None:
        trip = self._trips.get(e.symbol)
        if trip is not None and trip.qty != 0:
            trip.adjusted = True
            if e.qty_after == 0 or (e.qty_after > 0) != (trip.direction > 0):
                self._trades.append(trip.to_trade(exit_time=e.ts, last=None))
                del self._trips[e.symbol]
            else:
                trip.qty, trip.avg_cost = e.qty_after, e.avg_price
                return
        if e.qty_after != 0:
            nxt = self._trips[e.symbol] = _Trip(e.symbol, 1 if e.qty_after > 0 else -1, e.ts,
                                                adjusted=True)
            nxt.open_part(abs(e.qty_after), e.avg_price, ZERO)

    # --- the figures ---------------------------------------------------------------------

    def finish(self, *, risk_free: float = 0.0, periods_per_year: float | None = None,
               log_path: str = "", min_sessions: int = MIN_SESSIONS) -> Report:
        if self._start is None:
            raise ReportError("the log has no AccountSnapshot, so the starting equity is "
                              "unknown; pass starting_equity")
        start_equity = self._start
        base_ts = self._first_bar_start
        curve = ([EquityPoint(base_ts, start_equity)] if base_ts is not None else []) \
            + self._points
        n = len(self._points)
        interval = _dominant_interval(self._intervals)
        ppy = periods_per_year if periods_per_year is not None else (
            _periods_per_year(interval) if interval else None)
        final = curve[-1].equity if curve else start_equity
        total = float(final / start_equity - 1) if start_equity else 0.0

        returns = _returns(curve)
        ann = vol = sharpe = sortino = None
        if ppy and n:
            ann = _annualise(final, start_equity, ppy, n)
        if ppy and returns is not None and len(returns) >= 2:
            rf = (1.0 + risk_free) ** (1.0 / ppy) - 1.0
            ex = [r - rf for r in returns]
            mean = math.fsum(ex) / len(ex)
            sd = math.sqrt(math.fsum((x - mean) ** 2 for x in ex) / (len(ex) - 1))
            vol = sd * math.sqrt(ppy)
            sharpe = mean / sd * math.sqrt(ppy) if sd > 0 else None
            down = math.sqrt(math.fsum(min(x, 0.0) ** 2 for x in ex) / len(ex))
            sortino = mean / down * math.sqrt(ppy) if down > 0 else None
        dd = _drawdowns(curve)

        last_close = {s: lb.close for s, lb in self.proj.market.last_bar.items()}
        trades = list(self._trades) + [
            t.to_trade(exit_time=None, last=last_close.get(t.symbol))
            for t in sorted(self._trips.values(), key=lambda t: (t.entry_time, t.symbol))
            if t.qty != 0]
        trades.sort(key=lambda t: (t.entry_time, t.symbol))
        closed = [t for t in trades if not t.open]
        even = [t for t in closed if t.net_pnl.quantize(CENT) == 0]
        wins = [t for t in closed if t.net_pnl > 0 and t.net_pnl.quantize(CENT) != 0]
        losses = [t for t in closed if t.net_pnl < 0 and t.net_pnl.quantize(CENT) != 0]
        gross_win = sum((t.net_pnl for t in wins), ZERO)
        gross_loss = -sum((t.net_pnl for t in losses), ZERO)
        positions = self.proj.positions.positions.values()
        unrealized = sum(((last_close.get(p.symbol, p.avg_cost) - p.avg_cost) * p.qty
                          for p in positions if p.qty != 0), ZERO)
        sessions = len(day_ends(curve))
        traded = sorted({f.symbol for f in self._fills}) or sorted(self._prices)
        bench = build_benchmark(curve, traded, self._prices, self._first_open, last_close,
                                total)
        bench_curve = bench.curve if bench is not None else None
        notes = [bench.note] if bench is not None and bench.note else []
        return Report(
            sessions=sessions, min_sessions=min_sessions,
            annualised_meaningful=sessions >= min_sessions,
            break_even_trades=len(even), benchmark=bench,
            daily_returns=daily_returns(curve, bench_curve),
            monthly_returns=monthly_returns(curve, bench_curve),
            fill_model=self._fill_model, notes=notes,
            log_path=log_path, first_seq=self._first_seq, last_seq=self._last_seq,
            runs=list(self._runs), strategies=sorted(self._strategies),
            symbols=sorted(self._prices),
            start=curve[0].ts if curve else None, end=curve[-1].ts if curve else None,
            interval_s=interval, periods_per_year=ppy, bars=n,
            starting_equity=start_equity, final_equity=final, net_profit=final - start_equity,
            total_return=total, annualised_return=ann, volatility=vol, sharpe=sharpe,
            sortino=sortino, risk_free=risk_free,
            max_drawdown=dd.max_fraction, max_drawdown_amount=dd.max_amount,
            max_drawdown_peak=dd.peak, max_drawdown_trough=dd.trough,
            max_drawdown_recovery=dd.recovery, max_drawdown_recovered=dd.recovered,
            max_drawdown_duration=dd.duration, max_drawdown_bars=dd.bars,
            longest_drawdown=dd.longest, longest_drawdown_bars=dd.longest_bars,
            realized_pnl=sum((p.realized_pnl for p in positions), ZERO),
            unrealized_pnl=unrealized, fees=self._fees,
            trades=trades, closed_trades=len(closed), winning_trades=len(wins),
            losing_trades=len(losses),
            win_rate=len(wins) / len(closed) if closed else None,
            average_win=gross_win / len(wins) if wins else None,
            average_loss=-gross_loss / len(losses) if losses else None,
            profit_factor=float(gross_win / gross_loss) if gross_loss else None,
            exposure=self._exposed / n if n else 0.0,
            counts=msgspec.structs.replace(self.counts),
            equity_curve=curve, fills=list(self._fills), prices=self._prices)


def _dominant_interval(intervals: Counter[int]) -> int | None:
    if not intervals:
        return None
    top = max(intervals.values())
    return min(i for i, c in intervals.items() if c == top)


def _periods_per_year(interval_s: int) -> float:
    """Bars per year under the convention in the module docstring."""
    if interval_s < 86_400:
        return TRADING_DAYS * SESSION_SECONDS / interval_s
    if interval_s == 86_400:
        return float(TRADING_DAYS)
    week = 7 * 86_400
    if interval_s % week == 0:
        return 52.0 / (interval_s // week)
    return TRADING_DAYS * 86_400 / interval_s


def _returns(curve: list[EquityPoint]) -> list[float] | None:
    """Simple returns between consecutive points; None if equity ever reaches zero or below
    (a return on nothing is undefined)."""
    out: list[float] = []
    for a, b in itertools.pairwise(curve):
        if a.equity <= 0:
            return None
        out.append(float(b.equity / a.equity - 1))
    return out


def _annualise(final: Decimal, start: Decimal, ppy: float, n: int) -> float | None:
    if start <= 0:
        return None
    ratio = final / start
    if ratio <= 0:
        return -1.0
    try:
        return math.exp(math.log(float(ratio)) * ppy / n) - 1.0
    except OverflowError:
        return None  # too short a run to annualise meaningfully


@dataclass
class _DD:
    max_fraction: float = 0.0
    max_amount: Decimal = ZERO
    peak: datetime | None = None
    trough: datetime | None = None
    recovery: datetime | None = None
    recovered: bool = True
    duration: timedelta = timedelta(0)
    bars: int = 0
    longest: timedelta = timedelta(0)
    longest_bars: int = 0


def _drawdowns(curve: list[EquityPoint]) -> _DD:
    out = _DD()
    if not curve:
        return out
    best = ZERO  # deepest fraction so far, exact
    peak_i = 0
    peak = curve[0].equity
    mdd_peak_i: int | None = None
    mdd_trough_i = 0
    episodes: list[tuple[int, int, bool]] = []  # (peak index, end index, recovered)
    under = False
    for i, p in enumerate(curve):
        if p.equity >= peak:
            if under:
                episodes.append((peak_i, i, True))
                under = False
            peak, peak_i = p.equity, i
            continue
        under = True
        if peak > 0:
            frac = (peak - p.equity) / peak
            if frac > best:
                best, mdd_peak_i, mdd_trough_i = frac, peak_i, i
                out.max_amount = peak - p.equity
    if under:
        episodes.append((peak_i, len(curve) - 1, False))
    for a, b, _ in episodes:
        d = curve[b].ts - curve[a].ts
        if (b - a, d) > (out.longest_bars, out.longest):
            out.longest, out.longest_bars = d, b - a
    if mdd_peak_i is not None:
        out.max_fraction = float(best)
        out.peak, out.trough = curve[mdd_peak_i].ts, curve[mdd_trough_i].ts
        a, b, rec = next(ep for ep in episodes if ep[0] == mdd_peak_i)
        out.recovered = rec
        out.recovery = curve[b].ts if rec else None
        out.duration, out.bars = curve[b].ts - curve[a].ts, b - a
    return out


# --- entry points --------------------------------------------------------------------------


async def build_report_async(log_path: str | os.PathLike[str], *, risk_free: float = 0.0,
                             periods_per_year: float | None = None,
                             starting_equity: Decimal | None = None,
                             to_seq: int | None = None,
                             min_sessions: int = MIN_SESSIONS) -> Report:
    """Read the log (read-only; a live one is fine) and build its report."""
    builder = ReportBuilder(starting_equity=starting_equity)
    async with LogReader(log_path) as reader:
        async for seq, event in reader.read(1, to_seq, batch_size=20_000):
            builder.apply(seq, event)
    return builder.finish(risk_free=risk_free, periods_per_year=periods_per_year,
                          log_path=str(log_path), min_sessions=min_sessions)


def build_report(log_path: str | os.PathLike[str], *, risk_free: float = 0.0,
                 periods_per_year: float | None = None, starting_equity: Decimal | None = None,
                 to_seq: int | None = None, min_sessions: int = MIN_SESSIONS) -> Report:
    """`build_report_async` for synchronous callers (scripts, sweep workers). It runs its own
    event loop, so from async code use `build_report_async` (or a live `ReportBuilder`)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(build_report_async(
            log_path, risk_free=risk_free, periods_per_year=periods_per_year,
            starting_equity=starting_equity, to_seq=to_seq, min_sessions=min_sessions))
    raise RuntimeError("build_report() called inside a running event loop; "
                       "await build_report_async() instead")


# --- the human table -----------------------------------------------------------------------


def _pct(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    text = f"{x * 100:.{digits}f}"
    return (text.lstrip("-") if float(text) == 0 else text) + "%"  # never "-0.0%"


def _interval(seconds: int | None) -> str:
    if seconds is None:
        return "? s"
    if seconds in (SESSION_SECONDS, 12_600):  # a daily bar is a session (13:00 early closes)
        return "1 session (daily)"
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds} s"


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _dur(d: timedelta) -> str:
    secs = int(d.total_seconds())
    days, rem = divmod(secs, 86_400)
    h, rem = divmod(rem, 3600)
    m = rem // 60
    return (f"{days}d " if days else "") + f"{h:02d}:{m:02d}"


def _ts(t: datetime | None) -> str:
    return "-" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M") + "Z"


def _money(d: Decimal | None) -> str:
    if d is None:
        return "-"
    q = d.quantize(CENT)
    return f"{abs(q) if q == 0 else q:,}"  # never "-0.00"


def _bps(d: Decimal) -> str:
    return f"{d.normalize():f}"


def fill_model_text(m: FillModel | None) -> str:
    """One line: what the simulated broker did with the orders."""
    if m is None:
        return "not recorded (a real broker filled, or the log predates the record)"
    fees = [f"${_bps(m.fee_per_share)}/share"] if m.fee_per_share else []
    if m.fee_bps:
        fees.append(f"{_bps(m.fee_bps)} bps")
    fee = " + ".join(fees) or "none"
    if m.min_fee:
        fee += f" (min ${_bps(m.min_fee)})"
    zero = "fill at the bar's prices" if m.zero_volume == "fill" else "no fill"
    return (f"{m.fill_rule}; slippage {_bps(m.slippage_bps)} bps; fees {fee}; volume cap "
            f"{_bps(m.volume_participation * 100)}% of a bar's volume; zero-volume bars: "
            f"{zero}; time in force: {m.time_in_force}")


def _annual(r: Report, text: str) -> str:
    if r.annualised_meaningful:
        return text
    return f"not meaningful ({r.sessions} trading days; needs {r.min_sessions})"


def summary_rows(r: Report) -> list[tuple[str, str]]:
    c = r.counts
    dd_to = _ts(r.max_drawdown_recovery) if r.max_drawdown_recovered else "not recovered"
    b = r.benchmark
    bench: list[tuple[str, str]] = []
    if b is not None:
        bench = [
            ("benchmark", (f"buy and hold {', '.join(b.symbols)} (equal weights): "
                           f"{_pct(b.total_return)}")),
            ("excess return", _pct(b.excess_return)),
            ("beta / correlation", f"{_num(b.beta)} / {_num(b.correlation)}"
             + (f" ({b.note})" if b.note else "")),
        ]
    return [
        ("fill model", fill_model_text(r.fill_model)),
        ("period", (f"{_ts(r.start)} -> {_ts(r.end)} ({r.bars} bars of "
                   f"{_interval(r.interval_s)}, {r.sessions} trading days)")),
        ("strategies", ", ".join(r.strategies) or "-"),
        ("symbols", ", ".join(r.symbols) or "-"),
        ("starting equity", _money(r.starting_equity)),
        ("final equity", _money(r.final_equity)),
        ("net profit", _money(r.net_profit)),
        ("total return", _pct(r.total_return)),
        *bench,
        ("annualised return", _annual(r, _pct(r.annualised_return))),
        ("annualised volatility", _annual(r, _pct(r.volatility))),
        ("Sharpe", _annual(r, _num(r.sharpe))),
        ("Sortino", _annual(r, _num(r.sortino))),
        ("max drawdown", (f"{_pct(r.max_drawdown)} ({_money(r.max_drawdown_amount)}), "
                         f"{_ts(r.max_drawdown_peak)} -> trough {_ts(r.max_drawdown_trough)} -> "
                         f"{dd_to}")),
        ("max drawdown duration", (f"{_dur(r.max_drawdown_duration)} ({r.max_drawdown_bars} "
                                  "bars)")),
        ("longest drawdown", f"{_dur(r.longest_drawdown)} ({r.longest_drawdown_bars} bars)"),
        ("realized P&L", _money(r.realized_pnl)),
        ("unrealized P&L", _money(r.unrealized_pnl)),
        ("fees", _money(r.fees)),
        ("trades", (f"{r.closed_trades} closed ({r.winning_trades} won, {r.losing_trades} lost, "
                   f"{r.break_even_trades} break-even), {len(r.trades) - r.closed_trades} open")),
        ("win rate", _pct(r.win_rate, 1)),
        ("average win / loss", f"{_money(r.average_win)} / {_money(r.average_loss)}"),
        ("profit factor", _num(r.profit_factor)),
        ("exposure", _pct(r.exposure, 1)),
        ("orders", (f"{c.intents} intents, {c.approved} approved, {c.risk_rejected} rejected by "
                   f"risk, {c.broker_rejected} rejected by the broker, {c.canceled} canceled, "
                   f"{c.expired} expired")),
        ("fills", f"{c.fills}" + (f" ({c.duplicate_fills} duplicates ignored)"
                                  if c.duplicate_fills else "")),
    ]


def monthly_grid(r: Report) -> tuple[list[str], list[list[str]]]:
    """Monthly returns as a year x month grid (plus the year's chained return)."""
    years: dict[str, dict[int, float | None]] = {}
    for m in r.monthly_returns:
        years.setdefault(m.period[:4], {})[int(m.period[5:7])] = m.ret
    head = ["year", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
            "Nov", "Dec", "year"]
    rows = []
    for y, months in sorted(years.items()):
        total = 1.0
        for v in months.values():
            total *= 1.0 + (v or 0.0)
        rows.append([y, *(_pct(months[i], 1) if i in months else "" for i in range(1, 13)),
                     _pct(total - 1.0, 1)])
    return head, rows


def daily_rows(r: Report, last: int | None = None) -> list[list[str]]:
    days = r.daily_returns if last is None else r.daily_returns[-last:]
    return [[d.period, _money(d.end_equity), _pct(d.ret), _pct(d.benchmark)] for d in days]


def render_table(report: Report, *, max_trades: int = 20, max_days: int = 20) -> str:
    """The summary, monthly and (the last `max_days`) daily returns, and (up to
    `max_trades` of) the trade list as text."""
    rows = summary_rows(report)
    w = max(len(k) for k, _ in rows)
    lines = [f"{k:<{w}}  {v}" for k, v in rows]
    if report.monthly_returns and max_days:
        head, body = monthly_grid(report)
        lines += ["", "monthly returns:", *table(head, body, right=range(1, 14)).splitlines()]
    if report.daily_returns and max_days:
        days = daily_rows(report, max_days)
        more = len(report.daily_returns) - len(days)
        lines += ["", "daily returns" + (f" (last {len(days)}; {more} more in the JSON)"
                                         if more else "") + ":",
                  *table(["day", "equity", "return", "benchmark"], days,
                        right={1, 2, 3}).splitlines()]
    shown = report.trades[:max_trades]
    if shown:
        lines += ["", "trades (net of fees):"]
        head = ["symbol", "side", "entry", "exit", "qty", "entry px", "exit px", "net P&L",
                "fees", "return"]
        body = [[t.symbol, t.side, _ts(t.entry_time), _ts(t.exit_time) if not t.open else "open",
                 str(t.qty), f"{t.entry_price:.4f}",
                 f"{t.exit_price:.4f}" if t.exit_price is not None else "-",
                 _money(t.net_pnl + (t.unrealized_pnl or ZERO)) + ("*" if t.open else ""),
                 _money(t.fees), _pct(t.return_pct)] for t in shown]
        lines += table(head, body, right={4, 5, 6, 7, 8, 9}).splitlines()
        if len(report.trades) > max_trades:
            lines.append(f"... {len(report.trades) - max_trades} more in the JSON report")
        if any(t.open for t in shown):
            lines.append("* open: realized so far plus unrealized at the last close")
    return "\n".join(lines)
