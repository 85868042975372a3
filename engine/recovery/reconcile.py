"""Making the log agree with the broker — at startup and every N seconds while running.

Order of work matters. Orders are reconciled first: a fill the broker made while we were not
listening is booked as an inferred fill of *our* order (only the difference between the
broker's cumulative quantity and ours, with an id that is a hash of the facts, so a second
restart or a late stream message never books it twice). Only then are positions compared:
what still differs is not explained by any order of ours (someone traded by hand, a corporate
action) and is handled by policy — adopt (set our position to the broker's with a loud
discrepancy and an adjustment that names the reason) or refuse (stay halted until a person
looks). We never "fix" a difference by inventing a fill.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from engine.brokers.base import Broker, BrokerOrder, BrokerPosition
from engine.clock import Clock
from engine.execution.service import ExecutionService
from events.catalogue import (
    AccountSnapshot,
    DiscrepancyFound,
    OrphanOrderAdopted,
    OrphanOrderCanceled,
    PositionAdjusted,
    ReconciliationCompleted,
)
from events.store import EventLog
from events.vocabulary import ZERO
from projections.orders import OrderStatus
from projections.state import Projections

log = logging.getLogger(__name__)
OUR_PREFIX = "mqd-"


@dataclass(frozen=True)
class ReconcilePolicy:
    unexplained_position: Literal["adopt", "refuse"] = "adopt"
    foreign_orders: Literal["cancel", "leave"] = "leave"
    # Periodic checks race with fills in flight: a difference must be seen this many times
    # in a row before it is acted on.
    confirmations: int = 2
    # Kill-switch trigger: unexplained position value above this many dollars.
    max_mismatch_value: Decimal = Decimal(500)


@dataclass
class ReconcileResult:
    discrepancies: int = 0
    unexplained: list[str] = field(default_factory=list)
    mismatch_value: Decimal = ZERO
    refused: bool = False


def adjustment_id(account: str, symbol: str, before: Decimal, after: Decimal,
                  avg: Decimal, reason: str) -> str:
    facts = "|".join([account, symbol, str(before), str(after), str(avg), reason])
    return "adj-" + hashlib.sha256(facts.encode()).hexdigest()[:40]


class Reconciler:
    def __init__(self, log_: EventLog, projections: Projections, broker: Broker,
                 execution: ExecutionService, clock: Clock, policy: ReconcilePolicy,
                 account_id: str = "") -> None:
        self._log = log_
        self._proj = projections
        self._broker = broker
        self._exec = execution
        self._clock = clock
        self.policy = policy
        self._account_id = account_id
        self._suspects: dict[str, int] = {}

    async def account_snapshot(self) -> AccountSnapshot:
        asked = self._clock.now()
        a = await self._broker.account()
        snap = AccountSnapshot(ts=self._clock.now(), equity=a.equity, cash=a.cash,
                               buying_power=a.buying_power, source=self._broker.name,
                               daytrade_count=a.daytrade_count,
                               pattern_day_trader=a.pattern_day_trader, account_id=a.account_id,
                               as_of=asked)
        await self._log.append(snap)
        return snap

    async def orders(self, *, startup: bool) -> int:
        """Settle every order of ours that the log thinks is not finished, and deal with open
        orders at the broker that the log does not know. Returns the discrepancies found."""
        found = 0
        now = self._clock.now()
        for coid in sorted(self._proj.orders.open_ids):
            order = self._proj.orders.orders[coid]
            if order.status == OrderStatus.NEW:
                if startup:
                    # Approved before the restart and never sent: the decision was taken on
                    # state that is now stale, so it is closed, not sent late.
                    await self._exec.cancel(coid, reason="approved but not sent before restart")
                continue
            if order.status == OrderStatus.PENDING_SUBMIT:
                t = self._exec.tracker.get(coid)
                if t is not None and t.in_flight:
                    continue  # its submit is under way right now; it settles itself
                if not await self._exec.resolve_in_flight(coid, None):
                    found += 1
                    await self._log.append(DiscrepancyFound(
                        ts=now, kind="in_flight_unresolved", client_order_id=coid,
                        symbol=order.symbol, detail="submit outcome still unknown"))
                continue
            remote = await self._exec._lookup(coid)
            if remote is None:
                found += 1
                await self._log.append(DiscrepancyFound(
                    ts=now, kind="order_missing_at_broker", client_order_id=coid,
                    symbol=order.symbol, ours=order.status.value, broker="not found",
                    detail="an order the log thinks open is unknown to the broker"))
                continue
            # Missing acks, fills or a cancel of our own order are explained, not
            # discrepancies: they are recorded as the order's own events.
            await self._exec.sync_order(remote, source="reconcile")
        for remote in await self._broker.open_orders():
            local = self._proj.orders.orders.get(remote.client_order_id)
            if local is None:
                found += 1
                await self._orphan(remote)
            elif not local.is_open:
                found += 1
                await self._closed_but_open(local.status.value, remote)
        return found

    async def _closed_but_open(self, ours: str, o: BrokerOrder) -> None:
        """An order of ours that the log has closed but the broker still works: it must not
        trade unseen. Cancel it; its fills, if any come, are booked as usual."""
        await self._log.append(DiscrepancyFound(
            ts=self._clock.now(), kind="open_at_broker_closed_in_log",
            client_order_id=o.client_order_id, symbol=o.symbol, ours=ours, broker=o.status,
            detail="the broker still works an order the log closed: canceling it"))
        try:
            await self._broker.cancel(o.broker_order_id)
        except Exception as e:  # noqa: BLE001 - reported; the next reconciliation tries again
            log.warning("cancel of %s failed: %s", o.client_order_id, e)

    async def _orphan(self, o: BrokerOrder) -> None:
        now = self._clock.now()
        if o.client_order_id.startswith(OUR_PREFIX):
            await self._log.append(DiscrepancyFound(
                ts=now, kind="orphan_order_ours", client_order_id=o.client_order_id,
                symbol=o.symbol, broker=o.status,
                detail="an open order with our client id prefix that the log does not know: adopted"))
            await self._log.append(OrphanOrderAdopted(
                ts=now, client_order_id=o.client_order_id, broker_order_id=o.broker_order_id,
                symbol=o.symbol, side=o.side, order_type=o.order_type, qty=o.qty,
                notional=o.notional, limit_price=o.limit_price, filled_qty=o.filled_qty,
                broker_status=o.status))
            await self._exec.sync_order(o, source="reconcile")
            return
        await self._log.append(DiscrepancyFound(
            ts=now, kind="foreign_order", client_order_id=o.client_order_id, symbol=o.symbol,
            broker=f"{o.side} {o.qty or o.notional} {o.status}",
            detail=f"an open order not placed by this engine; policy: {self.policy.foreign_orders}"))
        if self.policy.foreign_orders == "cancel":
            try:
                await self._broker.cancel(o.broker_order_id)
            except Exception as e:  # noqa: BLE001  (reported; the next reconciliation tries again)
                log.warning("cancel of foreign order %s failed: %s", o.broker_order_id, e)
                return
            await self._log.append(OrphanOrderCanceled(
                ts=now, client_order_id=o.client_order_id, broker_order_id=o.broker_order_id,
                symbol=o.symbol, reason="foreign order canceled per policy"))

    async def positions(self, *, confirm: bool) -> ReconcileResult:
        """Compare positions (after orders are settled) and apply the policy to what differs."""
        result = ReconcileResult()
        remote: dict[str, BrokerPosition] = {p.symbol: p for p in await self._broker.positions()}
        ours = {s: p for s, p in self._proj.positions.positions.items() if p.qty != 0}
        now = self._clock.now()
        for sym in sorted(set(remote) | set(ours)):
            theirs = remote[sym].qty if sym in remote else ZERO
            mine = ours[sym].qty if sym in ours else ZERO
            if theirs == mine:
                self._suspects.pop(sym, None)
                continue
            if confirm:
                seen = self._suspects.get(sym, 0) + 1
                self._suspects[sym] = seen
                if seen < self.policy.confirmations:
                    continue
            self._suspects.pop(sym, None)
            avg = remote[sym].avg_entry_price if sym in remote else ZERO
            price = avg or (ours[sym].avg_cost if sym in ours else ZERO)
            result.discrepancies += 1
            result.unexplained.append(sym)
            result.mismatch_value += abs(theirs - mine) * price
            await self._log.append(DiscrepancyFound(
                ts=now, kind="position_mismatch", symbol=sym, ours=str(mine), broker=str(theirs),
                detail=("no order of ours explains the difference (traded by hand at the broker?); "
                        f"policy: {self.policy.unexplained_position}")))
            if self.policy.unexplained_position == "adopt":
                reason = f"set to the broker's position {theirs} (was {mine}): unexplained difference"
                await self._log.append(PositionAdjusted(
                    ts=now, adjustment_id=adjustment_id(self._account_id, sym, mine, theirs, avg,
                                                        "unexplained"),
                    symbol=sym, qty_before=mine, qty_after=theirs, avg_price=avg, reason=reason))
            else:
                result.refused = True
        return result

    async def reconcile(self, *, startup: bool) -> ReconcileResult:
        order_issues = await self.orders(startup=startup)
        result = await self.positions(confirm=not startup)
        result.discrepancies += order_issues
        await self.account_snapshot()
        await self._log.append(ReconciliationCompleted(
            ts=self._clock.now(), kind="startup" if startup else "periodic",
            ok=not result.refused and result.discrepancies == 0,
            discrepancies=result.discrepancies))
        return result
