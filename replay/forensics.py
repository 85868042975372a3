"""Forensics over an event log: "what happened, and why".

Every function here reads through a `LogReader` (a read-only connection that sees committed
rows only), so it is safe on the log of a running service. The functions return data
structures (msgspec structs, JSON-encodable as they are); `replay.render` turns them into text
and `engine.replay` (`python -m engine.replay`) is the command line over both.

- `iter_timeline` / `TimelineFilter`: events in seq order, filtered in SQL where the log has
  the columns for it (type, symbol, intent and client order id, ts, seq).
- `rebuild_at` / `state_view` / `state_at`: every projection as of a seq or a time.
- `explain`: the causal chain behind one order or intent, from the bar the strategy saw to
  the fills.
- `verify_log`: `LogReader.verify` (the hash chain and a full decode of every row) on a file.
- `load_broker_snapshot` / `diff_broker`: our positions against a broker's.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from engine.rebuild import load_snapshot, rebuild
from events.base import UTC, Event, tag_of
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
from events.codec import Codec
from events.errors import CorruptLogError
from events.market import Bar
from events.store import Family, LogReader, Match, correlation
from events.vocabulary import ZERO
from projections.calendar import iso_week, trading_day
from projections.market import last_price
from projections.orders import Anomaly, OrderView, open_orders
from projections.risk import day_trades_in_window, realized_in_week, realized_on
from projections.state import Projections


class ForensicsError(Exception):
    """A request that cannot be answered (unknown id, bad snapshot file, bad filter). The
    message is one line meant for the user."""


class NotFoundError(ForensicsError):
    """The id asked about is not in the log."""


# --- timeline ------------------------------------------------------------------------------


class TimelineFilter(msgspec.Struct, kw_only=True):
    """Which events `iter_timeline` yields; every condition given must hold (AND).

    `symbol` also matches order events that do not carry a symbol themselves (submitted,
    accepted, canceled...) when their order is for that symbol; `intent` matches the intent,
    its decision and every event of the orders it led to (replacements included); `order`
    matches rows of exactly that client order id. `types` are log tags ("fill") or class names
    ("FillReceived"). `since`/`until` compare the recorded `ts`, both inclusive.
    """

    symbol: str | None = None
    intent: str | None = None
    order: str | None = None
    types: tuple[str, ...] = ()
    from_seq: int = 1
    to_seq: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None


class TimelineEntry(msgspec.Struct, kw_only=True):
    seq: int
    ts: datetime
    type: str
    symbol: str | None
    intent_id: str | None
    client_order_id: str | None
    summary: str
    event: Event


def resolve_types(names: Iterable[str], codec: Codec) -> tuple[str, ...]:
    """Log tags for user-given type names (tags or class names, case-insensitive)."""
    by_name = {t.__name__.lower(): tag for tag, t in codec.types.items()}
    out: list[str] = []
    for n in names:
        key = n.strip()
        if key in codec.types:
            out.append(key)
        elif key.lower() in by_name:
            out.append(by_name[key.lower()])
        elif key.lower() in codec.types:
            out.append(key.lower())
        else:
            raise ForensicsError(
                f"unknown event type {n!r}; known: {', '.join(sorted(codec.types))}")
    return tuple(dict.fromkeys(out))


async def _successors(reader: LogReader, coids: set[str]) -> set[str]:
    """`coids` plus every order that replaced one of them, transitively (a replacement's
    events carry the new client order id only)."""
    found = set(coids)
    frontier = set(coids)
    while frontier:
        new: set[str] = set()
        async for _, e in reader.read(types=("order_replaced",),
                                      client_order_ids=sorted(frontier)):
            assert isinstance(e, OrderReplaced)
            if e.new_client_order_id not in found:
                new.add(e.new_client_order_id)
        found |= new
        frontier = new
    return found


async def _timeline_match(reader: LogReader, flt: TimelineFilter) -> Match:
    families: list[Family] = []
    for value, column in ((flt.symbol, "symbol"), (flt.intent, "intent_id")):
        if value is None:
            continue
        # Orders of this symbol/intent are matched in the store (a subquery, so their number
        # never matters); their replacements (rare) are listed explicitly.
        own = await (reader.client_order_ids(symbol=value) if column == "symbol"
                     else reader.client_order_ids(intent_id=value))
        extra = tuple(sorted(await _successors(reader, own) - own))
        families.append(Family("symbol" if column == "symbol" else "intent_id", value, extra))
    return Match(types=resolve_types(flt.types, reader.codec) if flt.types else None,
                 client_order_ids=None if flt.order is None else (flt.order,),
                 since=flt.since, until=flt.until, families=tuple(families))


async def iter_timeline(reader: LogReader, flt: TimelineFilter | None = None, *,
                        batch_size: int = 1000) -> AsyncGenerator[TimelineEntry, None]:
    """Events in seq order that match `flt`; a row that does not decode raises naming its seq.
    Close it with `contextlib.aclosing` if you may stop early (its cursor is closed then)."""
    flt = flt or TimelineFilter()
    if flt.limit is not None and flt.limit <= 0:
        return
    match = await _timeline_match(reader, flt)
    events = reader.read(flt.from_seq, flt.to_seq, match=match, limit=flt.limit,
                         batch_size=batch_size)
    async with contextlib.aclosing(events) as rows:
        async for seq, event in rows:
            iid, coid, sym = correlation(event)
            yield TimelineEntry(seq=seq, ts=event.ts, type=tag_of(type(event)), symbol=sym,
                                intent_id=iid, client_order_id=coid,
                                summary=summarize(event), event=event)


async def timeline(reader: LogReader, flt: TimelineFilter | None = None) -> list[TimelineEntry]:
    return [e async for e in iter_timeline(reader, flt)]


def event_json(seq: int, event: Event) -> bytes:
    """One JSON line: `{"seq": N, "type": tag, "ts": ..., <fields>}` (Decimals as strings)."""
    body = msgspec.to_builtins(event)
    return msgspec.json.encode({"seq": seq, **body})


# --- one-line summaries --------------------------------------------------------------------


def _amount(qty: Decimal | None, notional: Decimal | None) -> str:
    if qty is not None:
        return str(qty)
    if notional is not None:
        return f"${notional}"
    return "?"


def _bar_text(b: Bar) -> str:
    span = f"{b.interval_s // 60}m" if b.interval_s % 60 == 0 else f"{b.interval_s}s"
    return (f"{span} bar {b.start:%Y-%m-%d %H:%M}Z O {b.open} H {b.high} L {b.low} "
            f"C {b.close} V {b.volume}")


def _reasons_text(reasons: Sequence[RejectReason]) -> str:
    return ", ".join(r.code for r in reasons) or "(no reason given)"


def summarize(e: Event) -> str:
    """A readable one-line description of any event (a generic one for unknown types)."""
    f = _SUMMARIES.get(tag_of(type(e)))
    if f is not None:
        return f(e)
    fields = {k: v for k, v in msgspec.structs.asdict(e).items()
              if k not in ("ts", "intent_id", "client_order_id", "symbol")}
    return " ".join(f"{k}={v}" for k, v in fields.items())


def _protection_text(e: Any) -> list[str]:
    parts = []
    if e.order_class != "simple":
        parts.append(e.order_class)
    if e.take_profit is not None:
        parts.append(f"take-profit {e.take_profit.limit_price}")
    if e.stop_loss is not None:
        sl = e.stop_loss
        parts.append(f"stop-loss {sl.stop_price}"
                     + (f" limit {sl.limit_price}" if sl.limit_price is not None else ""))
    if e.trail_price is not None:
        parts.append(f"trail ${e.trail_price}")
    if e.trail_percent is not None:
        parts.append(f"trail {e.trail_percent}%")
    return parts


def _s_intent(e: Any) -> str:
    parts = [f"{e.strategy}: {e.side} {_amount(e.qty, e.notional)} {e.order_type}"]
    if e.limit_price is not None:
        parts.append(f"limit {e.limit_price}")
    if e.stop_price is not None:
        parts.append(f"stop {e.stop_price}" if e.order_type in ("stop", "stop_limit")
                     else f"planning stop {e.stop_price}")
    parts += _protection_text(e)
    if e.reduce_only:
        parts.append("reduce-only")
    if e.reason:
        parts.append(f"- {e.reason}")
    return " ".join(parts)


def _s_approved(e: Any) -> str:
    flags = [n for n, on in (("reduce-only", e.reduce_only), ("day trade", e.day_trade),
                             ("converted to notional", e.converted_to_notional)) if on]
    flags += [n for n, on in (("protective", e.protective),
                              ("protection engine-side only", e.engine_side)) if on]
    limit = f" limit {e.limit_price}" if e.limit_price is not None else ""
    stop = f" stop {e.stop_price}" if e.stop_price is not None else ""
    extra = " ".join(_protection_text(e))
    legs = "".join(f"; {leg.role} leg {leg.client_order_id}: {leg.side} {leg.qty} "
                   f"{leg.order_type} {leg.stop_price or leg.limit_price}" for leg in e.legs)
    return (f"approved as {e.client_order_id}: {e.side} {_amount(e.qty, e.notional)} "
            f"{e.order_type}{limit}{stop}{' ' + extra if extra else ''} ref "
            f"{e.reference_price} est ${e.estimated_notional} "
            f"at risk ${e.at_risk}" + (f" ({', '.join(flags)})" if flags else "") + legs)


def _terms(e: Any) -> str:
    parts = [f"{k} {v}" for k, v in (("qty", e.qty), ("limit", e.limit_price),
                                       ("stop", e.stop_price), ("trail $", e.trail_price),
                                       ("trail %", e.trail_percent)) if v is not None]
    return " ".join(parts) or "terms as requested"


def _s_fill(e: Any) -> str:
    return (f"{e.side} {e.qty} @ {e.price} fee {e.fee}{' (order done)' if e.order_done else ''} "
            f"exec {e.execution_id} via {e.source}")


_SUMMARIES: dict[str, Callable[[Any], str]] = {
    "bar": lambda e: _bar_text(e.bar),
    "data_rejected": lambda e: f"{e.reason}: {e.detail}",
    "data_gap": lambda e: (f"{e.missing_bars} bar(s) missing between {e.previous_start:%H:%M} "
                           f"and {e.start:%H:%M}"),
    "intent": _s_intent,
    "strategy_error": lambda e: (f"{e.strategy} raised: {e.error}"
                                 + (" (paused)" if e.paused else "")),
    "risk_approved": _s_approved,
    "risk_rejected": lambda e: f"rejected: {_reasons_text(e.reasons)}",
    "order_submit_requested": lambda e: f"submit requested (attempt {e.attempt})",
    "order_submitted": lambda e: (f"broker has it as {e.broker_order_id}"
                                  + (f" ({e.broker_status})" if e.broker_status else "")),
    "order_submit_ambiguous": lambda e: f"outcome unknown ({e.kind}): {e.error}",
    "order_accepted": lambda e: (f"accepted by the broker as {e.broker_order_id}"
                                 + (f" (qty {e.qty})" if e.qty is not None else "")),
    "trailing_stop_updated": lambda e: f"trailing stop moved: hwm {e.hwm}, stop {e.stop_price}",
    "fill": _s_fill,
    "cancel_requested": lambda e: f"cancel requested by {e.actor}: {e.reason}",
    "cancel_rejected": lambda e: f"cancel refused: {e.reason}",
    "order_canceled": lambda e: "canceled" + (f": {e.reason}" if e.reason else ""),
    "order_rejected": lambda e: (f"rejected by {'the broker' if e.by_broker else 'the engine'}: "
                                 f"{e.reason}"),
    "order_expired": lambda e: "expired",
    "replace_requested": lambda e: (f"replace requested as {e.new_client_order_id}: "
                                    f"{_terms(e)}"),
    "order_replaced": lambda e: (f"replaced by {e.new_client_order_id} "
                                 f"({e.new_broker_order_id}): {_terms(e)}"),
    "unknown_broker_message": lambda e: f"{e.source}: {e.error}: {e.raw[:80]}",
    "account_snapshot": lambda e: (f"equity {e.equity} cash {e.cash} buying power "
                                   f"{e.buying_power}" + (f" ({e.source})" if e.source else "")),
    "asset_info": lambda e: (f"tradable={e.tradable} fractionable={e.fractionable} "
                             f"shortable={e.shortable} status={e.status}"),
    "run_started": lambda e: (f"run {e.run_id} started, mode {e.mode}, code {e.code_version}, "
                              f"settings {e.settings_hash}"
                              + (f"; fills: slippage {e.fill_model.slippage_bps} bps, volume "
                                 f"cap {e.fill_model.volume_participation}, zero volume "
                                 f"{e.fill_model.zero_volume}, time in force "
                                 f"{e.fill_model.time_in_force}"
                                 if e.fill_model is not None else "")),
    "run_ended": lambda e: f"run {e.run_id} ended: {e.reason}",
    "run_sealed": lambda e: f"run {e.run_id} sealed at seq {e.last_seq}: {e.reason}",
    "recovery_step": lambda e: f"{e.step}" + (f": {e.detail}" if e.detail else ""),
    "recovery_completed": lambda e: (f"recovery {'ok' if e.ok else 'FAILED'}, "
                                     f"{e.discrepancies} discrepancies"
                                     + (f": {e.detail}" if e.detail else "")),
    "trading_state": lambda e: f"trading {e.state} ({e.actor}): {e.reason}",
    "kill_switch_engaged": lambda e: (f"KILL SWITCH by {e.actor}"
                                      + (" with flatten" if e.flatten else "") + f": {e.reason}"),
    "kill_switch_verified": lambda e: (f"kill switch verified: {e.open_orders} open orders, "
                                       f"flat={e.flat}, {e.attempts} attempt(s)"),
    "kill_switch_released": lambda e: f"kill switch released by {e.actor}: {e.reason}",
    "discrepancy": lambda e: (f"{e.kind}: {e.detail}"
                              + (f" (ours {e.ours}, broker {e.broker})"
                                 if e.ours or e.broker else "")),
    "position_adjusted": lambda e: (f"position {e.qty_before} -> {e.qty_after} @ {e.avg_price}: "
                                    f"{e.reason}"),
    "orphan_adopted": lambda e: (f"adopted broker order {e.broker_order_id}: {e.side} "
                                 f"{_amount(e.qty, e.notional)} {e.order_type}, filled "
                                 f"{e.filled_qty}, {e.broker_status}"),
    "orphan_canceled": lambda e: f"canceled orphan {e.broker_order_id}: {e.reason}",
    "reconciliation_completed": lambda e: (f"{e.kind} reconciliation "
                                           f"{'ok' if e.ok else 'NOT ok'}, "
                                           f"{e.discrepancies} discrepancies"),
    "illegal_transition": lambda e: (f"{e.event_type} refused in state {e.from_state}"
                                     + (f" (seq {e.event_seq})" if e.event_seq else "")),
}


# --- state as of a seq or time -------------------------------------------------------------


class PositionView(msgspec.Struct, kw_only=True):
    symbol: str
    qty: Decimal
    avg_cost: Decimal
    realized_pnl: Decimal
    fees: Decimal
    last_price: Decimal | None
    market_value: Decimal | None
    unrealized_pnl: Decimal | None


class AccountView(msgspec.Struct, kw_only=True):
    known: bool
    equity: Decimal
    cash: Decimal
    buying_power: Decimal
    cash_now: Decimal
    buying_power_now: Decimal
    snapshot_ts: datetime | None
    daytrade_count: int | None
    pattern_day_trader: bool | None


class LastBarView(msgspec.Struct, kw_only=True):
    symbol: str
    start: datetime
    end: datetime
    close: Decimal
    seq: int


class StateView(msgspec.Struct, kw_only=True):
    """Every projection as of `as_of_seq` (0: before the first event).

    `trading_day`/`week` are New York's, of `as_of_ts` (the time asked for, or else the time
    of the event at `as_of_seq`); "today's" P&L and the day-trade window refer to them.
    """

    as_of_seq: int
    as_of_ts: datetime | None
    log_last_seq: int
    trading_state: str
    state_reason: str
    kill_switch: str
    kill_reason: str
    kill_actor: str
    trading_day: date | None
    week: str | None
    realized_today: Decimal
    realized_week: Decimal
    realized_total: Decimal
    day_trades_in_window: int
    positions: list[PositionView]
    open_orders: list[OrderView]
    orders_total: int
    account: AccountView
    anomalies: int
    recent_anomalies: list[Anomaly]
    current_run: str | None
    decisions: int
    last_bars: list[LastBarView]


def state_view(proj: Projections, *, as_of_ts: datetime | None,
               log_last_seq: int | None = None, recent_anomalies: int = 10) -> StateView:
    """A read-only summary of `proj` (no I/O; usable on a live engine's projections)."""
    positions: list[PositionView] = []
    for sym in sorted(proj.positions.positions):
        p = proj.positions.positions[sym]
        if p.qty == 0 and p.realized_pnl == 0 and p.fees == 0:
            continue
        price = last_price(proj.market, sym)
        positions.append(PositionView(
            symbol=sym, qty=p.qty, avg_cost=p.avg_cost, realized_pnl=p.realized_pnl,
            fees=p.fees, last_price=price,
            market_value=p.market_value(price) if price is not None else None,
            unrealized_pnl=p.unrealized_pnl(price) if price is not None and p.qty else None))
    day = trading_day(as_of_ts) if as_of_ts is not None else None
    r = proj.risk
    a = proj.account
    return StateView(
        as_of_seq=proj.last_seq, as_of_ts=as_of_ts,
        log_last_seq=proj.last_seq if log_last_seq is None else log_last_seq,
        trading_state=r.trading_state, state_reason=r.state_reason, kill_switch=r.kill_switch,
        kill_reason=r.kill_reason, kill_actor=r.kill_actor,
        trading_day=day, week=iso_week(day) if day is not None else None,
        realized_today=realized_on(r, day) if day is not None else ZERO,
        realized_week=realized_in_week(r, day) if day is not None else ZERO,
        realized_total=sum((p.realized_pnl for p in proj.positions.positions.values()), ZERO),
        day_trades_in_window=day_trades_in_window(r, day) if day is not None else 0,
        positions=positions,
        open_orders=[OrderView.of(o) for o in open_orders(proj.orders)],
        orders_total=len(proj.orders.orders),
        account=AccountView(known=a.known, equity=a.equity, cash=a.cash,
                            buying_power=a.buying_power, cash_now=a.cash_now,
                            buying_power_now=a.buying_power_now, snapshot_ts=a.snapshot_ts,
                            daytrade_count=a.daytrade_count,
                            pattern_day_trader=a.pattern_day_trader),
        anomalies=len(proj.orders.anomalies),
        recent_anomalies=list(proj.orders.anomalies[-recent_anomalies:]) if recent_anomalies
        else [],
        current_run=proj.runs.current, decisions=len(r.decisions),
        last_bars=[LastBarView(symbol=sym, start=lb.start, end=lb.end, close=lb.close,
                               seq=lb.seq)
                   for sym, lb in sorted(proj.market.last_bar.items())])


async def seq_ts(reader: LogReader, seq: int) -> datetime | None:
    """The recorded time of the row at `seq` (None if there is none)."""
    return await reader.ts_at(seq)


async def rebuild_at(reader: LogReader, *, at_seq: int | None = None, at: datetime | None = None,
                     use_snapshot: bool = False) -> Projections:
    """The projections folded from the prefix up to `at_seq` / the last row at or before `at`
    (both None: the whole log). A full replay by default: forensics should not trust a saved
    snapshot unless asked to (`use_snapshot` starts from one if it is not past the target)."""
    if at_seq is not None and at_seq < 0:
        raise ForensicsError(f"--at-seq must be >= 0, got {at_seq}")
    start = None
    if use_snapshot:
        snap = await load_snapshot(reader)
        if snap is not None and (at_seq is None or snap.last_seq <= at_seq):
            start = snap
    if at_seq == 0:
        return Projections()
    proj = await rebuild(reader, to_seq=at_seq, at=at, start=start)
    if at is not None and start is not None and proj is start:
        # `rebuild` returns the start unchanged when `at` precedes it: replay from scratch.
        proj = await rebuild(reader, to_seq=at_seq, at=at)
    return proj


async def state_at(reader: LogReader, *, at_seq: int | None = None, at: datetime | None = None,
                   use_snapshot: bool = False) -> StateView:
    last = await reader.last_seq()
    if at_seq is not None and at_seq > last:
        raise ForensicsError(f"--at-seq {at_seq} is past the end of the log (last seq {last})")
    proj = await rebuild_at(reader, at_seq=at_seq, at=at, use_snapshot=use_snapshot)
    as_of_ts = at if at is not None else await seq_ts(reader, proj.last_seq)
    return state_view(proj, as_of_ts=as_of_ts, log_last_seq=last)


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
    coids = await _successors(reader, roots) if roots else set()
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


# --- verify --------------------------------------------------------------------------------


class VerifyReport(msgspec.Struct, kw_only=True):
    ok: bool
    rows_checked: int
    last_good_seq: int
    first_bad_seq: int | None = None
    reason: str = ""


async def verify_log(path: str | Path) -> VerifyReport:
    """`LogReader.verify` on a file. A file too damaged to open is a bad log (first bad seq
    unknown), not an error: that is what the user asked to find out."""
    try:
        async with LogReader(path) as reader:
            v = await reader.verify()
    except CorruptLogError as e:
        return VerifyReport(ok=False, rows_checked=0, last_good_seq=0, first_bad_seq=e.seq,
                            reason=str(e))
    return VerifyReport(ok=v.ok, rows_checked=v.rows_checked, last_good_seq=v.last_seq,
                        first_bad_seq=v.first_bad_seq, reason=v.reason)


# --- positions against a broker snapshot ---------------------------------------------------


class BrokerSnapshot(msgspec.Struct, kw_only=True):
    """Positions as the broker reports them. `qty` is signed (negative: short)."""

    positions: dict[str, tuple[Decimal, Decimal]]  # symbol -> (qty, avg_entry_price)
    taken_at: datetime | None = None
    source: str = ""


def parse_broker_snapshot(data: Any, *, source: str = "") -> BrokerSnapshot:
    """Parse a snapshot: either our format

        {"taken_at": "2026-11-23T21:00:00Z",            (optional, ISO 8601 with zone)
         "positions": [{"symbol": "AAPL", "qty": "10", "avg_entry_price": "101.2"}, ...]}

    or Alpaca's own `GET /v2/positions` answer (a JSON list of position objects). Quantities
    are signed, or unsigned with `"side": "long" | "short"` as Alpaca sends them; numbers may
    be JSON strings or numbers (parsed exactly as Decimal)."""
    from engine.brokers.alpaca_parse import AlpacaParseError, parse_position

    taken_at: datetime | None = None
    if isinstance(data, dict):
        if "positions" not in data or not isinstance(data["positions"], list):
            raise ForensicsError(f"{source or 'snapshot'}: expected a \"positions\" list")
        items = data["positions"]
        raw_at = data.get("taken_at")
        if raw_at is not None:
            taken_at = parse_time(str(raw_at), what="taken_at")
    elif isinstance(data, list):
        items = data
    else:
        raise ForensicsError(f"{source or 'snapshot'}: expected a JSON object or list")
    positions: dict[str, tuple[Decimal, Decimal]] = {}
    for i, item in enumerate(items):
        try:
            p = parse_position(item)
        except AlpacaParseError as e:
            raise ForensicsError(f"{source or 'snapshot'}: positions[{i}]: {e}") from None
        if p.symbol in positions:
            raise ForensicsError(f"{source or 'snapshot'}: {p.symbol} is listed twice")
        positions[p.symbol] = (p.qty, p.avg_entry_price)
    return BrokerSnapshot(positions=positions, taken_at=taken_at, source=source)


def load_broker_snapshot(path: str | Path) -> BrokerSnapshot:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ForensicsError(f"{p}: cannot read snapshot: {e.strerror or e}") from None
    try:
        # parse_float keeps prices exact: a float would turn 101.2 into 101.2000000000000028.
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as e:
        raise ForensicsError(f"{p}: not JSON ({e.msg} at line {e.lineno})") from None
    return parse_broker_snapshot(data, source=str(p))


class PositionDiff(msgspec.Struct, kw_only=True):
    symbol: str
    kind: str  # "qty" | "avg_price" | "missing_at_broker" | "missing_in_log"
    ours_qty: Decimal
    broker_qty: Decimal
    ours_avg: Decimal | None
    broker_avg: Decimal | None
    detail: str


class BrokerDiff(msgspec.Struct, kw_only=True):
    as_of_seq: int
    as_of_ts: datetime | None
    taken_at: datetime | None
    compared: int
    differences: list[PositionDiff]
    matches: list[str]

    @property
    def ok(self) -> bool:
        return not self.differences


def diff_positions(proj: Projections, snap: BrokerSnapshot, *,
                   price_tolerance: Decimal = Decimal("0.0001"),
                   as_of_ts: datetime | None = None) -> BrokerDiff:
    """Compare quantities exactly and average prices within `price_tolerance` (relative:
    brokers round their average entry price). Flat on both sides is not compared."""
    ours = {s: p for s, p in proj.positions.positions.items() if p.qty != 0}
    theirs = {s: v for s, v in snap.positions.items() if v[0] != 0}
    diffs: list[PositionDiff] = []
    matches: list[str] = []
    for sym in sorted(set(ours) | set(theirs)):
        o = ours.get(sym)
        t = theirs.get(sym)
        oq, oa = (o.qty, o.avg_cost) if o is not None else (ZERO, None)
        bq, ba = t if t is not None else (ZERO, None)
        if o is None:
            diffs.append(PositionDiff(symbol=sym, kind="missing_in_log", ours_qty=oq,
                                      broker_qty=bq, ours_avg=None, broker_avg=ba,
                                      detail=f"broker holds {bq}, the log is flat"))
        elif t is None:
            diffs.append(PositionDiff(symbol=sym, kind="missing_at_broker", ours_qty=oq,
                                      broker_qty=bq, ours_avg=oa, broker_avg=None,
                                      detail=f"the log holds {oq}, the broker is flat"))
        elif oq != bq:
            diffs.append(PositionDiff(symbol=sym, kind="qty", ours_qty=oq, broker_qty=bq,
                                      ours_avg=oa, broker_avg=ba,
                                      detail=f"log {oq} vs broker {bq} (off by {bq - oq})"))
        elif oa is not None and ba is not None and abs(oa - ba) > abs(ba) * price_tolerance:
            diffs.append(PositionDiff(symbol=sym, kind="avg_price", ours_qty=oq, broker_qty=bq,
                                      ours_avg=oa, broker_avg=ba,
                                      detail=f"average cost log {oa} vs broker {ba}"))
        else:
            matches.append(sym)
    return BrokerDiff(as_of_seq=proj.last_seq, as_of_ts=as_of_ts, taken_at=snap.taken_at,
                      compared=len(set(ours) | set(theirs)), differences=diffs, matches=matches)


async def diff_broker(reader: LogReader, snap: BrokerSnapshot, *, at_seq: int | None = None,
                      at: datetime | None = None,
                      price_tolerance: Decimal = Decimal("0.0001")) -> BrokerDiff:
    proj = await rebuild_at(reader, at_seq=at_seq, at=at)
    as_of = at if at is not None else await seq_ts(reader, proj.last_seq)
    return diff_positions(proj, snap, price_tolerance=price_tolerance, as_of_ts=as_of)


# --- helpers for callers -------------------------------------------------------------------


def parse_time(text: str, *, what: str = "time") -> datetime:
    """An ISO 8601 time with a zone ("2026-11-23T15:00:00Z", "...+00:00"), as UTC. A naive
    time is refused: it would silently mean different instants on different machines."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ForensicsError(f"{what}: {text!r} is not an ISO 8601 time "
                             "(e.g. 2026-11-23T15:00:00Z)") from None
    if t.tzinfo is None or t.tzinfo.utcoffset(t) is None:
        raise ForensicsError(f"{what}: {text!r} has no time zone; add Z for UTC "
                             "(e.g. 2026-11-23T15:00:00Z)")
    return t.astimezone(UTC)


def to_json(obj: Any) -> bytes:
    """JSON for any result here (Decimals as strings, times as ISO 8601 UTC)."""
    return msgspec.json.encode(obj)
