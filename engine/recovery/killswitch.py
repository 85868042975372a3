"""The kill switch: halt, cancel everything at the broker, optionally flatten, and *verify at
the broker* — "verified" is only recorded once the broker itself shows no open orders (and
flat positions when flattening was asked). It survives restarts: the engaged state is in the
log, and a halted engine comes back halted until a person releases it; an engaged switch that
was never verified is worked on again at every start until it is.

It never depends on the trade stream: every order of ours that the broker no longer lists as
open is settled by looking it up (canceled, filled — fills booked), so a cancel whose update
was lost, or a 422 "already canceled" to a repeated cancel, can not leave the log believing an
order still works. Flattening sizes against what the broker itself still has open.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

import anyio

from engine.brokers.base import Broker, BrokerError, BrokerOrder
from engine.brokers.kinds import OrderState
from engine.clock import Clock
from engine.execution.router import OrderRouter
from engine.execution.service import ExecutionService
from events.catalogue import (
    KillSwitchEngaged,
    KillSwitchReleased,
    KillSwitchVerified,
    OrderIntent,
    TradingStateChanged,
)
from events.store import EventLog
from events.vocabulary import ZERO
from projections.state import Projections

log = logging.getLogger(__name__)


@dataclass
class KillResult:
    verified: bool
    attempts: int
    open_orders: int
    flat: bool


class KillSwitch:
    def __init__(self, log_: EventLog, projections: Projections, broker: Broker,
                 execution: ExecutionService, router: OrderRouter, clock: Clock, *,
                 verify_attempts: int = 20, verify_backoff_s: float = 0.25) -> None:
        self._log = log_
        self._proj = projections
        self._broker = broker
        self._exec = execution
        self._router = router
        self._clock = clock
        self._attempts = verify_attempts
        self._backoff = verify_backoff_s
        self._lock = anyio.Lock()

    async def engage(self, *, actor: str, reason: str, flatten: bool = False,
                     attempts: int | None = None) -> KillResult:
        """Halt first (durably), then cancel and flatten at the broker, then verify there
        (up to `attempts` times, default the configured number, waiting between tries).
        One round at a time: a second caller waits for the round under way."""
        tries = attempts or self._attempts
        if self._proj.risk.kill_switch == "off":
            await self._log.append(KillSwitchEngaged(ts=self._clock.now(), actor=actor,
                                                     reason=reason, flatten=flatten))
        async with self._lock:
            return await self._round(flatten, tries)

    async def _round(self, flatten: bool, tries: int) -> KillResult:
        result = KillResult(verified=False, attempts=0, open_orders=-1, flat=False)
        flatten_sent: set[str] = set()
        for attempt in range(1, tries + 1):
            result.attempts = attempt
            await self._cancel_everything()
            if flatten:
                await self._flatten(attempt, flatten_sent)
            try:
                open_orders = await self._broker.open_orders()
                positions = await self._broker.positions()
            except BrokerError as e:
                log.warning("kill switch: broker check failed (%s); retrying", e)
                await self._clock.sleep(self._backoff)
                continue
            await self._settle(open_orders)  # fills of the flattening orders, lost cancels
            result.open_orders = len(open_orders)
            result.flat = all(p.qty == 0 for p in positions)
            if not open_orders and (result.flat or not flatten):
                await self._log.append(KillSwitchVerified(
                    ts=self._clock.now(), open_orders=0, flat=result.flat, attempts=attempt))
                log.info("kill switch verified at the broker: nothing open%s (attempt %d)",
                         ", flat" if result.flat else "", attempt,
                         extra={"seq": self._log.last_seq})
                result.verified = True
                return result
            if attempt < tries:
                await self._clock.sleep(self._backoff * min(attempt, 8))
        log.error("kill switch NOT verified after %d attempts: %d open orders, flat=%s",
                  result.attempts, result.open_orders, result.flat)
        return result

    async def _settle(self, remote_open: list[BrokerOrder]) -> None:
        """Our orders the broker does not list as open ended there: record how."""
        working = {o.client_order_id for o in remote_open}
        gone = [c for c in sorted(self._proj.orders.open_ids) if c not in working]
        if gone:
            await self._exec.settle_by_lookup(gone)

    async def verify(self, *, flatten: bool) -> bool:
        """Look once (no cancels, no orders): record `KillSwitchVerified` if the broker shows
        nothing open and, when flattening was asked, no position. For callers that can not
        wait within a step (backtests) and look again after later bars."""
        try:
            open_orders = await self._broker.open_orders()
            positions = await self._broker.positions()
        except BrokerError as e:
            log.warning("kill switch: broker check failed (%s)", e)
            return False
        flat = all(p.qty == 0 for p in positions)
        if open_orders or (flatten and not flat):
            return False
        await self._log.append(KillSwitchVerified(ts=self._clock.now(), open_orders=0,
                                                  flat=flat, attempts=1))
        return True

    async def _cancel_everything(self) -> None:
        try:
            remote = await self._broker.open_orders()
        except BrokerError:
            remote = None
        if remote is not None:
            await self._settle(remote)
        for coid in sorted(self._proj.orders.open_ids):
            await self._exec.cancel(coid, reason="kill switch", actor="kill_switch")
        if remote is None:
            return
        for o in remote:  # including orders we did not place
            if o.client_order_id in self._proj.orders.orders:
                t = self._exec.tracker.get(o.client_order_id)
                if t is not None and t.is_open and t.status.value != "pending_cancel":
                    continue  # our cancel above covers it
                if o.state == OrderState.PENDING_CANCEL:
                    continue  # asked already; the broker is working on it
            try:
                await self._broker.cancel(o.broker_order_id)
            except BrokerError as e:
                log.warning("kill switch: cancel of %s refused: %s", o.broker_order_id, e)

    async def _flatten(self, attempt: int, sent: set[str]) -> None:
        try:
            positions = await self._broker.positions()
            remote = await self._broker.open_orders()
        except BrokerError:
            return
        for p in positions:
            # What the broker still works to close this position (its view, not the log's:
            # an order the log believes open may be long gone).
            closing_side = "sell" if p.qty > 0 else "buy"
            # A one-cancels-other group (an OCO, a bracket's legs) closes its shares once.
            groups: dict[str, Decimal] = {}
            for o in remote:
                if o.symbol == p.symbol and o.side == closing_side and o.qty is not None:
                    key = o.parent_broker_order_id or o.broker_order_id
                    groups[key] = max(groups.get(key, ZERO), o.qty - o.filled_qty)
            open_closing = sum(groups.values(), ZERO)
            qty = abs(p.qty) - open_closing
            if p.qty == 0 or qty <= 0:
                continue  # nothing left that an order still open does not already close
            # One closing intent per symbol per attempt; reduce-only, so the gate lets it
            # through even while halted, and only if it shrinks the position.
            intent_id = f"kill:{p.symbol}:{self._clock.now():%Y%m%dT%H%M%S}:{attempt}"
            if intent_id in sent:
                continue
            sent.add(intent_id)
            await self._router.route(OrderIntent(
                ts=self._clock.now(), intent_id=intent_id, strategy="kill_switch",
                symbol=p.symbol, side="sell" if p.qty > 0 else "buy", qty=qty,
                reduce_only=True, reason="kill switch flatten"), flatten=True)

    async def release(self, *, actor: str, reason: str, resume: bool = True) -> None:
        await self._log.append(KillSwitchReleased(ts=self._clock.now(), actor=actor,
                                                  reason=reason))
        if resume and self._proj.risk.trading_state != "recovering":
            await self._log.append(TradingStateChanged(ts=self._clock.now(), state="active",
                                                       reason=f"released by {actor}: {reason}",
                                                       actor=actor))

