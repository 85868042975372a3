"""Protection checks and legs: what the gate asks of stop-type orders and of bracket / OCO /
OTO orders, and the legs an approval carries.

The rules mirror what Alpaca refuses (so a refusal is ours, recorded with a reason code,
not the broker's): whole shares for advanced orders and trailing stops; time in force day
or gtc; a stop-loss at least $0.01 below the base price of a long entry (above for a
short); a take-profit at least $0.01 beyond it on the profitable side; prices in $0.01
steps at or above $1 and $0.0001 below. Fractional quantities may use plain stop and
stop-limit orders (day only: Alpaca's fractional trading takes market, limit, stop and
stop-limit orders), never brackets, OCO, OTO or trailing stops.
"""

from __future__ import annotations

from decimal import Decimal

from engine.risk.codes import Reason
from engine.risk.codes import reason as _r
from events.catalogue import OrderIntent, OrderLeg, RejectReason, leg_client_order_id
from events.vocabulary import (
    ADVANCED_TIME_IN_FORCE,
    CENT,
    ORDER_CLASSES,
    STOP_ORDER_TYPES,
    choice_problem,
    is_sub_penny,
    positive_problem,
)


def structure_problems(i: OrderIntent) -> list[str]:
    """Malformed protection fields (INVALID_INTENT): what no price could make valid."""
    problems = []
    cls = i.order_class
    if cls not in ORDER_CLASSES:
        problems.append(choice_problem("order_class", cls, ORDER_CLASSES) or "")
        return problems
    tp, sl = i.take_profit, i.stop_loss
    order_type = i.order_type
    if cls == "simple":
        if tp is not None or sl is not None:
            problems.append("take_profit / stop_loss need order_class bracket, oto or oco")
    elif cls in ("bracket", "oco") and (tp is None or sl is None):
        problems.append(f"a {cls} order needs both take_profit and stop_loss")
    elif cls == "oto" and (tp is None) == (sl is None):
        problems.append("an oto order needs exactly one of take_profit and stop_loss")
    if order_type in ("stop", "stop_limit") and i.stop_price is None:
        problems.append(f"a {order_type} order needs stop_price")
    if order_type == "stop_limit" and i.limit_price is None:
        problems.append("a stop_limit order needs limit_price")
    if order_type in ("stop", "trailing_stop") and i.limit_price is not None:
        problems.append(f"a {order_type} order must not carry limit_price")
    trail_price, trail_percent = i.trail_price, i.trail_percent
    trails = (trail_price is not None) + (trail_percent is not None)
    if order_type == "trailing_stop":
        if trails != 1:
            problems.append("a trailing_stop needs exactly one of trail_price and trail_percent")
        if cls != "simple":
            problems.append("a trailing stop can not be part of a bracket, oco or oto")
    elif trails:
        problems.append("trail_price / trail_percent only go with order_type trailing_stop")
    # A simple order (nearly every one) has no legs: nothing below can be wrong with it.
    if tp is not None or sl is not None:
        for name, v in (("take_profit.limit_price", tp.limit_price if tp else None),
                        ("stop_loss.stop_price", sl.stop_price if sl else None),
                        ("stop_loss.limit_price", sl.limit_price if sl else None)):
            problem = positive_problem(name, v)
            if problem:
                problems.append(problem)
    if trails:
        for name, v in (("trail_price", trail_price), ("trail_percent", trail_percent)):
            if v is not None and not v.is_finite():
                problems.append(f"{name}={v} must be a finite number")
    return problems


def check(i: OrderIntent, last: Decimal | None, fractional: bool) -> list[RejectReason]:
    """Every protection rule the intent breaks (prices against `last`, the market)."""
    reasons: list[RejectReason] = []
    advanced = i.order_class != "simple"
    if i.order_type == "trailing_stop":
        for name, v in (("trail_price", i.trail_price), ("trail_percent", i.trail_percent)):
            if v is not None and v <= 0:
                reasons.append(_r(Reason.TRAIL_NOT_POSITIVE, f"{name} must be above zero",
                                  **{name: v}))
    if fractional and (advanced or i.order_type == "trailing_stop"):
        reasons.append(_r(Reason.ADVANCED_ORDER_WHOLE_SHARES,
                          f"a {i.order_class} {i.order_type} order needs whole shares",
                          qty=i.qty, notional=i.notional))
    if (advanced or i.order_type in STOP_ORDER_TYPES) \
            and i.time_in_force not in ADVANCED_TIME_IN_FORCE:
        reasons.append(_r(Reason.ADVANCED_ORDER_TIME_IN_FORCE,
                          f"{i.order_class} {i.order_type} orders take time_in_force day or gtc",
                          time_in_force=i.time_in_force))
    prices = {"limit_price": i.limit_price, "stop_price": i.stop_price,
              "trail_price": i.trail_price,
              "take_profit.limit_price": i.take_profit.limit_price if i.take_profit else None,
              "stop_loss.stop_price": i.stop_loss.stop_price if i.stop_loss else None,
              "stop_loss.limit_price": i.stop_loss.limit_price if i.stop_loss else None}
    for name, v in prices.items():
        if v is not None and v > 0 and is_sub_penny(v):
            reasons.append(_r(Reason.SUB_PENNY_PRICE,
                              f"{name} {v} is not in $0.01 steps (or $0.0001 below $1)",
                              **{name: v}))
    if last is None:
        return reasons
    buy = i.side == "buy"
    # A stop order's own trigger: a sell stop below the market, a buy stop above it.
    if i.order_type in ("stop", "stop_limit") and i.stop_price is not None and (
            (i.stop_price > last - CENT) if not buy else (i.stop_price < last + CENT)):
        reasons.append(_r(Reason.STOP_WRONG_SIDE,
                          f"a {i.side} stop at {i.stop_price} is on the wrong side of the "
                          f"market {last}", stop_price=i.stop_price, last=last))
    if not advanced:
        return reasons
    if i.order_class == "oco":
        # Both legs close a position: the take-profit limit and the stop are on the closing
        # side, measured from the market.
        base, closing_buy = last, buy
    else:
        base = i.limit_price if i.order_type in ("limit", "stop_limit") and i.limit_price \
            else last
        closing_buy = not buy
    sl, tp = i.stop_loss, i.take_profit
    if sl is not None:
        wrong = (sl.stop_price < base + CENT) if closing_buy else (sl.stop_price > base - CENT)
        if wrong:
            reasons.append(_r(Reason.STOP_WRONG_SIDE,
                              f"stop-loss {sl.stop_price} is not at least $0.01 on the losing "
                              f"side of {base}", stop_price=sl.stop_price, base_price=base))
    if tp is not None:
        # A closing sell takes profit above the base, a closing buy below it.
        away = (base - tp.limit_price) if closing_buy else (tp.limit_price - base)
        if away <= 0:
            reasons.append(_r(Reason.TAKE_PROFIT_WRONG_SIDE,
                              f"take-profit {tp.limit_price} is on the wrong side of {base}",
                              take_profit=tp.limit_price, base_price=base))
        elif away < CENT:
            reasons.append(_r(Reason.TAKE_PROFIT_TOO_CLOSE,
                              f"take-profit {tp.limit_price} is less than $0.01 from {base}",
                              take_profit=tp.limit_price, base_price=base))
    return reasons


def carries_stop(i: OrderIntent) -> bool:
    """The order brings a stop the broker holds: a stop-loss leg (bracket, OTO, OCO)."""
    return i.stop_loss is not None


def protective_stop_level(i: OrderIntent) -> Decimal | None:
    """The stop a position opened by this order will have at the broker, if any."""
    return i.stop_loss.stop_price if i.stop_loss is not None else None


def legs_for(i: OrderIntent, client_order_id: str, qty: Decimal) -> tuple[OrderLeg, ...]:
    """The legs of an approved bracket / OTO / OCO, with their deterministic ids. The legs
    close what the parent opens (for an OCO, the parent itself is the take-profit)."""
    if i.order_class == "simple":
        return ()
    closing = i.side if i.order_class == "oco" else ("sell" if i.side == "buy" else "buy")
    legs: list[OrderLeg] = []
    if i.take_profit is not None and i.order_class != "oco":
        legs.append(OrderLeg(client_order_id=leg_client_order_id(client_order_id, "take_profit"),
                             role="take_profit", side=closing,  # type: ignore[arg-type]
                             order_type="limit", qty=qty, limit_price=i.take_profit.limit_price))
    if i.stop_loss is not None:
        sl = i.stop_loss
        legs.append(OrderLeg(client_order_id=leg_client_order_id(client_order_id, "stop_loss"),
                             role="stop_loss", side=closing,  # type: ignore[arg-type]
                             order_type="stop_limit" if sl.limit_price is not None else "stop",
                             qty=qty, stop_price=sl.stop_price, limit_price=sl.limit_price))
    return tuple(legs)
