"""The risk gate: exactly one task decides, so concurrent signals can never race past a limit.

Callers `await gate.submit(intent)`. The gate task takes intents one at a time, in arrival
order, from its queue (a deque and one wake-up future: the whole hand-off is two loop turns,
where a memory stream's checkpoints, events and backend lookups cost more than many checks),
decides against the projections (which fold each event as it is appended, the gate's
own earlier approvals included), appends the intent and the decision, and moves on to the
next intent without waiting for the disk; each caller hears its decision only once that
decision is durable. Decisions therefore share group commits (throughput) while staying
strictly ordered (safety).

If the log can not be written, the gate halts: every waiting and later caller gets
`GateUnavailable`, never a decision that is not on disk.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Mapping
from typing import Any

import anyio
from anyio.abc import TaskStatus

from engine.clock import Clock
from engine.risk.decide import (
    decide,
    intent_from_mapping,
    invalid_intent_rejection,
)
from engine.risk.limits import RiskLimits
from engine.risk.view import GateView
from events.catalogue import OrderIntent, RiskApproved
from events.errors import LogError
from events.store import EventLog
from projections.risk import Decision
from projections.state import Projections

log = logging.getLogger(__name__)

Request = tuple[OrderIntent | Mapping[str, Any], "asyncio.Future[Decision]", bool]


class GateUnavailable(RuntimeError):
    """The gate can not make durable decisions (the log failed, or the gate stopped)."""


class RiskGate:
    def __init__(self, log_: EventLog, projections: Projections, limits: RiskLimits,
                 clock: Clock) -> None:
        self._log = log_
        self._proj = projections
        self._limits = limits
        self._clock = clock
        # Decisions appended but not yet durable, by intent id: a duplicate of one of these is
        # answered when (and only if) the first one is durable.
        self._undurable: dict[str, asyncio.Future[int]] = {}
        self._halted: str | None = None
        # Intents waiting for the gate task, in arrival order. Unbounded, yet bounded by the
        # callers: each one waits for its own decision before it can send another.
        self._queue: collections.deque[Request] = collections.deque()
        self._wake: asyncio.Future[None] | None = None  # set while the gate task waits
        self._closed = False  # no more intents are taken (close(), or the task ended)
        log_.on_failure(lambda err: self._halt(f"event log failed: {err}"))

    @property
    def limits(self) -> RiskLimits:
        return self._limits

    @property
    def projections(self) -> Projections:
        """What the gate decides on (read-only for callers)."""
        return self._proj

    @property
    def halted(self) -> str | None:
        return self._halted

    async def submit(self, intent: OrderIntent | Mapping[str, Any], *,
                     flatten: bool = False) -> Decision:
        """The decision for `intent`, once it is durable in the log.

        A mapping is accepted for loose input (CLI, JSON): if it is not a valid intent, the
        rejection is recorded and returned like any other decision. `flatten=True` is the
        kill switch closing a position: allowed while halted, refused unless it shrinks one.
        """
        if self._halted is not None:
            raise GateUnavailable(self._halted)
        if self._closed:
            raise GateUnavailable("the risk gate is not running")
        fut: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._queue.append((intent, fut, flatten))
        self._wake_gate()
        return await fut

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The one task that decides. Runs until `close()` (or cancellation); intents queued
        before `close()` are still decided."""
        loop = asyncio.get_running_loop()
        queue = self._queue
        task_status.started()
        try:
            while True:
                while queue:
                    intent, fut, flatten = queue.popleft()
                    if fut.done():  # the caller gave up waiting
                        continue
                    try:
                        self._handle(intent, fut, flatten)
                    except Exception as e:  # a bug must not leave a caller hanging
                        log.exception("risk gate failed on an intent")
                        if not fut.done():
                            fut.set_exception(GateUnavailable(f"risk gate error: {e}"))
                if self._closed:
                    return
                self._wake = loop.create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
        finally:
            self._closed = True
            self._drain(GateUnavailable("the risk gate stopped"))

    def close(self) -> None:
        """Stop taking intents; decisions already taken still land."""
        self._closed = True
        self._wake_gate()

    # --- internals -----------------------------------------------------------------------

    def _wake_gate(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _handle(self, raw: OrderIntent | Mapping[str, Any], fut: asyncio.Future[Decision],
                flatten: bool) -> None:
        if self._halted is not None:
            fut.set_exception(GateUnavailable(self._halted))
            return
        now = self._clock.now()
        if isinstance(raw, OrderIntent):
            intent: OrderIntent | None = raw
            events: list[Any] = [raw]
        else:
            try:
                intent = intent_from_mapping(raw)
                events = [intent]
            except ValueError as e:
                intent = None
                iid = str(raw.get("intent_id") or f"invalid-{now.isoformat()}")
                events = [invalid_intent_rejection(iid, str(raw.get("symbol", "")), [str(e)], now,
                                                   str(raw.get("strategy", "")))]
        view = GateView(self._proj, now)
        if intent is not None:
            known = view.decision_for(intent.intent_id)
            if known is not None:
                self._answer_duplicate(known, self._undurable.get(intent.intent_id), fut)
                return
            events.append(decide(intent, view, self._limits, flatten=flatten))
        decision: Decision = events[-1]
        try:
            # Only the decision's commit is waited on (commits are in seq order, so the
            # intent's is covered by it): the intent is placed without a future of its own.
            for event in events[:-1]:
                self._log.enqueue(event)
            durable = self._log.append_nowait(decision)
        except LogError as e:
            self._halt(f"event log refused the decision: {e}")
            fut.set_exception(GateUnavailable(self._halted or str(e)))
            return
        if isinstance(decision, RiskApproved):
            if log.isEnabledFor(logging.DEBUG):
                log.debug("approved %s as %s", decision.intent_id, decision.client_order_id,
                          extra={"seq": self._log.assigned_seq})
        elif log.isEnabledFor(logging.INFO):
            log.info("rejected %s: %s", decision.intent_id,
                     ", ".join(r.code for r in decision.reasons),
                     extra={"seq": self._log.assigned_seq})
        def answer(f: asyncio.Future[int]) -> None:
            if self._undurable.get(decision.intent_id) is f:
                del self._undurable[decision.intent_id]
            if fut.done():
                return
            if f.cancelled() or f.exception() is not None:
                fut.set_exception(GateUnavailable(f"decision not durable: {f.exception()}"))
            else:
                fut.set_result(decision)

        if durable.done():
            # Acknowledged on append (a simulation, see EventLog.acknowledge_on_append): the
            # answer now rather than a loop turn later, and nothing left undurable to track.
            answer(durable)
            return
        self._undurable[decision.intent_id] = durable
        durable.add_done_callback(answer)

    def _answer_duplicate(self, decision: Decision, pending: asyncio.Future[int] | None,
                          fut: asyncio.Future[Decision]) -> None:
        if pending is None or pending.done() and pending.exception() is None:
            fut.set_result(decision)
            return

        def answer(f: asyncio.Future[int]) -> None:
            if fut.done():
                return
            if f.cancelled() or f.exception() is not None:
                fut.set_exception(GateUnavailable("first decision for this intent is not durable"))
            else:
                fut.set_result(decision)

        pending.add_done_callback(answer)

    def _halt(self, why: str) -> None:
        if self._halted is None:
            self._halted = why
            log.error("risk gate halted: %s", why)

    def _drain(self, err: Exception) -> None:
        while self._queue:
            _, fut, _ = self._queue.popleft()
            if not fut.done():
                fut.set_exception(err)
