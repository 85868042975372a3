"""Protection survives everything: at every start and every reconciliation, each open
position's protection is compared with the orders the broker still works.

Runs after orders were reconciled, so the log already knows what the broker did while we
were not listening (a stop canceled by hand, a DAY stop that expired overnight, a leg the
broker rejected). A position whose last protective stop ended without filling and that no
live stop covers is recorded as `ProtectionMissing` (the notifier's "missing protection"
alert) and handled by policy (`reconcile.missing_protection`):

- `restore`: the same stop (type, stop price or trail, the uncovered quantity) is asked for
  again through the gate, as a reduce-only intent whose id is derived from the stop that went
  missing (`restore:<client id>`). The gate answers a known intent id with its first decision,
  so a stop is restored once, however many restarts or reconciliations see it missing; a
  restored stop that goes missing in turn gets its own id.
- `halt`: trading halts (a person looks); `alert`: only recorded.

Nothing is done while the kill switch is engaged (it cancels stops on purpose) or while an
exit of the position is under way (a strategy's exit cancels the protection first).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from engine.clock import Clock
from engine.execution.router import OrderRouter
from events.catalogue import OrderIntent, ProtectionMissing, TradingStateChanged
from events.store import EventLog
from events.vocabulary import ZERO
from projections.orders import TERMINAL, Order, OrderStatus, armed_stops
from projections.state import Projections

log = logging.getLogger(__name__)
MissingPolicy = Literal["restore", "halt", "alert"]
_ENDED_UNFILLED = frozenset({OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED})


@dataclass(frozen=True)
class Missing:
    symbol: str
    position: Decimal
    uncovered: Decimal
    stop: Order  # the protective stop that ended without filling


def restore_intent_id(missing_client_order_id: str) -> str:
    return f"restore:{missing_client_order_id}"


def find_missing(proj: Projections) -> list[Missing]:
    """Open positions whose last protective stop ended unfilled and that live stops do not
    fully cover."""
    out = []
    for symbol, pos in sorted(proj.positions.positions.items()):
        if not pos.qty:
            continue
        closing = "sell" if pos.qty > 0 else "buy"
        covered = sum(((s.qty or ZERO) - s.filled_qty for s in armed_stops(proj.orders, symbol)
                       if s.side == closing), ZERO)
        uncovered = abs(pos.qty) - covered
        if uncovered <= 0:
            continue
        last = _last_stop(proj, symbol, closing)
        if last is None or last.status not in _ENDED_UNFILLED or last.settled_by_parent:
            continue  # never protected, or its protection ended by design
        out.append(Missing(symbol=symbol, position=pos.qty, uncovered=uncovered, stop=last))
    return out


def _last_stop(proj: Projections, symbol: str, closing: str) -> Order | None:
    stops = [o for o in proj.orders.orders.values()
             if o.symbol == symbol and o.protective and o.is_stop and o.side == closing
             and o.status != OrderStatus.REPLACED]
    return max(stops, key=lambda o: o.updated_seq, default=None)


def _exit_under_way(proj: Projections, symbol: str, closing: str) -> bool:
    return any(o.symbol == symbol and o.side == closing and not o.protective
               and o.status not in TERMINAL
               for o in (proj.orders.orders[c] for c in proj.orders.open_ids))


class ProtectionGuard:
    def __init__(self, log_: EventLog, projections: Projections, router: OrderRouter,
                 clock: Clock, policy: MissingPolicy) -> None:
        self._log = log_
        self._proj = projections
        self._router = router
        self._clock = clock
        self.policy = policy
        self._reported: set[str] = set()

    async def check(self, *, when: str) -> list[Missing]:
        """Compare, record what is missing, apply the policy. Returns what was missing."""
        proj = self._proj
        if proj.risk.kill_switch != "off":
            return []
        found = []
        for m in find_missing(proj):
            closing = m.stop.side
            if _exit_under_way(proj, m.symbol, closing):
                continue
            intent_id = restore_intent_id(m.stop.client_order_id)
            if proj.risk.decisions.get(intent_id) is not None:
                continue  # restored (or refused) once already: not twice
            found.append(m)
            if m.stop.client_order_id not in self._reported:
                self._reported.add(m.stop.client_order_id)
                await self._log.append(ProtectionMissing(
                    ts=self._clock.now(), symbol=m.symbol, client_order_id=m.stop.client_order_id,
                    position=m.position, uncovered=m.uncovered,
                    stop_status=m.stop.status.value, action=self.policy, found_at=when,
                    restore_intent_id=intent_id if self.policy == "restore" else None,
                    detail=self._describe(m.stop)))
                log.warning("%s: protection missing (%s %s); policy %s", m.symbol,
                            m.stop.client_order_id, m.stop.status.value, self.policy,
                            extra={"seq": self._log.last_seq})
            if self.policy == "restore":
                await self._restore(m, intent_id)
            elif self.policy == "halt" and proj.risk.trading_state != "halted":
                await self._log.append(TradingStateChanged(
                    ts=self._clock.now(), state="halted", actor="protection",
                    reason=f"{m.symbol}: protection missing ({m.stop.client_order_id})"))
        return found

    @staticmethod
    def _describe(o: Order) -> str:
        if o.order_type == "trailing_stop":
            trail = f"trail {o.trail_price}" if o.trail_price is not None \
                else f"trail {o.trail_percent}%"
            return f"trailing stop {o.side} {trail}"
        level = f"stop {o.stop_price}" + (f" limit {o.limit_price}"
                                          if o.order_type == "stop_limit" else "")
        return f"{o.order_type} {o.side} {level}"

    async def _restore(self, m: Missing, intent_id: str) -> None:
        o = m.stop
        whole = m.uncovered == m.uncovered.to_integral_value()
        trailing = o.order_type == "trailing_stop"
        intent = OrderIntent(
            ts=self._clock.now(), intent_id=intent_id, strategy=o.strategy, symbol=m.symbol,
            side=o.side, order_type=o.order_type, qty=m.uncovered,
            stop_price=None if trailing else o.stop_price,
            limit_price=o.limit_price if o.order_type == "stop_limit" else None,
            trail_price=o.trail_price if trailing else None,
            trail_percent=o.trail_percent if trailing else None,
            # a stop must outlive the session; fractional shares only take day orders
            time_in_force="gtc" if whole else "day",
            reduce_only=True, reason=f"restore missing protection {o.client_order_id}")
        decision = await self._router.route(intent)
        log.info("%s: restoring protection %s -> %s", m.symbol, o.client_order_id,
                 type(decision).__name__, extra={"seq": self._log.last_seq})
