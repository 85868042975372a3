"""Risk state as a fold: realized P&L per New York trading day and ISO week, day trades,
open risk per symbol, trading state, kill switch, and every risk decision by intent id.

Because this is rebuilt from the log, a restart can not reset a loss limit (F6) or forget a
decision (a re-sent intent gets its first answer, never a second different one).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import msgspec

from events.catalogue import (
    FillReceived,
    KillSwitchEngaged,
    KillSwitchReleased,
    KillSwitchVerified,
    RiskApproved,
    RiskRejected,
    RunStarted,
    TradingStateChanged,
)
from events.vocabulary import ONE, ZERO
from projections.calendar import business_days_back, day_keys, trading_day
from projections.orders import Order

# Approval times kept for the order-rate check; more than any sane per-minute limit.
RECENT_APPROVALS_KEPT = 1000

Decision = RiskApproved | RiskRejected


class RiskState(msgspec.Struct, kw_only=True):
    # Keys are ISO dates ("2026-11-23") and ISO weeks ("2026-W48") in New York time.
    realized_by_day: dict[str, Decimal] = {}
    realized_by_week: dict[str, Decimal] = {}
    day_trades: dict[str, list[str]] = {}
    opened_day: dict[str, str] = {}
    open_risk: dict[str, Decimal] = {}
    trading_state: str = "recovering"
    state_reason: str = "no run yet"
    kill_switch: str = "off"
    kill_reason: str = ""
    kill_actor: str = ""
    kill_flatten: bool = False
    decisions: dict[str, Decision] = {}
    recent_approvals: list[datetime] = []


def realized_on(state: RiskState, day: date) -> Decimal:
    return state.realized_by_day.get(day_keys(day)[0], ZERO)


def realized_in_week(state: RiskState, day: date) -> Decimal:
    return state.realized_by_week.get(day_keys(day)[1], ZERO)


def day_trades_in_window(state: RiskState, today: date, days: int = 5) -> int:
    """Day trades in the last `days` business days ending today (the FINRA-style window)."""
    return sum(len(state.day_trades.get(d.isoformat(), ()))
               for d in business_days_back(today, days))


def apply_fill(state: RiskState, e: FillReceived, realized: Decimal, before: Decimal,
               after: Decimal, order: Order | None) -> None:
    day, week = day_keys(trading_day(e.broker_time))
    state.realized_by_day[day] = state.realized_by_day.get(day, ZERO) + realized
    state.realized_by_week[week] = state.realized_by_week.get(week, ZERO) + realized

    sym = e.symbol
    signed = e.qty if e.side == "buy" else -e.qty
    reduces = before != 0 and (before > 0) != (signed > 0)
    if reduces and state.opened_day.get(sym) == day:
        counted = state.day_trades.setdefault(day, [])
        if e.client_order_id not in counted:
            counted.append(e.client_order_id)
    if after != 0 and (after > 0) == (signed > 0):  # opened, increased or flipped today
        state.opened_day[sym] = day

    # Loss budget held by the position: grows with opening fills in proportion to the
    # approved at-risk amount, shrinks in proportion as the position is reduced. The gate
    # sized `at_risk` on the part of the order that opens, so an opening fill takes its
    # share of that part: what the order has not spent closing (`Order.closed_qty`, already
    # updated for this fill). Scaling by the whole order instead under-counted a flip.
    risk = state.open_risk.get(sym, ZERO)
    if reduces:
        risk = risk * abs(after) / abs(before) if (after > 0) == (before > 0) and after else ZERO
        opened = abs(after) if after != 0 and (after > 0) != (before > 0) else ZERO
    else:
        opened = e.qty
    if opened and order is not None and order.at_risk:
        if order.qty:
            opening = order.qty - order.closed_qty
            if opening > 0:
                risk += order.at_risk * min(opened / opening, ONE)
        elif order.notional:
            opening_notional = order.notional - order.closed_notional
            if opening_notional > 0:
                risk += order.at_risk * min(opened * e.price / opening_notional, ONE)
    if after == 0:
        risk = ZERO
    state.open_risk[sym] = risk


def apply_decision(state: RiskState, e: Decision) -> None:
    state.decisions.setdefault(e.intent_id, e)
    if isinstance(e, RiskApproved):
        state.recent_approvals.append(e.ts)
        if len(state.recent_approvals) > RECENT_APPROVALS_KEPT:
            del state.recent_approvals[: len(state.recent_approvals) - RECENT_APPROVALS_KEPT]


def apply_run_started(state: RiskState, e: RunStarted) -> None:
    # Every start begins in recovery: nothing trades until reconciliation enables it.
    state.trading_state = "recovering"
    state.state_reason = f"run {e.run_id} started"


def apply_trading_state(state: RiskState, e: TradingStateChanged) -> None:
    state.trading_state = e.state
    state.state_reason = e.reason


def apply_kill_engaged(state: RiskState, e: KillSwitchEngaged) -> None:
    state.kill_switch = "engaged"
    state.kill_reason = e.reason
    state.kill_actor = e.actor
    state.kill_flatten = e.flatten
    state.trading_state = "halted"
    state.state_reason = f"kill switch: {e.reason}"


def apply_kill_verified(state: RiskState, e: KillSwitchVerified) -> None:
    if state.kill_switch == "engaged":
        state.kill_switch = "verified"


def apply_kill_released(state: RiskState, e: KillSwitchReleased) -> None:
    state.kill_switch = "off"
    state.kill_reason = ""
    state.kill_actor = e.actor
