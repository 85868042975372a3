"""What the page shows beyond the projections, folded from the same events (pure, no I/O):
the timeline tail, rejections by reason code, discrepancies, the equity curve, the fills
behind each open position, each position's recorded stop, stream health, alerts.

It folds *after* `Projections.apply` for the same event, so it may read the projections'
state as of that event (e.g. a position's quantity after a fill).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from events.base import Event, tag_of
from events.catalogue import (
    AlertSent,
    BarReceived,
    BrokerStreamStatus,
    DataGap,
    DataRejected,
    DiscrepancyFound,
    FillReceived,
    IllegalTransition,
    OrderIntent,
    OrphanOrderAdopted,
    OrphanOrderCanceled,
    PositionAdjusted,
    RiskRejected,
    RunStarted,
    StrategyError,
    UnknownBrokerMessage,
)
from events.store import correlation
from projections.state import Projections
from replay.forensics.summary import summarize

TIMELINE_KEPT = 5000
RECENT_KEPT = 100
CURVE_POINTS = 4000


@dataclass(frozen=True)
class Entry:
    """One timeline row: enough to filter on and to link to its chain. The sentence is made
    when shown (most rows of a long log scroll out of the kept tail unread)."""

    seq: int
    ts: datetime
    type: str
    symbol: str | None
    client_order_id: str | None
    intent_id: str | None
    event: Event

    @property
    def summary(self) -> str:
        return summarize(self.event)


@dataclass(frozen=True)
class CurvePoint:
    seq: int
    ts: datetime
    equity: Decimal


@dataclass
class FillRef:
    seq: int
    ts: datetime
    client_order_id: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal


@dataclass
class StreamInfo:
    state: str = "unknown"
    connected: bool | None = None
    since: datetime | None = None
    detail: str = ""
    seq: int = 0


@dataclass
class DashboardFold:
    timeline: deque[Entry] = field(default_factory=lambda: deque(maxlen=TIMELINE_KEPT))
    rejections: Counter[str] = field(default_factory=Counter)
    rejection_examples: dict[str, Entry] = field(default_factory=dict)
    recent_rejections: deque[Entry] = field(default_factory=lambda: deque(maxlen=RECENT_KEPT))
    discrepancies: deque[Entry] = field(default_factory=lambda: deque(maxlen=RECENT_KEPT))
    discrepancy_count: int = 0
    data_problems: deque[Entry] = field(default_factory=lambda: deque(maxlen=RECENT_KEPT))
    strategy_errors: deque[Entry] = field(default_factory=lambda: deque(maxlen=RECENT_KEPT))
    alerts: deque[Entry] = field(default_factory=lambda: deque(maxlen=RECENT_KEPT))
    alerts_sent: int = 0
    alerts_failed: int = 0
    # the equity curve, one point per bar time (thinned to every other point when full)
    curve: list[CurvePoint] = field(default_factory=list)
    curve_stride: int = 1
    _curve_skipped: int = 0
    run_start_seq: int = 0
    # fills since each symbol's position was last flat: the numbers behind a position
    position_fills: dict[str, list[FillRef]] = field(default_factory=dict)
    position_adjustments: dict[str, list[int]] = field(default_factory=dict)
    # the stop each intent recorded (the protection a strategy asked for)
    intent_stops: dict[str, Decimal] = field(default_factory=dict)
    stream: StreamInfo = field(default_factory=StreamInfo)
    last_ts: datetime | None = None
    events: int = 0

    def apply(self, seq: int, e: Event, proj: Projections) -> None:
        self.events += 1
        self.last_ts = e.ts
        if isinstance(e, BarReceived):
            self._curve(seq, e, proj)
        entry = make_entry(seq, e)
        self.timeline.append(entry)  # bars too: the timeline filters, it does not forget
        if isinstance(e, FillReceived):
            self._fill(seq, e, proj)
        elif isinstance(e, OrderIntent):
            if e.stop_price is not None:
                self.intent_stops[e.intent_id] = e.stop_price
        elif isinstance(e, RiskRejected):
            self.recent_rejections.append(entry)
            for r in e.reasons:
                self.rejections[r.code] += 1
                self.rejection_examples[r.code] = entry
        elif isinstance(e, (DiscrepancyFound, OrphanOrderAdopted, OrphanOrderCanceled)):
            self.discrepancies.append(entry)
            self.discrepancy_count += 1
        elif isinstance(e, PositionAdjusted):
            self.discrepancies.append(entry)
            self.discrepancy_count += 1
            self.position_adjustments.setdefault(e.symbol, []).append(seq)
            pos = proj.positions.positions.get(e.symbol)
            if pos is None or not pos.qty:
                self.position_fills.pop(e.symbol, None)
        elif isinstance(e, (DataRejected, DataGap, UnknownBrokerMessage, IllegalTransition)):
            self.data_problems.append(entry)
        elif isinstance(e, StrategyError):
            self.strategy_errors.append(entry)
        elif isinstance(e, AlertSent):
            self.alerts.append(entry)
            if e.delivered:
                self.alerts_sent += 1
            else:
                self.alerts_failed += 1
        elif isinstance(e, BrokerStreamStatus):
            if self.stream.connected != e.connected or self.stream.state != e.state:
                self.stream = StreamInfo(state=e.state, connected=e.connected, since=e.ts,
                                         detail=e.detail, seq=seq)
        elif isinstance(e, RunStarted):
            self.run_start_seq = seq

    def _fill(self, seq: int, e: FillReceived, proj: Projections) -> None:
        pos = proj.positions.positions.get(e.symbol)
        if pos is None or pos.qty == 0:
            self.position_fills.pop(e.symbol, None)
            return
        refs = self.position_fills.setdefault(e.symbol, [])
        before = pos.qty - (e.qty if e.side == "buy" else -e.qty)
        if before == 0 or (before > 0) != (pos.qty > 0):
            refs.clear()  # opened (or flipped through zero) by this fill
        refs.append(FillRef(seq=seq, ts=e.ts, client_order_id=e.client_order_id, side=e.side,
                            qty=e.qty, price=e.price, fee=e.fee))

    def _curve(self, seq: int, e: BarReceived, proj: Projections) -> None:
        ts = e.bar.end
        if self.curve and self.curve[-1].ts == ts:
            self.curve[-1] = CurvePoint(seq, ts, proj.equity())  # same bar time, newer marks
            return
        self._curve_skipped += 1
        if self._curve_skipped < self.curve_stride:
            return
        self._curve_skipped = 0
        self.curve.append(CurvePoint(seq, ts, proj.equity()))
        if len(self.curve) >= CURVE_POINTS:
            self.curve = self.curve[::2]
            self.curve_stride *= 2


def make_entry(seq: int, e: Event) -> Entry:
    iid, coid, sym = correlation(e)
    return Entry(seq=seq, ts=e.ts, type=tag_of(type(e)), symbol=sym, client_order_id=coid,
                 intent_id=iid, event=e)
