"""`explain`: the causal chain behind one order or intent, from the bar the strategy saw
to the fills and the bars that priced them."""

from __future__ import annotations

from datetime import datetime

import msgspec

from engine.rebuild import rebuild
from events.base import Event, tag_of
from events.catalogue import (
    BarReceived,
    FillReceived,
    IllegalTransition,
    OrderIntent,
    OrderReplaced,
    RejectReason,
    RiskApproved,
    RiskRejected,
)
from events.store import LogReader, correlation
from projections.orders import Anomaly, OrderView
from projections.state import Projections
from replay.forensics.queries import NotFoundError, successors
from replay.forensics.summary import summarize

# --- explain -------------------------------------------------------------------------------

class ChainStep(msgspec.Struct, kw_only=True):
    seq: int
    ts: datetime
    role: str
    type: str
    client_order_id: str | None
    summary: str
    event: Event


class Explanation(msgspec.Struct, kw_only=True):
    """The causal chain behind one intent/order, in seq order.

    `steps` holds: the bar the strategy saw (the last bar of the symbol recorded before the
    intent, closed at or before its signal time), the intent, the risk decision, every event
    of the order(s) it led to (replacements followed), each fill with the bar it was priced
    on, and illegal-transition events. `anomalies` are the order projection's refusals for
    these orders; `orders` their final state in the whole log.
    """

    query: str
    matched: str  # "intent_id" or "client_order_id"
    intent_id: str | None
    client_order_ids: list[str]
    symbol: str | None
    decision: str | None  # "approved" / "rejected" / None (no decision recorded)
    reasons: list[RejectReason]
    steps: list[ChainStep]
    orders: list[OrderView]
    anomalies: list[Anomaly]


async def _bar_before(reader: LogReader, symbol: str, before_seq: int,
                      not_after: datetime | None) -> tuple[int, BarReceived] | None:
    """The last bar of `symbol` recorded before `before_seq` that closed at or before
    `not_after`: what a strategy could have seen."""
    for seq, e in await reader.bars_before(symbol, before_seq, limit=64):
        assert isinstance(e, BarReceived)
        if not_after is None or e.bar.end <= not_after:
            return seq, e
    return None


async def _bar_priced(reader: LogReader, symbol: str, fill_seq: int,
                      at: datetime) -> tuple[int, BarReceived] | None:
    """The bar that priced a fill. A simulated fill is recorded right after the bar it was
    priced on (the step driver records the bar, then the broker fills against it), so that
    bar is the nearest preceding bar row of its symbol; its broker time is the bar's open, or
    its close for a fill at the signal bar's close. A live fill happens during a bar that is
    recorded when it closes: the next bar row of the symbol, if its interval holds the fill."""
    got = await reader.bar_before(symbol, fill_seq)
    if got is not None:
        seq, e = got
        assert isinstance(e, BarReceived)
        if e.bar.start <= at <= e.bar.end:
            return seq, e
    got = await reader.bar_after(symbol, fill_seq)
    if got is not None:
        seq, e = got
        assert isinstance(e, BarReceived)
        if e.bar.start <= at < e.bar.end:
            return seq, e
    return None


def _role(e: Event) -> str:
    if isinstance(e, OrderIntent):
        return "intent"
    if isinstance(e, (RiskApproved, RiskRejected)):
        return "decision"
    if isinstance(e, FillReceived):
        return "fill"
    if isinstance(e, IllegalTransition):
        return "anomaly"
    return "order"


def _step(seq: int, e: Event, role: str) -> ChainStep:
    return ChainStep(seq=seq, ts=e.ts, role=role, type=tag_of(type(e)),
                     client_order_id=correlation(e)[1], summary=summarize(e), event=e)


async def explain(reader: LogReader, query: str, *, proj: Projections | None = None
                  ) -> Explanation:
    """The chain behind `query`, a client order id or an intent id (a client order id wins if
    both exist). `proj` (the whole log's projections) is rebuilt if not given."""
    if await reader.has_client_order_id(query):
        matched = "client_order_id"
        rows = await reader.by_client_order_id(query)
        intent_id = next((getattr(e, "intent_id", None) for _, e in rows
                          if getattr(e, "intent_id", None)), None)
        # A replacement's rows name only the new id: find the intent through the original.
        if intent_id is None:
            async for _, e in reader.read(types=("order_replaced",)):
                if isinstance(e, OrderReplaced) and e.new_client_order_id == query:
                    return await explain(reader, e.client_order_id, proj=proj)
            # A leg's rows name only the leg: explain its family through the parent.
            if proj is None:
                proj = await rebuild(reader)
            leg = proj.orders.orders.get(query)
            if leg is not None and leg.parent_id is not None:
                return await explain(reader, leg.parent_id, proj=proj)
    elif await reader.has_intent(query):
        matched = "intent_id"
        intent_id = query
    else:
        raise NotFoundError(f"no order or intent {query!r} in the log")

    seen: dict[int, tuple[Event, str]] = {}
    roots = {query} if matched == "client_order_id" else set()
    if intent_id is not None:
        for seq, e in await reader.by_intent(intent_id):
            seen[seq] = (e, _role(e))
            if isinstance(e, RiskApproved):
                roots.add(e.client_order_id)
                roots.update(leg.client_order_id for leg in e.legs)
    coids = await successors(reader, roots) if roots else set()
    for coid in sorted(coids):
        for seq, e in await reader.by_client_order_id(coid):
            seen.setdefault(seq, (e, _role(e)))

    intent = next((e for e, _ in seen.values() if isinstance(e, OrderIntent)), None)
    symbol = next((s for s in (correlation(e)[2] for e, _ in seen.values()) if s), None)
    if intent is not None:
        iseq = next(s for s, (e, _) in seen.items() if e is intent)
        got = await _bar_before(reader, intent.symbol, iseq, intent.signal_time or intent.ts)
        if got is not None:
            seen[got[0]] = (got[1], "bar")
    for seq, (e, role) in list(seen.items()):
        if isinstance(e, FillReceived):
            priced = await _bar_priced(reader, e.symbol, seq, e.broker_time)
            if priced is not None and priced[0] not in seen:
                seen[priced[0]] = (priced[1], "fill_bar")

    decision: str | None = None
    reasons: list[RejectReason] = []
    for _, (e, _) in sorted(seen.items()):
        if isinstance(e, RiskRejected) and decision is None:
            decision, reasons = "rejected", list(e.reasons)
        elif isinstance(e, RiskApproved) and decision is None:
            decision = "approved"

    if proj is None:
        proj = await rebuild(reader)
    chain_order = _chain_order(coids, seen)
    orders = [OrderView.of(proj.orders.orders[c]) for c in chain_order if c in proj.orders.orders]
    anomalies = [a for a in proj.orders.anomalies if a.client_order_id in coids]
    steps = [_step(seq, e, role) for seq, (e, role) in sorted(seen.items())]
    return Explanation(query=query, matched=matched, intent_id=intent_id,
                       client_order_ids=chain_order, symbol=symbol, decision=decision,
                       reasons=reasons, steps=steps, orders=orders, anomalies=anomalies)


def _chain_order(coids: set[str], seen: dict[int, tuple[Event, str]]) -> list[str]:
    """Client order ids in the order they first appear in the log."""
    first: dict[str, int] = {}
    for seq, (e, _) in sorted(seen.items()):
        for c in (correlation(e)[1], getattr(e, "new_client_order_id", None)):
            if c in coids and c not in first:
                first[c] = seq
    for c in coids:
        first.setdefault(c, 1 << 62)
    return sorted(first, key=lambda c: (first[c], c))


