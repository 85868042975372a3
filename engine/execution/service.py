"""Execution: from an approved decision to a broker order, and from broker messages to events.

The rules it keeps:
- Nothing reaches the broker before `OrderSubmitRequested` is durable (and the approval before
  it). The client order id is the one the gate derived from the intent, so a retry or a
  restart can never create a second order for the same intent.
- An ambiguous submit (timeout, disconnect, 5xx, unparsable, Alpaca's "client_order_id must be
  unique") is never a rejection: the order stays in flight and is resolved by looking it up by
  client id. Only a genuine "not found" may be resubmitted, with the same client id.
- A fill is booked once: by execution id, and never beyond the cumulative quantity the broker
  reported for the order, so a stream message, a gap fill over REST and an inference during
  reconciliation can not double count the same shares.
- Every broker message becomes an event. One the state machine refuses (a duplicate or late
  update) is still recorded, followed by an `IllegalTransition`, and moves nothing backwards.
- Only the events that must precede a broker call (submit, cancel and replace requested) are
  awaited until durable. Broker facts (acks, fills, cancels) are appended in order and not
  awaited one by one: their place in the log is fixed at append time and the projections
  fold them at once, so the next decision already sees them.
- Order state lives only in the projections; the tracker holds what the log does not (a
  submit in flight, a replace we asked for, the broker's cumulative quantity).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import msgspec

from engine.brokers.base import (
    AmbiguousSubmitError,
    Broker,
    BrokerError,
    BrokerEvent,
    BrokerOrder,
    BrokerUnavailableError,
    CancelRejectedError,
    OrderNotFoundError,
    OrderRejectedError,
    OrderRequest,
    StreamConnected,
    TradeUpdate,
    UnparsedMessage,
)
from engine.brokers.kinds import FILL_KINDS, PENDING_KINDS, OrderState, UpdateKind
from engine.clock import Clock
from engine.execution.tracker import ExecutionTracker, PendingReplace, Tracked
from events.base import Event
from events.catalogue import (
    CancelRejected,
    CancelRequested,
    DiscrepancyFound,
    FillReceived,
    IllegalTransition,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    OrderReplaced,
    OrderSubmitAmbiguous,
    OrderSubmitRequested,
    OrderSubmitted,
    ReplaceRequested,
    RiskApproved,
    TrailingStopUpdated,
    UnknownBrokerMessage,
)
from events.store import EventLog
from events.vocabulary import CENT, ZERO
from projections.orders import OrderStatus, would_move
from projections.state import Projections

log = logging.getLogger(__name__)
S = OrderStatus
K = UpdateKind
B = OrderState  # where the broker says an order stands (ours is `S`)

# Order events worth an INFO line (the rest are DEBUG).
_NOTABLE = frozenset({"order_rejected", "order_canceled", "order_expired", "order_submit_ambiguous",
                      "cancel_rejected", "order_replaced"})

# How far back a gap fill looks before the last update seen (clock skew, ordering slack).
GAP_FILL_SLACK = timedelta(minutes=2)


def request_for(approved: RiskApproved) -> OrderRequest:
    """The broker request for an approval: exactly what was approved, legs included."""
    return OrderRequest(
        client_order_id=approved.client_order_id, symbol=approved.symbol, side=approved.side,
        order_type=approved.order_type, time_in_force=approved.time_in_force,
        qty=approved.qty, notional=approved.notional, limit_price=approved.limit_price,
        stop_price=approved.stop_price, trail_price=approved.trail_price,
        trail_percent=approved.trail_percent,
        order_class=approved.order_class,  # type: ignore[arg-type]
        take_profit=approved.take_profit, stop_loss=approved.stop_loss, legs=approved.legs)


def inferred_execution_id(*facts: object) -> str:
    """A deterministic id for a fill we infer from the broker's order state rather than from
    an execution message: the same facts give the same id, so it is booked once."""
    digest = hashlib.sha256("|".join(str(f) for f in facts).encode()).hexdigest()
    return f"inferred-{digest[:40]}"


class ExecutionService:
    def __init__(self, log_: EventLog, projections: Projections, broker: Broker, clock: Clock, *,
                 account_id: str = "", submit_timeout_s: float = 10.0,
                 lookup_attempts: int = 5, lookup_backoff_s: float = 0.5,
                 max_submit_attempts: int = 3) -> None:
        self._log = log_
        self._proj = projections
        self._broker = broker
        self._clock = clock
        self._account_id = account_id
        self._submit_timeout = submit_timeout_s
        self._lookup_attempts = lookup_attempts
        self._lookup_backoff = lookup_backoff_s
        self._max_submit_attempts = max_submit_attempts
        self.tracker = ExecutionTracker(projections)
        self._last_update_at: datetime | None = None
        self._gap_fills = 0
        self.on_broker_error: Callable[[str], None] | None = None

    @property
    def broker(self) -> Broker:
        return self._broker

    @property
    def gap_fills(self) -> int:
        return self._gap_fills

    # --- appending -----------------------------------------------------------------------

    def _note(self, event: Event) -> int:
        """Record a broker fact; its seq. Not awaited: nothing waits on its durability, and
        the projections fold it at once (see the module docstring). `enqueue` places the
        same row at the same place as `append_nowait`, without a future nobody reads."""
        return self._log.enqueue(event)

    def _order_event(self, t: Tracked, tag: str, event: Event) -> None:
        """Append an order event; if the state machine will refuse it, say so in the log.
        Nothing waits on it (`_order_event_durable` is for the ones a broker call follows)."""
        order = t.order  # looked up once: the rule and the state before read the same order
        before = order.status
        self._moved(t, tag, would_move(order, tag), before, self._log.enqueue(event))

    def _order_event_durable(self, t: Tracked, tag: str, event: Event) -> asyncio.Future[int]:
        """`_order_event`, and the future of its commit: for a record that must be durable
        before the broker call it announces (submit, cancel and replace requested)."""
        order = t.order
        legal, before = would_move(order, tag), order.status
        fut = self._log.append_nowait(event)
        self._moved(t, tag, legal, before, self._log.assigned_seq)
        return fut

    def _moved(self, t: Tracked, tag: str, legal: bool, before: OrderStatus, seq: int) -> None:
        """After an order event at `seq` (already folded into the projections): its log line,
        and the anomaly if the state machine refused it."""
        level = logging.INFO if tag in _NOTABLE else logging.DEBUG
        if log.isEnabledFor(level):  # the state words (`.value`) only where they are written
            log.log(level, "%s %s (%s -> %s)", tag, t.client_order_id, before.value,
                    "refused" if not legal else t.status.value, extra={"seq": seq})
        if not legal:
            self._illegal(t, tag, before, seq)

    def _illegal(self, t: Tracked, tag: str, before: OrderStatus, seq: int) -> None:
        """The state machine refused the order event `tag` at `seq` in state `before`."""
        self._note(IllegalTransition(ts=self._clock.now(), client_order_id=t.client_order_id,
                                     from_state=before.value, event_type=tag, event_seq=seq))

    # --- submitting ----------------------------------------------------------------------

    async def execute(self, approved: RiskApproved) -> None:
        """Send an approved order. Returns once its outcome is recorded (or it is left in
        flight, to be settled by lookup, the stream or reconciliation)."""
        if approved.replaces is not None:  # an approved stop move: the broker's PATCH
            if approved.client_order_id not in self._proj.orders.orders:
                trail = approved.trail_percent if approved.trail_percent is not None \
                    else approved.trail_price
                await self.replace(approved.replaces, stop_price=approved.stop_price,
                                   trail=trail, new_client_order_id=approved.client_order_id)
            return
        t = self.tracker.get(approved.client_order_id)
        if t is None:
            raise ValueError(f"{approved.client_order_id} is not an approved order in the log")
        status = t.status
        if status == S.PENDING_SUBMIT:
            # Sent before (a retry, or a restart re-offering it): ask, never send blindly.
            await self.resolve_in_flight(t.client_order_id, approved)
            return
        if status != S.NEW:
            return  # already at the broker
        await self._submit(t, approved)

    async def _submit(self, t: Tracked, approved: RiskApproved) -> None:
        t.in_flight = True
        try:
            await self._submit_once(t, approved)
        finally:
            t.in_flight = False

    async def _submit_once(self, t: Tracked, approved: RiskApproved) -> None:
        attempt = t.submit_attempts + 1
        requested = OrderSubmitRequested(
            ts=self._clock.now(), client_order_id=t.client_order_id,
            intent_id=approved.intent_id, symbol=approved.symbol, attempt=attempt)
        external = getattr(self._broker, "external", True)
        if external:
            # From here the order may exist outside this process: a restart must find this
            # record to know it has to look the order up.
            await self._order_event_durable(t, "order_submit_requested", requested)
        else:
            self._order_event(t, "order_submit_requested", requested)
        request = request_for(approved)
        try:
            if external:
                with anyio.fail_after(self._submit_timeout):
                    order = await self._broker.submit(request)
            else:
                # An in-process book answers without I/O: there is no call that could hang,
                # and a timer armed and disarmed per order costs more than the submit itself.
                order = await self._broker.submit(request)
        except OrderRejectedError as e:
            self._order_event(t, "order_rejected", OrderRejected(
                ts=self._clock.now(), client_order_id=t.client_order_id, reason=str(e),
                by_broker=True))
            return
        except (AmbiguousSubmitError, TimeoutError, BrokerError) as e:
            kind = e.kind if isinstance(e, AmbiguousSubmitError) else (
                "timeout" if isinstance(e, TimeoutError) else "broker_error")
            self._order_event(t, "order_submit_ambiguous", OrderSubmitAmbiguous(
                ts=self._clock.now(), client_order_id=t.client_order_id, kind=kind,
                error=str(e) or type(e).__name__, symbol=approved.symbol))
            self._broker_trouble(f"submit {kind}")
            await self._resolve(t.client_order_id, approved)
            return
        await self.sync_order(order, source="submit")

    async def resolve_in_flight(self, coid: str, approved: RiskApproved | None = None) -> bool:
        """Settle an order whose submit outcome is unknown by asking the broker for it by
        client id. Returns True when settled (found, or not found and resubmitted/closed).

        An order whose submit is still under way in this process is left alone (returns
        False): "not found" may only mean "not yet", and closing it here would leave a live
        order that the log calls rejected."""
        t = self.tracker.get(coid)
        if t is not None and t.in_flight:
            return False
        return await self._resolve(coid, approved)

    async def _resolve(self, coid: str, approved: RiskApproved | None) -> bool:
        for attempt in range(self._lookup_attempts):
            try:
                order = await self._broker.get_order_by_client_id(coid)
            except BrokerError as e:
                log.warning("lookup of %s failed (%s); retrying", coid, e)
                await self._clock.sleep(self._lookup_backoff * (2 ** attempt))
                continue
            if order is not None:
                await self.sync_order(order, source="lookup")
                return True
            t = self.tracker.get(coid)
            if t is None or t.status != S.PENDING_SUBMIT:
                return True
            if approved is None or t.submit_attempts >= self._max_submit_attempts:
                # Never reached the broker and we will not send it again: close it so its
                # reservation is released and nobody waits for it.
                self._order_event(t, "order_rejected", OrderRejected(
                    ts=self._clock.now(), client_order_id=coid, by_broker=False,
                    reason=f"not found at the broker after {t.submit_attempts} submit attempts"))
                return True
            await self._submit(t, approved)  # genuinely not found: same client id again
            return True
        return False

    # --- cancel / replace ----------------------------------------------------------------

    async def cancel(self, coid: str, *, reason: str, actor: str = "engine") -> None:
        t = self.tracker.get(coid)
        if t is None or not t.is_open:
            return
        now = self._clock.now()
        if t.status == S.NEW:  # approved, never sent: nothing to ask the broker
            self._order_event(t, "order_canceled", OrderCanceled(
                ts=now, client_order_id=coid, reason=f"canceled before submit: {reason}"))
            return
        if t.broker_order_id is None:
            # In flight: find out whether the broker has it before anything else.
            await self.resolve_in_flight(coid)
            t = self.tracker.get(coid)
            if t is None or not t.is_open or t.broker_order_id is None:
                return
        await self._order_event_durable(t, "cancel_requested", CancelRequested(
            ts=now, client_order_id=coid, reason=reason, actor=actor))
        try:
            await self._broker.cancel(t.broker_order_id)
        except CancelRejectedError as e:
            await self._cancel_refused(t, str(e))
        except OrderNotFoundError:
            order = await self._lookup(coid)
            if order is not None:
                await self.sync_order(order, source="lookup")
        except BrokerError as e:
            # Unknown whether the cancel landed; the stream or reconciliation will tell.
            log.warning("cancel of %s failed ambiguously: %s", coid, e)
            self._broker_trouble("cancel")

    async def _cancel_refused(self, t: Tracked, why: str) -> None:
        """A refused cancel is often Alpaca's 422 "order is already in canceled/filled
        state": the order ended and we missed the message (stream down, or not yet). Only
        the broker's own record settles it; a cancel refused for an order still working is
        recorded as refused, one still pending its cancel stays pending."""
        order = await self._lookup(t.client_order_id)
        if order is not None:
            await self.sync_order(order, source="lookup")
            if not t.is_open or order.state == B.PENDING_CANCEL:
                return
        self._order_event(t, "cancel_rejected", CancelRejected(
            ts=self._clock.now(), client_order_id=t.client_order_id, reason=why))

    async def settle_by_lookup(self, coids: list[str]) -> int:
        """Ask the broker for each of these orders by client id and record what it says
        (terminal states, fills not yet booked). For when the stream may have missed it.
        Returns how many were found."""
        found = 0
        for coid in coids:
            t = self.tracker.get(coid)
            if t is None or not t.is_open or t.in_flight:
                continue
            order = await self._lookup(coid)
            if order is not None:
                found += 1
                await self.sync_order(order, source="lookup")
        return found

    async def replace(self, coid: str, *, qty: Decimal | None = None,
                      limit_price: Decimal | None = None, stop_price: Decimal | None = None,
                      trail: Decimal | None = None,
                      new_client_order_id: str | None = None) -> str | None:
        """Alpaca's PATCH. `stop_price` moves a stop's trigger, `trail` a trailing stop's
        trail (in the unit it was placed with)."""
        t = self.tracker.get(coid)
        if t is None or not t.is_open or t.broker_order_id is None:
            return None
        # A replace the gate approved (a stop move) names its replacement; only a direct call
        # numbers one from the replacements so far (a scan over every order of the run).
        new_coid = new_client_order_id or self._next_replacement_id(coid)
        ours = self._proj.orders.orders.get(coid)
        percent = ours is not None and ours.trail_percent is not None
        await self._order_event_durable(t, "replace_requested", ReplaceRequested(
            ts=self._clock.now(), client_order_id=coid, new_client_order_id=new_coid,
            qty=qty, limit_price=limit_price, stop_price=stop_price,
            trail_price=trail if trail is not None and not percent else None,
            trail_percent=trail if trail is not None and percent else None))
        # Only brokers that move stops are asked to (the stop terms are keyword-only extras).
        moves: dict[str, Decimal] = {k: v for k, v in (("stop_price", stop_price),
                                                       ("trail", trail)) if v is not None}
        # The replacement's terms are known now: without a new qty it carries what is left
        # (Alpaca's rule). The stream's `replaced`, or the replacement's own messages, may
        # arrive before the REST answer, and must record these terms, not the old ones.
        left = t.qty - t.filled_qty if t.qty is not None else None
        self.tracker.start_replace(t, PendingReplace(
            old_client_order_id=coid, new_client_order_id=new_coid,
            qty=qty if qty is not None else left,
            limit_price=limit_price if limit_price is not None else t.order.limit_price,
            stop_price=stop_price,
            trail_price=trail if trail is not None and not percent else None,
            trail_percent=trail if trail is not None and percent else None))
        try:
            new = await self._broker.replace(t.broker_order_id, qty=qty, limit_price=limit_price,
                                             client_order_id=new_coid, **moves)
        except BrokerError as e:
            log.warning("replace of %s failed: %s", coid, e)
            return None
        if t.status != S.REPLACED:  # the stream did not get there first
            self._record_replaced(t, new.broker_order_id, reported=new)
        return new.client_order_id

    def _next_replacement_id(self, coid: str) -> str:
        prefix = coid[:44] + "-r"
        n = sum(1 for c in self._proj.orders.orders if c.startswith(prefix)) + 1
        return f"{prefix}{n}"

    # --- broker messages -----------------------------------------------------------------

    async def run_updates(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Consume the broker's trade-update stream until cancelled."""
        task_status.started()
        async for event in self._broker.trade_updates():
            await self.handle(event)

    async def handle(self, event: BrokerEvent) -> None:
        """One broker message -> events. Never raises for bad input."""
        try:
            if isinstance(event, TradeUpdate):
                await self._on_update(event)
            elif isinstance(event, StreamConnected):
                # Also on the first connection when orders are open: what they did before
                # the stream listened (an order sent at once, a fill at submission) is lost.
                if event.reconnect or event.since is not None or self._proj.orders.open_ids:
                    await self.fill_gap(event.since)
            elif isinstance(event, UnparsedMessage):
                self._note(UnknownBrokerMessage(
                    ts=self._clock.now(), source=self._broker.name, raw=event.raw[:4000],
                    error=event.error))
        except BrokerError as e:
            log.warning("broker error while handling %s: %s", type(event).__name__, e)
            self._broker_trouble("update handling")

    async def _on_update(self, u: TradeUpdate) -> None:
        self._last_update_at = max(self._last_update_at or u.timestamp, u.timestamp)
        o = u.order
        t = self.tracker.get(o.client_order_id)
        if t is None:
            t = self._replacement_arrived(o) or self._by_broker_id(o)
        if t is None:
            self._note(UnknownBrokerMessage(
                ts=self._clock.now(), source=self._broker.name,
                raw=f"{u.event} for unknown order {o.client_order_id} ({o.broker_order_id}) "
                    f"{o.side} {o.qty or o.notional} {o.symbol}",
                error="not an order of ours (reconciliation decides)"))
            return
        now = self._clock.now()
        kind = u.kind
        if o.order_type == "trailing_stop":  # `_trail_moved`'s own first test, without a call
            self._trail_moved(t, o)
        if kind in FILL_KINDS:
            self._book_fill(t, o, u.execution_id, u.qty, u.price, u.timestamp,
                                  source="stream", fee=u.fee)
        elif kind == K.ACCEPTED:
            self._order_event(t, "order_accepted", OrderAccepted(
                ts=now, client_order_id=t.client_order_id, broker_order_id=o.broker_order_id,
                broker_time=u.timestamp, symbol=o.symbol, qty=self._leg_qty(o)))
        elif kind in PENDING_KINDS:
            if t.status == S.PENDING_SUBMIT:
                self._order_event(t, "order_submitted", OrderSubmitted(
                    ts=now, client_order_id=t.client_order_id, broker_order_id=o.broker_order_id,
                    broker_status=o.status, symbol=o.symbol))
        elif kind == K.CANCELED:
            self._order_event(t, "order_canceled", OrderCanceled(
                ts=now, client_order_id=t.client_order_id, reason="canceled at the broker",
                broker_order_id=o.broker_order_id, broker_time=u.timestamp))
        elif kind == K.EXPIRED:
            self._order_event(t, "order_expired", OrderExpired(
                ts=now, client_order_id=t.client_order_id, broker_time=u.timestamp))
        elif kind == K.REJECTED:
            self._order_event(t, "order_rejected", OrderRejected(
                ts=now, client_order_id=t.client_order_id, reason="rejected by the broker"))
        elif kind == K.CANCEL_REJECTED:
            self._order_event(t, "cancel_rejected", CancelRejected(
                ts=now, client_order_id=t.client_order_id, reason="cancel rejected by the broker"))
        elif kind == K.REPLACED:
            if t.status != S.REPLACED:
                self._broker_replaced(t, o, "stream")
        elif kind == K.TRAILING_MOVED:
            pass  # recorded above, once, by _trail_moved (the broker's figures)
        else:
            # Kinds nothing here acts on yet (stopped, suspended, restated, a refused replace,
            # a busted trade): kept in the log for a human, and the engine carries on.
            self._note(UnknownBrokerMessage(
                ts=now, source=self._broker.name,
                raw=f"event {u.event!r} ({kind}) for {o.client_order_id}",
                error="trade-update event not acted on"))

    def _trail_moved(self, t: Tracked, o: BrokerOrder) -> None:
        """A trailing stop the broker reports with a new high-water mark or stop: record the
        broker's figures (Alpaca sends no update for it; a lookup, a listing or any later
        message of the order shows it)."""
        if o.order_type != "trailing_stop" or o.hwm is None or o.stop_price is None:
            return
        ours = t.order
        if not ours.is_open or (ours.hwm, ours.stop_price) == (o.hwm, o.stop_price):
            return
        self._note(TrailingStopUpdated(ts=self._clock.now(), client_order_id=t.client_order_id,
                                       hwm=o.hwm, stop_price=o.stop_price,
                                       broker_time=o.updated_at, symbol=o.symbol))

    def _by_broker_id(self, o: BrokerOrder) -> Tracked | None:
        """An open order of ours that the broker names differently (a leg: Alpaca names
        legs itself) is still ours if the log holds its broker order id."""
        for coid in self._proj.orders.open_ids:
            if self._proj.orders.orders[coid].broker_order_id == o.broker_order_id:
                return self.tracker.get(coid)
        return None

    def _replacement_arrived(self, o: BrokerOrder) -> Tracked | None:
        """A message about an order we do not know yet may be the replacement a replace of
        ours is creating (its client id is the one we chose): the replace happened, so record
        it first, then the message is about a known order."""
        pending = self.tracker.replace_creating(o.client_order_id)
        if pending is None:
            return None
        old = self.tracker.get(pending.old_client_order_id)
        if old is None or old.status == S.REPLACED:
            return self.tracker.get(o.client_order_id)
        self._record_replaced(old, o.broker_order_id, reported=o)
        return self.tracker.get(o.client_order_id)

    def _record_replaced(self, t: Tracked, new_broker_order_id: str, *,
                         reported: BrokerOrder | None = None) -> None:
        """Our replace happened: the old order ends and the replacement carries on with the
        terms the broker reports for it, else the ones we asked for."""
        pending = t.replacing
        assert pending is not None

        def term(name: str) -> Decimal | None:
            value: Decimal | None = getattr(reported, name, None) if reported is not None else None
            if value is None:
                value = getattr(pending, name)
            return value

        self._order_event(t, "order_replaced", OrderReplaced(
            ts=self._clock.now(), client_order_id=t.client_order_id,
            new_client_order_id=pending.new_client_order_id,
            new_broker_order_id=new_broker_order_id, qty=term("qty"),
            limit_price=term("limit_price"), stop_price=term("stop_price"),
            trail_price=term("trail_price"), trail_percent=term("trail_percent")))

    def _broker_replaced(self, t: Tracked, old: BrokerOrder, source: str) -> None:
        """The broker replaced an order. If we asked for it, the replacement is ours and
        carries on; if someone else did (an edit in the broker's app), the old order is closed
        and the replacement left to reconciliation — never invented."""
        if t.replacing is not None:
            self._record_replaced(t, old.replaced_by or "")
            return
        now = self._clock.now()
        new_coid = next((c for c, o in self._proj.orders.orders.items()
                         if old.replaced_by and o.broker_order_id == old.replaced_by), None)
        if new_coid is not None:
            self._order_event(t, "order_replaced", OrderReplaced(
                ts=now, client_order_id=t.client_order_id, new_client_order_id=new_coid,
                new_broker_order_id=old.replaced_by or ""))
            return
        self._order_event(t, "order_canceled", OrderCanceled(
            ts=now, client_order_id=t.client_order_id, broker_order_id=old.broker_order_id,
            reason=f"replaced outside the engine by broker order {old.replaced_by} ({source})"))
        self._note(DiscrepancyFound(
            ts=now, kind="replaced_outside_engine", client_order_id=t.client_order_id,
            symbol=old.symbol, broker=f"replaced by {old.replaced_by}",
            detail="the replacement is not ours; reconciliation decides what to do with it"))

    def _book_fill(self, t: Tracked, o: BrokerOrder, execution_id: str | None,
                         qty: Decimal | None, price: Decimal | None, when: datetime, *,
                         source: str, fee: Decimal = ZERO) -> None:
        if execution_id is None or qty is None or price is None or qty <= 0:
            self._note(UnknownBrokerMessage(
                ts=self._clock.now(), source=self._broker.name,
                raw=f"fill without execution id/qty/price for {o.client_order_id}",
                error="incomplete fill message"))
            return
        if self.tracker.seen_execution(execution_id):
            return  # a repeated message: booked once already
        # Looked up once: the fold books the fill on this same order, in place.
        order = t.order
        t.broker_cum_qty = max(t.broker_cum_qty, o.filled_qty)
        filled = order.filled_qty
        room = t.broker_cum_qty - filled
        book = min(qty, room)
        if book <= 0:
            # The shares were already booked (inferred from the broker's order state before
            # this message arrived); remember the id so a repeat is ignored too.
            self.tracker.unbooked_execution_ids.add(execution_id)
            return
        done = o.state == B.FILLED and filled + book >= o.filled_qty
        fill = FillReceived(
            ts=self._clock.now(), client_order_id=t.client_order_id,
            broker_order_id=o.broker_order_id, execution_id=execution_id, symbol=o.symbol,
            side=o.side, qty=book, price=price, broker_time=when, order_done=done, source=source,
            fee=fee if book == qty else (fee * book / qty).quantize(CENT))
        legal, state_before = would_move(order, "fill"), order.status
        fill_seq = self._note(fill)
        log.info("fill %s %s %s %s @ %s (%s)", t.client_order_id, o.side, book, o.symbol, price,
                 source, extra={"seq": fill_seq})
        t.broker_cum_qty = max(t.broker_cum_qty, order.filled_qty)  # as the fold left it
        if not legal:
            self._illegal(t, "fill", state_before, fill_seq)

    async def sync_order(self, o: BrokerOrder, *, source: str) -> bool:
        """Bring our record of an order up to the broker's snapshot of it: acknowledgements,
        fills we have not booked (inferred, deterministic ids), and a terminal status.
        Returns False if the order is not ours."""
        t = self.tracker.get(o.client_order_id) or self._replacement_arrived(o)
        if t is None:
            return False
        now = self._clock.now()
        if t.status == S.PENDING_SUBMIT:
            if o.state == B.REJECTED:
                self._order_event(t, "order_rejected", OrderRejected(
                    ts=now, client_order_id=t.client_order_id, reason="rejected by the broker"))
                return True
            self._order_event(t, "order_submitted", OrderSubmitted(
                ts=now, client_order_id=t.client_order_id, broker_order_id=o.broker_order_id,
                broker_status=o.status, symbol=o.symbol))
        # Acknowledgement comes from the stream's ACCEPTED; a REST answer to our own submit does
        # not pre-empt it (that would record the stream's ack as a duplicate). A lookup or a
        # gap fill may be all we will ever hear, so those infer it.
        if (t.status == S.SUBMITTED and source != "submit"
                and o.state not in (B.PENDING_NEW, B.REJECTED)):
            self._order_event(t, "order_accepted", OrderAccepted(
                ts=now, client_order_id=t.client_order_id, broker_order_id=o.broker_order_id,
                broker_time=o.updated_at, symbol=o.symbol))
        if o.order_type == "trailing_stop":  # `_trail_moved`'s own first test, without a call
            self._trail_moved(t, o)
        t.broker_cum_qty = max(t.broker_cum_qty, o.filled_qty)
        missing = t.broker_cum_qty - t.filled_qty
        if missing > 0 and o.filled_avg_price is not None:
            # Only the difference between the broker's filled quantity and ours is booked, at
            # the price that makes our average equal the broker's.
            price = (o.filled_avg_price * t.broker_cum_qty - t.filled_notional) / missing
            if price <= 0:
                price = o.filled_avg_price
            exec_id = inferred_execution_id(self._account_id, o.symbol, o.client_order_id,
                                            o.broker_order_id, o.side, t.broker_cum_qty,
                                            o.filled_avg_price, o.updated_at)
            self._book_fill(t, o, exec_id, missing, price,
                                  o.updated_at or now, source=source)
            self._gap_fills += 1
        if t.is_open and not o.is_open:
            if o.state == B.CANCELED:
                self._order_event(t, "order_canceled", OrderCanceled(
                    ts=now, client_order_id=t.client_order_id, reason=f"canceled ({source})",
                    broker_order_id=o.broker_order_id, broker_time=o.updated_at))
            elif o.state == B.EXPIRED:
                self._order_event(t, "order_expired", OrderExpired(
                    ts=now, client_order_id=t.client_order_id, broker_time=o.updated_at))
            elif o.state == B.REJECTED:
                self._order_event(t, "order_rejected", OrderRejected(
                    ts=now, client_order_id=t.client_order_id, reason=f"rejected ({source})"))
            elif o.state == B.REPLACED and t.status != S.REPLACED:
                self._broker_replaced(t, o, source)
        for leg in o.legs:
            await self._sync_leg(leg, source=source)
        return True

    # --- legs (bracket / OTO / OCO) --------------------------------------------------------

    def _leg_qty(self, o: BrokerOrder) -> Decimal | None:
        """A leg's size as the broker activated it (a partially filled parent's)."""
        ours = self._proj.orders.orders.get(o.client_order_id)
        return o.qty if ours is not None and ours.parent_id is not None else None

    async def _sync_leg(self, leg: BrokerOrder, *, source: str) -> None:
        """A leg in its parent's answer: legs are orders of their own (the broker reports
        them under our leg ids). A held leg only gets its broker id recorded; one the broker
        already activated is acknowledged (its ACCEPTED may never come to us), then synced."""
        t = self.tracker.get(leg.client_order_id)
        if t is None:
            return  # not ours; reconciliation decides
        if t.status == S.HELD and t.broker_order_id is None:
            self._order_event(t, "order_submitted", OrderSubmitted(
                ts=self._clock.now(), client_order_id=t.client_order_id,
                broker_order_id=leg.broker_order_id, broker_status=leg.status,
                symbol=leg.symbol))
        if t.status == S.HELD and leg.state not in (B.HELD, B.PENDING_NEW) and leg.is_open \
                and source != "submit":
            self._order_event(t, "order_accepted", OrderAccepted(
                ts=self._clock.now(), client_order_id=t.client_order_id,
                broker_order_id=leg.broker_order_id, broker_time=leg.updated_at,
                symbol=leg.symbol, qty=leg.qty))
        await self.sync_order(leg, source=source)

    async def fill_gap(self, since: datetime | None) -> None:
        """After a (re)connect: fetch what changed while we were not listening and book it
        exactly once (every open order of ours plus every order the broker changed since)."""
        after = (since or self._last_update_at)
        orders: dict[str, BrokerOrder] = {}
        if after is not None:
            for o in await self._broker.orders_since(after - GAP_FILL_SLACK):
                orders[o.client_order_id] = o
        for coid in sorted(self._proj.orders.open_ids):
            if coid in orders:
                continue
            t = self.tracker.get(coid)
            if t is None or t.broker_order_id is None and t.status != S.PENDING_SUBMIT:
                continue
            found = await self._lookup(coid)
            if found is not None:
                orders[coid] = found
        for coid in sorted(orders):
            await self.sync_order(orders[coid], source="gap_fill")

    async def _lookup(self, coid: str) -> BrokerOrder | None:
        """The broker's record of our order: by client id, else (a broker that names some
        orders itself, like a replaced Alpaca leg) by the broker id the log holds."""
        try:
            found = await self._broker.get_order_by_client_id(coid)
            if found is not None:
                return found
            ours = self._proj.orders.orders.get(coid)
            # Not every broker can look an order up by its own id (the interface does not ask it).
            by_id: Callable[[str], Awaitable[BrokerOrder | None]] | None = getattr(
                self._broker, "get_order", None)
            if ours is None or ours.broker_order_id is None or by_id is None:
                return None
            found_by_id: BrokerOrder | None = await by_id(ours.broker_order_id)
            found = found_by_id
            if found is not None and found.client_order_id != coid:
                found = msgspec.structs.replace(found, client_order_id=coid)
            return found
        except (BrokerUnavailableError, OrderNotFoundError) as e:
            log.warning("lookup of %s failed: %s", coid, e)
            return None

    def _broker_trouble(self, what: str) -> None:
        if self.on_broker_error is not None:
            self.on_broker_error(what)

