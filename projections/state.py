"""All projections together: one dispatch per event, and the snapshot of their state.

Dispatch is one table from event type to its fold (`Projections._build_dispatch`); order
events are registered from `projections.orders.ORDER_EVENT_TYPES`, keyed by the same tags
the state machine's table uses, so no list of tags is kept by hand anywhere else.

`Projections.apply(seq, event)` is deterministic and does no I/O: the same log prefix always
gives the same state. Internally the folds mutate their own state objects (a copy per event
would make a million-event replay crawl); nothing outside this package may mutate them.
Reading the log and snapshot files (replay, rebuild-from-path) is `engine.rebuild`'s job:
this package does no I/O.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from events.base import tag_of
from events.catalogue import (
    AccountSnapshot,
    AssetInfo,
    BarReceived,
    FillReceived,
    KillSwitchEngaged,
    KillSwitchReleased,
    KillSwitchVerified,
    OrphanOrderAdopted,
    PositionAdjusted,
    RiskApproved,
    RiskRejected,
    RunEnded,
    RunSealed,
    RunStarted,
    TradingStateChanged,
    TrailingStopUpdated,
)
from events.codec import Codec
from events.vocabulary import ZERO
from projections import market, orders, positions, risk
from projections.market import AccountState, BarReceivedView, MarketState, RunsState
from projections.orders import OrdersState, OrderStatus
from projections.positions import PositionsState
from projections.risk import RiskState

# Orders the broker has acknowledged: its account figures already reserve for them. An order
# whose submit is still in flight may or may not be there; it is treated as not (the safe way).
BROKER_KNOWN = frozenset({OrderStatus.SUBMITTED, OrderStatus.ACCEPTED,
                          OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING_CANCEL})

# 2: orders carry protection (legs, stops, trails); the risk fold counts flips correctly.
SNAPSHOT_VERSION = 2


class Projections:
    """Every projection, folded from the log in seq order."""

    def __init__(self) -> None:
        self.orders = OrdersState()
        self.positions = PositionsState()
        self.risk = RiskState()
        self.market = MarketState()
        self.account = AccountState()
        self.runs = RunsState()
        self.last_seq = 0
        self._dispatch = self._build_dispatch()

    # --- folding -----------------------------------------------------------------------

    def apply(self, seq: int, event: Any) -> None:
        handler = self._dispatch.get(type(event))
        if handler is not None:
            handler(seq, event)
        self.last_seq = seq

    def equity(self) -> Decimal:
        """Cash plus positions at their last close (their average cost before any bar)."""
        marks = self.market.last_bar
        value = self.account.cash_now
        for sym, pos in self.positions.positions.items():
            if pos.qty:
                bar = marks.get(sym)
                value += pos.qty * (bar.close if bar is not None else pos.avg_cost)
        return value

    def handled_types(self) -> list[type]:
        return list(self._dispatch)

    def _build_dispatch(self) -> dict[type, Callable[[int, Any], None]]:
        o, p, r, m, a, runs = (self.orders, self.positions, self.risk, self.market, self.account,
                               self.runs)

        def on_fill(seq: int, e: FillReceived) -> None:
            order = o.orders.get(e.client_order_id)
            counted = order.counted_notional if order is not None else ZERO
            if not orders.apply_fill(o, seq, e):
                return  # this execution was already booked
            realized, before, after = positions.apply_fill(p, seq, e)
            order = o.orders.get(e.client_order_id)
            orders.note_closing(order, before, e)
            risk.apply_fill(r, e, realized, before, after, order)
            market.apply_fill_cash(a, e)
            if (order is not None and e.side == "buy" and a.netted_buys
                    and a.as_of is not None and e.broker_time <= a.as_of):
                # Executed before the broker was asked: its figure had no reservation left
                # for this part, so neither may what we add back.
                a.netted_buys = max(a.netted_buys - (counted - order.counted_notional), ZERO)

        def on_snapshot(seq: int, e: AccountSnapshot) -> None:
            market.apply_snapshot(a, e)
            a.netted_buys = sum((o.orders[c].counted_notional for c in o.open_ids
                                 if o.orders[c].side == "buy"
                                 and o.orders[c].status in BROKER_KNOWN), ZERO)

        def on_approved(seq: int, e: RiskApproved) -> None:
            risk.apply_decision(r, e)
            orders.apply_approved(o, seq, e)

        def on_run_started(seq: int, e: RunStarted) -> None:
            risk.apply_run_started(r, e)
            market.apply_run_started(runs, seq, e)

        # A partial, not a closure: a bar (nearly every event) is then one Python call.
        on_bar = functools.partial(market.apply_bar, m)
        d: dict[type, Callable[[int, Any], None]] = {
            BarReceived: on_bar,
            BarReceivedView: on_bar,
            FillReceived: on_fill,
            RiskApproved: on_approved,
            RiskRejected: lambda seq, e: risk.apply_decision(r, e),
            OrphanOrderAdopted: lambda seq, e: orders.apply_adopted(o, seq, e),
            PositionAdjusted: lambda seq, e: positions.apply_adjustment(p, seq, e),
            AccountSnapshot: on_snapshot,
            AssetInfo: lambda seq, e: m.assets.__setitem__(e.symbol, e),
            RunStarted: on_run_started,
            RunEnded: lambda seq, e: market.apply_run_ended(runs, seq, e),
            RunSealed: lambda seq, e: market.apply_run_ended(runs, seq, e),
            TradingStateChanged: lambda seq, e: risk.apply_trading_state(r, e),
            KillSwitchEngaged: lambda seq, e: risk.apply_kill_engaged(r, e),
            KillSwitchVerified: lambda seq, e: risk.apply_kill_verified(r, e),
            KillSwitchReleased: lambda seq, e: risk.apply_kill_released(r, e),
            TrailingStopUpdated: lambda seq, e: orders.apply_trailing_update(o, seq, e),
        }
        for cls in orders.ORDER_EVENT_TYPES:
            if cls not in d:  # fills fold into several projections (above)
                d[cls] = functools.partial(_order_event, o, tag_of(cls))
        return d

    # --- snapshots ---------------------------------------------------------------------

    def to_snapshot(self) -> Snapshot:
        return Snapshot(
            version=SNAPSHOT_VERSION, last_seq=self.last_seq,
            orders=self.orders, positions=self.positions, risk=self.risk, market=self.market,
            account=self.account, runs=self.runs,
        )

    @classmethod
    def from_snapshot(cls, snap: Snapshot) -> Projections:
        self = cls()
        self.orders, self.positions, self.risk = snap.orders, snap.positions, snap.risk
        self.market, self.account, self.runs = snap.market, snap.account, snap.runs
        self.last_seq = snap.last_seq
        self._dispatch = self._build_dispatch()
        return self

    def fingerprint(self) -> str:
        """A digest of the whole state (order-independent for sets), for equality checks."""
        return hashlib.sha256(_canonical_encoder.encode(self.to_snapshot())).hexdigest()


def _order_event(state: OrdersState, tag: str, seq: int, e: Any) -> None:
    orders.apply_order_event(state, seq, e, tag)


class Snapshot(msgspec.Struct, kw_only=True):
    version: int
    last_seq: int
    orders: OrdersState
    positions: PositionsState
    risk: RiskState
    market: MarketState
    account: AccountState
    runs: RunsState


def _canonical(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise NotImplementedError(type(obj))


_canonical_encoder = msgspec.msgpack.Encoder(enc_hook=_canonical, order="sorted")


# --- what replay decodes ------------------------------------------------------------------


def replay_decoders(codec: Codec, proj: Projections) -> dict[str, Callable[[bytes], Any] | None]:
    """How a replay (`engine.rebuild`) decodes each current-version row: bars into a light
    view, types no projection reads not at all (None), everything else fully. It lives here
    because it is a fact about the folds: what they read."""
    handled = {tag_of(cls) for cls in proj.handled_types() if cls in codec.types.values()}
    out: dict[str, Callable[[bytes], Any] | None] = {
        tag: None for tag in codec.types if tag not in handled
    }
    out["bar"] = codec.view_decoder("bar", BarReceivedView)
    return out
