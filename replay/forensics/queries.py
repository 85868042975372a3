"""Queries over an event log: "what happened", as data.

Every function here reads through a `LogReader` (a read-only connection that sees committed
rows only), so it is safe on the log of a running service. The functions return data
structures (msgspec structs, JSON-encodable as they are); `replay.forensics.render` turns them
into text and `python -m engine.replay` (`engine.cli.forensics`) is the command line.

- `iter_timeline` / `TimelineFilter`: events in seq order, filtered in SQL by the store where
  the log has the columns for it (type, symbol, intent and client order id, ts, seq).
- `rebuild_at` / `state_view` / `state_at`: every projection as of a seq or a time.

`explain` (the causal chain behind an order) and `verify` (the hash chain, positions against a
broker snapshot) are their own modules next to this one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import msgspec

from engine.rebuild import load_snapshot, rebuild
from events.base import Event, tag_of
from events.catalogue import (
    OrderReplaced,
)
from events.codec import Codec
from events.store import Family, LogReader, Match, correlation
from events.vocabulary import ZERO
from projections.calendar import iso_week, trading_day
from projections.market import last_price
from projections.orders import Anomaly, OrderView, open_orders
from projections.risk import day_trades_in_window, realized_in_week, realized_on
from projections.state import Projections
from replay.forensics.summary import summarize


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


async def successors(reader: LogReader, coids: set[str]) -> set[str]:
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
        extra = tuple(sorted(await successors(reader, own) - own))
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


# --- helpers for callers -------------------------------------------------------------------


def to_json(obj: Any) -> bytes:
    """JSON for any result here (Decimals as strings, times as ISO 8601 UTC)."""
    return msgspec.json.encode(obj)
