"""The pre-trade decision: a pure function of an intent, the gate's view and the limits.

Every check runs and every failure is reported (with its numbers), so one rejection tells the
whole story. A reducing order is never blocked by exposure, buying-power or loss-budget
limits: they exist to stop risk from growing, and refusing an exit would do the opposite.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any, NamedTuple

import msgspec

from engine.risk import protection
from engine.risk.checks import (
    MARKET_CHECKS,
    ORDER_CHECKS,
    SIZE_REASONS,
    Context,
    Sized,
    cents,
    headroom,
    loss_budgets,
)
from engine.risk.codes import Reason
from engine.risk.codes import reason as _r
from engine.risk.limits import RiskLimits
from engine.risk.view import GateView
from events.catalogue import OrderIntent, RejectReason, RiskApproved, RiskRejected
from events.vocabulary import (
    CENT,
    ONE,
    ORDER_TYPES,
    SIDES,
    STOP_ORDER_TYPES,
    SUB_CENT,
    TIME_IN_FORCE,
    ZERO,
    choice_problem,
    floor_qty,
    is_positive,
    is_whole,
    positive_problem,
    qty_notional_problem,
)
from projections.orders import stop_level
from projections.risk import Decision


def client_order_id_for(intent_id: str) -> str:
    """Deterministic, ≤ 48 characters (Alpaca's limit), the same for the same intent forever."""
    return "mqd-" + hashlib.sha256(intent_id.encode()).hexdigest()[:40]


def invalid_intent_problems(i: OrderIntent) -> list[str]:
    problems: list[str] = []
    if not i.intent_id or len(i.intent_id) > 200:
        problems.append("intent_id must be 1-200 characters")
    if not _is_ticker(i.symbol):
        problems.append(f"symbol {i.symbol!r} is not an upper-case ticker")
    # Each rule is tested inline and its helper called only to word a problem: a valid
    # intent (nearly every one) then costs no call per rule. Same rules, same order.
    if i.side not in SIDES:
        problems.append(_said(choice_problem("side", i.side, SIDES)))
    if i.order_type not in ORDER_TYPES:
        problems.append(_said(choice_problem("order_type", i.order_type, ORDER_TYPES)))
    if i.time_in_force not in TIME_IN_FORCE:
        problems.append(_said(choice_problem("time_in_force", i.time_in_force, TIME_IN_FORCE)))
    if (i.qty is None) == (i.notional is None):
        problems.append(_said(qty_notional_problem(i.qty, i.notional)))
    for name, v in (("qty", i.qty), ("notional", i.notional), ("limit_price", i.limit_price),
                    ("stop_price", i.stop_price)):
        if v is not None and not is_positive(v):
            problems.append(_said(positive_problem(name, v)))
    if i.order_type == "limit" and i.limit_price is None:
        problems.append("a limit order needs limit_price")
    if i.order_type == "market" and i.limit_price is not None:
        problems.append("a market order must not carry limit_price")
    problems.extend(protection.structure_problems(i))
    return problems


@functools.lru_cache(maxsize=4096)
def _is_ticker(symbol: str) -> bool:
    """An upper-case ticker (dots and slashes allowed: BRK.B, BTC/USD); asked once per
    symbol, not per intent."""
    return bool(symbol) and symbol.replace(".", "").replace("/", "").isalnum() \
        and symbol == symbol.upper()


def _said(problem: str | None) -> str:
    """The wording of a problem a rule was just found to have (so never None)."""
    assert problem is not None
    return problem


def invalid_intent_rejection(intent_id: str, symbol: str, problems: list[str], ts: datetime,
                             strategy: str = "") -> RiskRejected:
    return RiskRejected(ts=ts, intent_id=intent_id, symbol=symbol, strategy=strategy, reasons=(
        _r(Reason.INVALID_INTENT, "; ".join(problems), problems=len(problems)),))


def intent_from_mapping(raw: Mapping[str, Any]) -> OrderIntent:
    """Build an intent from loose input (JSON, a CLI); raises ValueError with the reason."""
    try:
        return msgspec.convert(dict(raw), OrderIntent, strict=False)
    except (msgspec.ValidationError, ValueError, TypeError) as e:
        raise ValueError(str(e)) from None


def decide(intent: OrderIntent, v: GateView, limits: RiskLimits, *,
           flatten: bool = False) -> Decision:
    """`flatten` marks the kill switch closing a position (see `_decide_flatten`); only the
    kill switch can ask for it, through `RiskGate.submit(..., flatten=True)`.

    A refused order that allows a notional amount and failed only on size limits is tried
    once more as the largest dollar order they all allow (`_shrink_to_fit`); the rejection,
    if that fails too, reports the order as asked."""
    problems = invalid_intent_problems(intent)
    if problems:
        return invalid_intent_rejection(intent.intent_id, intent.symbol, problems, v.now,
                                        intent.strategy)
    if flatten:
        return _decide_flatten(intent, v)
    if intent.replaces is not None:
        return _decide_move(intent, v, limits)
    reasons, sized = _evaluate(intent, v, limits)
    if sized is not None and not reasons:
        return _approve(sized, converted=False)
    if sized is not None:
        fitted = _shrink_to_fit(sized, reasons)
        if fitted is not None:
            return _approve(fitted, converted=True)
    return _reject(intent, v.now, reasons)


def _evaluate(intent: OrderIntent, v: GateView,
              limits: RiskLimits) -> tuple[list[RejectReason], Sized | None]:
    """Every check's reasons; the sized context when the order got a price and a size (the
    order checks need both, so without them only the market checks have run)."""
    market = Context.of(intent, v, limits)
    reasons: list[RejectReason] = []
    # Plain loops: most checks find nothing, and a comprehension's frame per check cost more.
    for check in MARKET_CHECKS:
        found = check(market)
        if found:
            reasons.extend(found)
    price = _reference_price(market)
    if price is None:
        return reasons, None
    size = _size(market, price)
    reasons.extend(size.reasons)
    if size.qty is None:
        return reasons, None
    sized = Sized(market, price=price, qty=size.qty, fractional=size.fractional)
    for order_check in ORDER_CHECKS:
        found = order_check(sized)
        if found:
            reasons.extend(found)
    return reasons, sized


def _reference_price(c: Context) -> Decimal | None:
    """The price the order is measured at: its limit; else the last close, for a buy plus
    the market buffer (a buy stop fills once the market has risen to its trigger: priced
    from there). None without a bar."""
    i, last, buy = c.intent, c.last, c.buy
    if i.order_type in ("limit", "stop_limit"):
        assert i.limit_price is not None
        return i.limit_price
    if last is None:
        return None
    base = max(last, i.stop_price) if (
        buy and i.order_type == "stop" and i.stop_price is not None) else last
    return base * (ONE + c.limits.market_buffer_bps / 10_000) if buy else base


def _shrink_to_fit(c: Sized, reasons: list[RejectReason]) -> Sized | None:
    """The order as the largest dollar amount every size limit allows, if that passes every
    check; None when the intent does not allow it, a reason is not about size, or the
    smaller order fails too."""
    i = c.intent
    if not (i.allow_notional and c.fractionable and i.order_class == "simple"
            and i.order_type in ("market", "limit")
            and all(r.code in SIZE_REASONS for r in reasons)):
        return None
    room = headroom(c)
    if not room:
        return None
    shrunk = _shrink(i, min(room), c.price, c.limits)
    if shrunk is None or invalid_intent_problems(shrunk):
        return None
    again, sized = _evaluate(shrunk, c.view, c.limits)
    return sized if sized is not None and not again else None


def _approve(c: Sized, *, converted: bool) -> RiskApproved:
    intent, price, qty, buy = c.intent, c.price, c.qty, c.buy
    coid = client_order_id_for(intent.intent_id)
    oco = intent.order_class == "oco"
    order_type = "limit" if oco else intent.order_type
    limit_price = intent.take_profit.limit_price if oco and intent.take_profit else \
        intent.limit_price
    level = protection.protective_stop_level(intent)
    engine_side = bool(c.opening > 0 and c.fractional and c.limits.require_protection
                       and c.limits.engine_side_protection)
    risk_stop = level if level is not None else (
        intent.stop_price if intent.order_type in ("market", "limit") else None)
    if engine_side and risk_stop is None:
        # The engine watches this one: it needs a level, the default stop from the price.
        f = c.limits.default_stop_pct
        risk_stop = (price * (ONE - f) if buy else price * (ONE + f)).quantize(CENT)
    return RiskApproved(
        ts=c.now, intent_id=intent.intent_id, client_order_id=coid,
        strategy=intent.strategy, symbol=intent.symbol, side=intent.side,  # type: ignore[arg-type]
        order_type=order_type, qty=qty, notional=None,  # type: ignore[arg-type]
        limit_price=limit_price, time_in_force=intent.time_in_force,
        reference_price=price.quantize(SUB_CENT), estimated_notional=cents(c.notional),
        at_risk=c.at_risk,
        reduce_only=intent.reduce_only, day_trade=c.day_trade, converted_to_notional=converted,
        order_class=intent.order_class,
        stop_price=intent.stop_price if intent.order_type in ("stop", "stop_limit") else None,
        trail_price=intent.trail_price, trail_percent=intent.trail_percent,
        take_profit=intent.take_profit, stop_loss=intent.stop_loss,
        legs=protection.legs_for(intent, coid, qty) if intent.order_class != "simple" else (),
        # Closes only, with a stop or as an OCO: it protects a position, exposes nothing.
        protective=c.opening == 0 and (oco or intent.order_type in STOP_ORDER_TYPES),
        risk_stop=risk_stop, engine_side=engine_side,
    )


def _decide_flatten(intent: OrderIntent, v: GateView) -> Decision:
    """The kill switch closing a position. Allowed in any trading state (that is its point)
    and past every limit that only exists to stop risk from growing; refused only if it would
    not strictly shrink the position."""
    assert intent.qty is not None
    pos = v.position(intent.symbol)
    signed = intent.qty if intent.side == "buy" else -intent.qty
    res = v.reserved(intent.symbol)
    # Closing orders already open (a strategy's exit whose cancel has not landed) may still
    # fill: only what they leave may be flattened, or the two together would overshoot.
    pending = res.sell_qty if pos > 0 else res.buy_qty
    room = abs(pos) - pending
    if pos == 0 or (pos > 0) == (signed > 0) or abs(signed) > room:
        return _reject(intent, v.now, [_r(Reason.REDUCE_ONLY_WOULD_GROW,
                                          "a kill-switch flatten must only shrink a position",
                                          position=pos, qty=intent.qty,
                                          pending_closing_qty=pending)])
    price = v.mark(intent.symbol) or ONE
    return RiskApproved(
        ts=v.now, intent_id=intent.intent_id,
        client_order_id=client_order_id_for(intent.intent_id), strategy=intent.strategy,
        symbol=intent.symbol, side=intent.side, order_type="market",  # type: ignore[arg-type]
        qty=intent.qty, notional=None, limit_price=None, time_in_force="day",
        reference_price=price.quantize(SUB_CENT), estimated_notional=cents(intent.qty * price),
        at_risk=ZERO, reduce_only=True)


def _decide_move(intent: OrderIntent, v: GateView, limits: RiskLimits) -> Decision:
    """Move a protective stop (Alpaca's PATCH of stop_price / trail). Tightening is always
    welcome; loosening adds to the loss budget the position holds, so it must fit."""
    reasons: list[RejectReason] = []
    target = v.order(intent.replaces or "")
    sym = intent.symbol
    same_unit = target is not None and (
        (target.trail_percent is None) == (intent.trail_percent is None)
        and (target.trail_price is None) == (intent.trail_price is None))
    if (target is None or not target.is_open or not target.protective or not target.is_stop
            or target.symbol != sym or target.order_type != intent.order_type or not same_unit):
        return _reject(intent, v.now, [_r(
            Reason.REPLACE_TARGET_INVALID,
            f"{intent.replaces} is not an open protective {intent.order_type} order of {sym}",
            replaces=intent.replaces, found=target.order_type if target else None,
            status=target.status.value if target else None)])
    if v.kill_switch != "off":
        reasons.append(_r(Reason.KILL_SWITCH_ENGAGED, "the kill switch is engaged",
                          kill_switch=v.kill_switch))
    bar = v.last_bar(sym)
    last = bar.close if bar is not None else None
    remaining = (target.qty or ZERO) - target.filled_qty
    fractional = not is_whole(remaining)
    reasons.extend(protection.check(intent, last, fractional))
    mark = last if last is not None else target.reference_price
    moved = msgspec.structs.replace(target, stop_price=intent.stop_price,
                                    trail_price=intent.trail_price,
                                    trail_percent=intent.trail_percent)
    old_level, new_level = stop_level(target, mark), stop_level(moved, mark)
    sell = target.side == "sell"
    extra = remaining * ((old_level - new_level) if sell else (new_level - old_level))
    if extra > 0 and not reasons:
        reasons.extend(_r(b.code, f"loosening the stop adds {extra:.2f} to the loss "
                                  f"{b.label} ({b.used:.2f}) beyond {b.limit:.2f}",
                          realized=cents(b.realized), open_risk=cents(b.committed),
                          order_risk=cents(extra), limit=cents(b.limit))
                       for b in loss_budgets(v, limits) if b.used + extra > b.limit)
    if reasons:
        return _reject(intent, v.now, reasons)
    return RiskApproved(
        ts=v.now, intent_id=intent.intent_id,
        client_order_id=client_order_id_for(intent.intent_id), strategy=intent.strategy,
        symbol=sym, side=target.side,  # type: ignore[arg-type]
        order_type=target.order_type,  # type: ignore[arg-type]
        qty=remaining, notional=None, limit_price=target.limit_price,
        time_in_force=target.time_in_force, reference_price=mark.quantize(SUB_CENT),
        estimated_notional=ZERO, at_risk=ZERO, reduce_only=True, order_class=target.order_class,
        stop_price=intent.stop_price, trail_price=intent.trail_price,
        trail_percent=intent.trail_percent, protective=True, risk_stop=new_level,
        replaces=target.client_order_id)


class _Size(NamedTuple):
    qty: Decimal | None  # None: the order can not be sized (its reasons say why)
    fractional: bool
    reasons: list[RejectReason]


def _size(c: Context, price: Decimal) -> _Size:
    """The order's quantity at `price` (a notional becomes shares: fractions where the symbol
    allows them, else whole shares), with what is wrong with that size."""
    intent, fractionable, limits = c.intent, c.fractionable, c.limits
    reasons: list[RejectReason] = []
    if intent.qty is not None:
        qty = intent.qty
        fractional = not is_whole(qty)
        if fractional and floor_qty(qty) != qty:
            reasons.append(_r(Reason.INVALID_INTENT, f"qty {qty} has more than 9 decimals"))
            return _Size(None, fractional, reasons)
    else:
        assert intent.notional is not None
        if fractionable:
            qty = floor_qty(intent.notional / price)
            fractional = True
        else:
            qty = (intent.notional / price).to_integral_value(ROUND_DOWN)
            fractional = False
            if qty < 1:
                reasons.append(_r(Reason.BELOW_ONE_SHARE,
                                  f"${intent.notional} buys no whole share at {price:.2f}",
                                  notional=intent.notional, price=cents(price)))
                return _Size(None, fractional, reasons)
    if fractional:
        if not fractionable:
            reasons.append(_r(Reason.NOT_FRACTIONABLE,
                              f"{intent.symbol} does not trade in fractions", qty=qty))
        if intent.time_in_force != "day":
            reasons.append(_r(Reason.FRACTIONAL_REQUIRES_DAY,
                              "fractional orders must be time_in_force=day",
                              time_in_force=intent.time_in_force))
        if qty * price < limits.min_notional:
            reasons.append(_r(Reason.BELOW_MIN_NOTIONAL,
                              f"order of {qty * price:.4f} is below the ${limits.min_notional} minimum",
                              notional=cents(qty * price), minimum=limits.min_notional))
    if qty <= 0:
        reasons.append(_r(Reason.BELOW_MIN_NOTIONAL, "the order rounds to zero quantity"))
        return _Size(None, fractional, reasons)
    return _Size(qty, fractional, reasons)


def _shrink(intent: OrderIntent, dollars: Decimal, price: Decimal,
            limits: RiskLimits) -> OrderIntent | None:
    """The intent as the largest dollar order every size limit allows, if that is ≥ $1."""
    wanted = intent.qty * price if intent.qty is not None else intent.notional
    assert wanted is not None
    amount = min(dollars, wanted).quantize(CENT, ROUND_DOWN)
    if amount < limits.min_notional or amount >= wanted:
        return None
    return msgspec.structs.replace(intent, qty=None, notional=amount)


def _reject(intent: OrderIntent, now: datetime, reasons: list[RejectReason]) -> RiskRejected:
    return RiskRejected(ts=now, intent_id=intent.intent_id, symbol=intent.symbol,
                        strategy=intent.strategy, reasons=tuple(reasons))

