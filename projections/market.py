"""Smaller folds: the last good bar per symbol, symbol eligibility, the account, and runs."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec

from events.catalogue import (
    AccountSnapshot,
    AssetInfo,
    FillReceived,
    RunEnded,
    RunSealed,
    RunStarted,
)
from events.market import bar_length
from events.vocabulary import ZERO


class LastBar(msgspec.Struct, kw_only=True):
    start: datetime
    interval_s: int
    close: Decimal
    seq: int

    @property
    def end(self) -> datetime:
        return self.start + bar_length(self.interval_s)  # read by every decision's data check


class MarketState(msgspec.Struct, kw_only=True):
    last_bar: dict[str, LastBar] = {}
    assets: dict[str, AssetInfo] = {}


class BarRef(msgspec.Struct, kw_only=True):
    """The fields of a bar that projections read (replay decodes only these)."""

    symbol: str
    start: datetime
    interval_s: int
    close: Decimal


class BarReceivedView(msgspec.Struct, kw_only=True):
    ts: datetime
    bar: BarRef


def apply_bar(state: MarketState, seq: int, e: BarReceivedView) -> None:
    b = e.bar
    last = state.last_bar.get(b.symbol)
    if last is None or b.start >= last.start:
        state.last_bar[b.symbol] = LastBar(start=b.start, interval_s=b.interval_s, close=b.close,
                                           seq=seq)


def last_price(state: MarketState, symbol: str) -> Decimal | None:
    last = state.last_bar.get(symbol)
    return last.close if last is not None else None


class AccountState(msgspec.Struct, kw_only=True):
    """The last broker snapshot plus the cash our own fills moved since then.

    "Since then" is by execution time against the snapshot's `as_of`: a fill executed before
    the broker was asked is already in its figures (even if we book it later), one executed
    after is not (even if we booked it before the snapshot arrived)."""

    equity: Decimal = ZERO
    cash: Decimal = ZERO
    buying_power: Decimal = ZERO
    cash_since_snapshot: Decimal = ZERO
    daytrade_count: int | None = None
    pattern_day_trader: bool | None = None
    snapshot_ts: datetime | None = None
    as_of: datetime | None = None
    # Cash moved by fills executed after `as_of`, by execution time (for the next snapshot).
    recent_flows: list[tuple[datetime, Decimal]] = []
    known: bool = False
    # What our open buy orders the broker already knew of reserved when the snapshot was
    # folded: the broker's buying power nets its open buys (Alpaca's and the simulated
    # broker's both do), so this is added back before the gate subtracts every open buy.
    netted_buys: Decimal = ZERO

    @property
    def cash_now(self) -> Decimal:
        return self.cash + self.cash_since_snapshot

    @property
    def buying_power_now(self) -> Decimal:
        return self.buying_power + self.cash_since_snapshot

    @property
    def buying_power_before_orders(self) -> Decimal:
        """Buying power with none of our open buys deducted (the gate deducts them all)."""
        return self.buying_power_now + self.netted_buys


def apply_snapshot(state: AccountState, e: AccountSnapshot) -> None:
    state.equity = e.equity
    state.cash = e.cash
    state.buying_power = e.buying_power
    state.as_of = e.as_of
    if e.as_of is None:  # an old-style snapshot: assume it saw every fill booked so far
        state.recent_flows = []
        state.cash_since_snapshot = ZERO
    else:
        state.recent_flows = [(t, f) for t, f in state.recent_flows if t > e.as_of]
        state.cash_since_snapshot = sum((f for _, f in state.recent_flows), ZERO)
    state.daytrade_count = e.daytrade_count
    state.pattern_day_trader = e.pattern_day_trader
    state.snapshot_ts = e.ts
    state.known = True


def apply_fill_cash(state: AccountState, e: FillReceived) -> None:
    flow = e.qty * e.price
    signed = (-flow if e.side == "buy" else flow) - e.fee
    if state.as_of is not None and e.broker_time <= state.as_of:
        return  # executed before the broker was last asked: already in its figures
    state.cash_since_snapshot += signed
    state.recent_flows.append((e.broker_time, signed))


class RunInfo(msgspec.Struct, kw_only=True):
    run_id: str
    started_seq: int
    mode: str
    settings_hash: str
    code_version: str
    ended: str = ""  # "", "clean", or "crashed" once sealed
    last_seq: int = 0


class RunsState(msgspec.Struct, kw_only=True):
    runs: dict[str, RunInfo] = {}
    current: str | None = None


def apply_run_started(state: RunsState, seq: int, e: RunStarted) -> None:
    state.runs[e.run_id] = RunInfo(run_id=e.run_id, started_seq=seq, mode=e.mode,
                                   settings_hash=e.settings_hash, code_version=e.code_version)
    state.current = e.run_id


def apply_run_ended(state: RunsState, seq: int, e: RunEnded | RunSealed) -> None:
    info = state.runs.get(e.run_id)
    if info is None:
        return
    if isinstance(e, RunEnded):
        info.ended, info.last_seq = e.reason or "clean", seq
    else:
        info.ended, info.last_seq = "crashed", e.last_seq
    if state.current == e.run_id:
        state.current = None

