"""What the execution service knows about an order that the log does not hold.

Order status, quantities, fills and execution ids live only in the projections
(`projections/orders.py`), which fold every event the moment it is appended, so reading them
right after an `append_nowait` already sees it. What stays here are facts that are not
events: a submit under way in this process, a replace we asked for and its terms (the
stream's `replaced` may arrive before the REST answer, and the replacement's own messages
before either), the broker's highest reported cumulative fill, and execution ids seen but not
booked (their shares were already inferred).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from events.vocabulary import ZERO
from projections.orders import TERMINAL, Order, OrderStatus, would_move
from projections.state import Projections


@dataclass(frozen=True, slots=True)
class PendingReplace:
    """A replace we sent: the old order, and the terms its replacement carries."""

    old_client_order_id: str
    new_client_order_id: str
    qty: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None


@dataclass(slots=True)
class Tracked:
    """One order: the projection's record plus the process-local facts above."""

    client_order_id: str
    proj: Projections
    broker_cum_qty: Decimal = ZERO
    # A submit call (or its resolution by lookup) is under way in this process: "not found"
    # may just mean "not yet", so nobody else may close the order.
    in_flight: bool = False
    asked: PendingReplace | None = None  # a replace this process sent

    @property
    def replacing(self) -> PendingReplace | None:
        """The replace under way: this process's, else one the log records as asked for and
        not yet answered (a restart mid-replace)."""
        if self.asked is not None:
            return self.asked
        o = self.proj.orders.orders.get(self.client_order_id)
        p = o.pending if o is not None else None
        if p is None or p.new_client_order_id is None:
            return None
        left = o.qty - o.filled_qty if o is not None and o.qty is not None else None
        return PendingReplace(old_client_order_id=self.client_order_id,
                              new_client_order_id=p.new_client_order_id,
                              qty=p.qty if p.qty is not None else left,
                              limit_price=p.limit_price, stop_price=p.stop_price,
                              trail_price=p.trail_price, trail_percent=p.trail_percent)

    @property
    def order(self) -> Order:
        return self.proj.orders.orders[self.client_order_id]

    @property
    def status(self) -> OrderStatus:
        return self.order.status

    @property
    def qty(self) -> Decimal | None:
        return self.order.qty

    @property
    def filled_qty(self) -> Decimal:
        return self.order.filled_qty

    @property
    def filled_notional(self) -> Decimal:
        return self.order.filled_notional

    @property
    def broker_order_id(self) -> str | None:
        return self.order.broker_order_id

    @property
    def submit_attempts(self) -> int:
        return self.order.submit_attempts

    @property
    def is_open(self) -> bool:
        return self.status not in TERMINAL


@dataclass
class ExecutionTracker:
    proj: Projections
    orders: dict[str, Tracked] = field(default_factory=dict)
    # Execution ids whose shares were booked before their message arrived (inferred).
    unbooked_execution_ids: set[str] = field(default_factory=set)
    # new client id -> the replace that will create it
    replaces: dict[str, PendingReplace] = field(default_factory=dict)

    def get(self, coid: str) -> Tracked | None:
        t = self.orders.get(coid)
        if t is not None:
            return t
        o = self.proj.orders.orders.get(coid)
        if o is None:
            return None
        t = Tracked(client_order_id=coid, proj=self.proj, broker_cum_qty=o.filled_qty)
        self.orders[coid] = t
        return t

    def seen_execution(self, execution_id: str) -> bool:
        return (execution_id in self.proj.orders.execution_ids
                or execution_id in self.unbooked_execution_ids)

    def would_move(self, t: Tracked, tag: str) -> bool:
        """The projection's own rule (one state machine), asked before the append."""
        return would_move(t.order, tag)

    def start_replace(self, t: Tracked, pending: PendingReplace) -> None:
        t.asked = pending
        self.replaces[pending.new_client_order_id] = pending

    def replace_creating(self, new_coid: str) -> PendingReplace | None:
        found = self.replaces.get(new_coid)
        if found is not None:
            return found
        for coid in self.proj.orders.open_ids:  # asked for before a restart
            o = self.proj.orders.orders[coid]
            if o.pending is not None and o.pending.new_client_order_id == new_coid:
                t = self.get(coid)
                return t.replacing if t is not None else None
        return None
