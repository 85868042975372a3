"""The execution service's up-to-the-append view of each order.

The projections only show what is committed; the execution service appends without waiting
for every commit, and several tasks (the submit path, the trade-update stream, gap filling,
reconciliation) touch the same orders. So it keeps, per order, what it has *appended*: the
predicted state, the quantity booked, the execution ids seen and the highest cumulative fill
the broker reported. Every decision that could double-book money is taken against this,
synchronously, right before the append that records it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from projections.orders import FILL_TARGET, RESUME_TARGET, TERMINAL, TRANSITIONS, OrderStatus
from projections.state import Projections

ZERO = Decimal(0)


@dataclass(slots=True)
class Tracked:
    client_order_id: str
    status: OrderStatus
    qty: Decimal | None
    filled_qty: Decimal
    filled_notional: Decimal
    broker_order_id: str | None
    broker_cum_qty: Decimal = ZERO
    submit_attempts: int = 0
    # The replacement's client id while a replace we asked for is under way.
    replacing: str | None = None
    # A submit call (or its resolution by lookup) is under way in this process: "not found"
    # may just mean "not yet", so nobody else may close the order.
    in_flight: bool = False

    @property
    def is_open(self) -> bool:
        return self.status not in TERMINAL


@dataclass
class ExecutionTracker:
    proj: Projections
    orders: dict[str, Tracked] = field(default_factory=dict)
    execution_ids: set[str] = field(default_factory=set)

    def get(self, coid: str) -> Tracked | None:
        t = self.orders.get(coid)
        if t is not None:
            return t
        o = self.proj.orders.orders.get(coid)
        if o is None:
            return None
        t = Tracked(client_order_id=coid, status=o.status, qty=o.qty, filled_qty=o.filled_qty,
                    filled_notional=o.filled_notional, broker_order_id=o.broker_order_id,
                    broker_cum_qty=o.filled_qty, submit_attempts=o.submit_attempts)
        self.orders[coid] = t
        return t

    def seen_execution(self, execution_id: str) -> bool:
        return execution_id in self.execution_ids or execution_id in self.proj.orders.execution_ids

    def would_move(self, t: Tracked, tag: str) -> bool:
        return tag in TRANSITIONS[t.status]

    def note(self, t: Tracked, tag: str) -> None:
        """Record that an order event with `tag` was appended (mirrors the projection)."""
        target = TRANSITIONS[t.status].get(tag)
        if target is None or target == FILL_TARGET:
            return
        if target == RESUME_TARGET:
            t.status = OrderStatus.PARTIALLY_FILLED if t.filled_qty > 0 else OrderStatus.ACCEPTED
        else:
            t.status = OrderStatus(target)

    def note_fill(self, t: Tracked, execution_id: str, qty: Decimal, price: Decimal,
                  done: bool) -> None:
        self.execution_ids.add(execution_id)
        allowed = "fill" in TRANSITIONS[t.status]
        t.filled_qty += qty
        t.filled_notional += qty * price
        t.broker_cum_qty = max(t.broker_cum_qty, t.filled_qty)
        if allowed:
            complete = done or (t.qty is not None and t.filled_qty >= t.qty)
            if complete:
                t.status = OrderStatus.FILLED
            elif t.status != OrderStatus.PENDING_CANCEL:
                t.status = OrderStatus.PARTIALLY_FILLED
