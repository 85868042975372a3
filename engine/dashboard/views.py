"""The page's data as JSON-ready dicts, computed from the follower's projections and fold
(no I/O). Money and quantities are strings (exact Decimals); every row names the seq(s) of
the events behind it so the page can link each number to its evidence."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from engine.dashboard.fold import CurvePoint, DashboardFold, Entry
from engine.risk.limits import RiskLimits
from events.vocabulary import ZERO
from projections.calendar import trading_day
from projections.market import last_price
from projections.orders import Order, legs_of, open_orders
from projections.protection import protection_of
from projections.risk import day_trades_in_window, realized_in_week, realized_on
from projections.state import Projections


@dataclass(frozen=True)
class ViewContext:
    limits: RiskLimits
    now: datetime
    control_available: bool
    read_needs_token: bool
    log_name: str
    caught_up: bool = True


def dec(d: Decimal | None) -> str | None:
    """Exact, in plain notation ("0", not "0E-9")."""
    if d is None:
        return None
    return "0" if d == 0 else format(d, "f")


def money(d: Decimal | None) -> str | None:
    """Rounded to cents for display ("0.00", never "-0.00")."""
    if d is None:
        return None
    text = f"{d:.2f}"
    return "0.00" if text == "-0.00" else text


def entry_json(e: Entry) -> dict[str, Any]:
    return {"seq": e.seq, "ts": e.ts.isoformat(), "type": e.type, "symbol": e.symbol,
            "client_order_id": e.client_order_id, "intent_id": e.intent_id,
            "summary": e.summary}


def leg_json(o: Order) -> dict[str, Any]:
    return {"client_order_id": o.client_order_id, "role": o.leg_role or o.order_type,
            "order_type": o.order_type, "status": o.status.value,
            "stop_price": dec(o.stop_price), "limit_price": dec(o.limit_price),
            "qty": dec(o.qty), "filled_qty": dec(o.filled_qty)}


def order_json(o: Order, proj: Projections) -> dict[str, Any]:
    """An order with its legs (a bracket's/OCO's stop and take-profit, each an order in the
    log) and the links that make its chain: parent, replacement."""
    return {"client_order_id": o.client_order_id, "intent_id": o.intent_id,
            "strategy": o.strategy, "symbol": o.symbol, "side": o.side,
            "order_type": o.order_type, "order_class": o.order_class, "qty": dec(o.qty),
            "notional": dec(o.notional), "limit_price": dec(o.limit_price),
            "stop_price": dec(o.stop_price), "status": o.status.value,
            "filled_qty": dec(o.filled_qty), "avg_fill_price": dec(o.avg_fill_price),
            "fees": dec(o.fees), "broker_order_id": o.broker_order_id,
            "parent_id": o.parent_id, "leg_role": o.leg_role, "replaces": o.replaces,
            "replaced_by": o.replaced_by,
            "legs": [leg_json(x) for x in legs_of(proj.orders, o)],
            "reason": o.reason, "created_seq": o.created_seq, "updated_seq": o.updated_seq}


def protection(proj: Projections, fold: DashboardFold, symbol: str) -> dict[str, Any]:
    """The stop protecting a position: a live stop order (at the broker, or watched by the
    engine where the broker can not hold it), else the latest stop recorded by the intents
    whose fills built it (what the strategy asked for, not an order)."""
    live = protection_of(proj, symbol)
    if live.stop is not None and live.where != "none":
        return {"kind": "broker_stop" if live.where == "broker" else "engine_side",
                "stop_price": dec(live.stop), "intent_id": None,
                "live_at_broker": live.where == "broker", "orders": list(live.orders),
                "covered": dec(live.covered)}
    for ref in reversed(fold.position_fills.get(symbol, [])):
        o = proj.orders.orders.get(ref.client_order_id)
        if o is None:
            continue
        stop = fold.intent_stops.get(o.intent_id)
        if stop is not None:
            return {"kind": "intent_stop", "stop_price": dec(stop), "intent_id": o.intent_id,
                    "live_at_broker": False}
    return {"kind": "none", "stop_price": None, "intent_id": None, "live_at_broker": False}


def positions_view(proj: Projections, fold: DashboardFold) -> list[dict[str, Any]]:
    out = []
    for sym in sorted(proj.positions.positions):
        p = proj.positions.positions[sym]
        if p.qty == 0 and p.realized_pnl == 0 and p.fees == 0:
            continue
        price = last_price(proj.market, sym)
        fills = fold.position_fills.get(sym, []) if p.qty else []
        out.append({
            "symbol": sym, "qty": dec(p.qty), "avg_cost": dec(p.avg_cost) if p.qty else None,
            "last_price": dec(price),
            "market_value": dec(p.market_value(price)) if price is not None else None,
            "unrealized_pnl": dec(p.unrealized_pnl(price)) if price is not None and p.qty
            else None,
            "realized_pnl": dec(p.realized_pnl), "fees": dec(p.fees),
            "protection": protection(proj, fold, sym) if p.qty else None,
            "fill_seqs": [f.seq for f in fills],
            "adjustment_seqs": list(fold.position_adjustments.get(sym, [])) if p.qty else [],
        })
    return out


def fills_view(fold: DashboardFold, symbol: str) -> list[dict[str, Any]]:
    return [{"seq": f.seq, "ts": f.ts.isoformat(), "client_order_id": f.client_order_id,
             "side": f.side, "qty": dec(f.qty), "price": dec(f.price), "fee": dec(f.fee)}
            for f in fold.position_fills.get(symbol, [])]


def drawdown(points: Iterable[CurvePoint]) -> dict[str, Any]:
    start = peak = last = None
    worst = ZERO
    for p in points:
        if start is None:
            start = p
        if peak is None or p.equity > peak.equity:
            peak = p
        dd = p.equity - peak.equity
        worst = min(worst, dd)
        last = p
    if start is None or last is None or peak is None:
        return {"start": None, "peak": None, "current_drawdown": None, "max_drawdown": None,
                "change": None, "start_seq": None}
    return {"start": money(start.equity), "start_seq": start.seq, "peak": money(peak.equity),
            "change": money(last.equity - start.equity),
            "current_drawdown": money(last.equity - peak.equity), "max_drawdown": money(worst)}


def run_points(fold: DashboardFold) -> list[CurvePoint]:
    return [p for p in fold.curve if p.seq >= fold.run_start_seq]


def session_points(fold: DashboardFold, now: datetime) -> list[CurvePoint]:
    day = trading_day(now)
    return [p for p in run_points(fold) if trading_day(p.ts) == day]


def freshness(proj: Projections, limits: RiskLimits, now: datetime) -> list[dict[str, Any]]:
    out = []
    for sym, lb in sorted(proj.market.last_bar.items()):
        end = lb.start.timestamp() + lb.interval_s
        age = Decimal(str(round(now.timestamp() - end, 3)))
        limit = limits.stale_after_bars * lb.interval_s
        out.append({"symbol": sym, "last_bar_start": lb.start.isoformat(), "seq": lb.seq,
                    "close": dec(lb.close), "age_s": str(age), "limit_s": str(limit),
                    "stale": age > limit})
    return out


def overview(proj: Projections, fold: DashboardFold, ctx: ViewContext) -> dict[str, Any]:
    r = proj.risk
    limits = ctx.limits
    day = trading_day(ctx.now)
    equity = proj.equity()
    runs = proj.runs
    current = runs.runs.get(runs.current) if runs.current else None
    last_run = max(runs.runs.values(), key=lambda x: x.started_seq, default=None)
    shown = current or last_run
    dt_limit = limits.day_trade_limit if limits.day_trade_mode == "limit" else None
    return {
        "log": ctx.log_name, "last_seq": proj.last_seq, "caught_up": ctx.caught_up,
        "as_of": fold.last_ts.isoformat() if fold.last_ts else None, "now": ctx.now.isoformat(),
        "run": {"id": shown.run_id if shown else None, "mode": shown.mode if shown else None,
                "running": current is not None,
                "ended": last_run.ended if last_run is not None and current is None else None,
                "started_seq": shown.started_seq if shown else None},
        "control": {"available": ctx.control_available, "token_header": "X-MQD-Token"},
        "read_needs_token": ctx.read_needs_token,
        "trading": {"state": r.trading_state, "reason": r.state_reason,
                    "kill_switch": r.kill_switch, "kill_actor": r.kill_actor,
                    "kill_reason": r.kill_reason, "kill_flatten": r.kill_flatten},
        "account": {"equity": money(equity), "cash": money(proj.account.cash_now),
                    "buying_power": money(proj.account.buying_power_now),
                    "snapshot_ts": proj.account.snapshot_ts.isoformat()
                    if proj.account.snapshot_ts else None},
        "equity": {"run": drawdown(run_points(fold)),
                   "session": drawdown(session_points(fold, ctx.now))},
        "pnl": {"trading_day": day.isoformat(), "today": money(realized_on(r, day)),
                "today_limit": money(limits.daily_limit(equity)) if equity > 0 else None,
                "week": money(realized_in_week(r, day)),
                "week_limit": money(limits.weekly_limit(equity)) if equity > 0 else None,
                "total_realized": money(sum((p.realized_pnl for p in
                                             proj.positions.positions.values()), ZERO))},
        "day_trades": {"used": day_trades_in_window(r, day), "mode": limits.day_trade_mode,
                       "limit": dt_limit},
        "positions": positions_view(proj, fold),
        "open_orders": [order_json(o, proj) for o in open_orders(proj.orders)],
        "orders_total": len(proj.orders.orders),
        "freshness": freshness(proj, limits, ctx.now),
        "stream": {"state": fold.stream.state, "connected": fold.stream.connected,
                   "since": fold.stream.since.isoformat() if fold.stream.since else None,
                   "detail": fold.stream.detail, "seq": fold.stream.seq or None},
        "rejections": {"total": sum(fold.rejections.values()),
                       "by_code": [{"code": c, "count": n,
                                    "last_seq": fold.rejection_examples[c].seq,
                                    "last": fold.rejection_examples[c].summary}
                                   for c, n in fold.rejections.most_common()],
                       "recent": [entry_json(e) for e in list(fold.recent_rejections)[-10:]]},
        "anomalies": {"count": len(proj.orders.anomalies),
                      "recent": [{"seq": a.seq, "client_order_id": a.client_order_id,
                                  "state": a.state, "event_type": a.event_type,
                                  "detail": a.detail} for a in proj.orders.anomalies[-10:]]},
        "discrepancies": {"count": fold.discrepancy_count,
                          "recent": [entry_json(e) for e in list(fold.discrepancies)[-10:]]},
        "data_problems": [entry_json(e) for e in list(fold.data_problems)[-10:]],
        "strategy_errors": [entry_json(e) for e in list(fold.strategy_errors)[-10:]],
        "alerts": {"sent": fold.alerts_sent, "failed": fold.alerts_failed,
                   "recent": [entry_json(e) for e in list(fold.alerts)[-10:]]},
    }


class BadQuery(ValueError):
    """A query parameter the API can not use; answered with 400 and this message."""


def timeline_view(fold: DashboardFold, *, types: set[str] | None = None,
                  symbol: str | None = None, order: str | None = None,
                  after_seq: int = 0, before_seq: int | None = None,
                  limit: int = 200) -> dict[str, Any]:
    """The newest `limit` entries matching the filter (the fold keeps the log's tail)."""
    if not 1 <= limit <= 1000:
        raise BadQuery("limit must be between 1 and 1000")
    picked: list[Entry] = []
    for e in reversed(fold.timeline):
        if e.seq <= after_seq:
            break
        if before_seq is not None and e.seq >= before_seq:
            continue
        if types and e.type not in types:
            continue
        if symbol and e.symbol != symbol:
            continue
        if order and order not in (e.client_order_id, e.intent_id):
            continue
        picked.append(e)
        if len(picked) >= limit:
            break
    picked.reverse()
    oldest = fold.timeline[0].seq if fold.timeline else None
    return {"entries": [entry_json(e) for e in picked], "oldest_kept_seq": oldest}
