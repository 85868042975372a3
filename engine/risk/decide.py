"""The pre-trade decision: a pure function of an intent, the gate's view and the limits.

Every check runs and every failure is reported (with its numbers), so one rejection tells the
whole story. A reducing order is never blocked by exposure, buying-power or loss-budget
limits: they exist to stop risk from growing, and refusing an exit would do the opposite.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import msgspec

from engine.risk import protection
from engine.risk.codes import Reason
from engine.risk.limits import RiskLimits
from engine.risk.view import GateView
from events.catalogue import (
    STOP_ORDER_TYPES,
    OrderIntent,
    RejectReason,
    RiskApproved,
    RiskRejected,
)
from projections.calendar import session_open, sessions_after_close, trading_day
from projections.orders import stop_level
from projections.risk import Decision

ZERO = Decimal(0)
ONE = Decimal(1)
QTY_STEP = Decimal("0.000000001")  # Alpaca accepts up to 9 decimal places of quantity
CENT = Decimal("0.01")
PRICE_STEP = Decimal("0.0001")
SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")
TIME_IN_FORCE = ("day", "gtc", "ioc", "fok", "opg", "cls")
# Reasons that shrinking the order could cure (when the intent allows a notional order).
SIZE_REASONS = frozenset({
    Reason.ORDER_NOTIONAL_LIMIT, Reason.SYMBOL_EXPOSURE_LIMIT, Reason.GROSS_EXPOSURE_LIMIT,
    Reason.NOTIONAL_EXCEEDS_BUYING_POWER, Reason.NOTIONAL_EXCEEDS_CASH, Reason.INTRADAY_MARGIN,
    Reason.DAILY_LOSS_LIMIT, Reason.WEEKLY_LOSS_LIMIT,
})


def client_order_id_for(intent_id: str) -> str:
    """Deterministic, ≤ 48 characters (Alpaca's limit), the same for the same intent forever."""
    return "mqd-" + hashlib.sha256(intent_id.encode()).hexdigest()[:40]


def _r(code: Reason, message: str, **values: object) -> RejectReason:
    return RejectReason(code=code.value, message=message,
                        values={k: str(v) for k, v in values.items()})


def invalid_intent_problems(i: OrderIntent) -> list[str]:
    problems = []
    if not i.intent_id or len(i.intent_id) > 200:
        problems.append("intent_id must be 1-200 characters")
    if not i.symbol or not i.symbol.replace(".", "").replace("/", "").isalnum() \
            or i.symbol != i.symbol.upper():
        problems.append(f"symbol {i.symbol!r} is not an upper-case ticker")
    if i.side not in SIDES:
        problems.append(f"side {i.side!r} is not one of {', '.join(SIDES)}")
    if i.order_type not in ORDER_TYPES:
        problems.append(f"order_type {i.order_type!r} is not one of {', '.join(ORDER_TYPES)}")
    if i.time_in_force not in TIME_IN_FORCE:
        problems.append(f"time_in_force {i.time_in_force!r} is not one of {', '.join(TIME_IN_FORCE)}")
    if (i.qty is None) == (i.notional is None):
        problems.append("exactly one of qty and notional must be set")
    for name in ("qty", "notional", "limit_price", "stop_price"):
        v = getattr(i, name)
        if v is not None and (not v.is_finite() or v <= 0):
            problems.append(f"{name}={v} must be a positive finite number")
    if i.order_type == "limit" and i.limit_price is None:
        problems.append("a limit order needs limit_price")
    if i.order_type == "market" and i.limit_price is not None:
        problems.append("a market order must not carry limit_price")
    problems.extend(protection.structure_problems(i))
    return problems


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


class _Sizing(msgspec.Struct):
    qty: Decimal
    price: Decimal  # reference price for notional and budget
    fractional: bool


def decide(intent: OrderIntent, v: GateView, limits: RiskLimits, *,
           converted: bool = False, original: OrderIntent | None = None,
           flatten: bool = False) -> Decision:
    """`flatten` marks the kill switch closing a position (see `_decide_flatten`); only the
    kill switch can ask for it, through `RiskGate.submit(..., flatten=True)`."""
    now = v.now
    problems = invalid_intent_problems(intent)
    if problems:
        return invalid_intent_rejection(intent.intent_id, intent.symbol, problems, now,
                                        intent.strategy)
    if flatten:
        return _decide_flatten(intent, v)
    if intent.replaces is not None:
        return _decide_move(intent, v, limits)
    reasons: list[RejectReason] = []
    sym, side = intent.symbol, intent.side
    buy = side == "buy"

    # -- trading state --------------------------------------------------------------------
    if v.kill_switch != "off":
        reasons.append(_r(Reason.KILL_SWITCH_ENGAGED, "the kill switch is engaged",
                          kill_switch=v.kill_switch))
    elif v.trading_state == "recovering":
        reasons.append(_r(Reason.RECOVERING, "startup reconciliation has not finished"))
    elif v.trading_state == "halted":
        reasons.append(_r(Reason.TRADING_HALTED, "trading is halted"))
    if not v.account_known:
        reasons.append(_r(Reason.NO_ACCOUNT_STATE, "the account's equity and cash are not known"))

    # -- data -----------------------------------------------------------------------------
    bar = v.last_bar(sym)
    if bar is None:
        reasons.append(_r(Reason.NO_MARKET_DATA, f"no valid bar for {sym} yet", symbol=sym))
    else:
        max_age = _max_age(bar.interval_s, limits.stale_after_bars)
        age = now - bar.end
        if age > max_age and not _session_bar_fresh(bar.start, bar.interval_s, now,
                                                    limits.stale_after_bars):
            reasons.append(_r(Reason.STALE_DATA,
                              f"last valid {sym} bar closed {age.total_seconds():.0f}s ago",
                              age_s=int(age.total_seconds()),
                              max_age_s=int(max_age.total_seconds()),
                              last_bar_end=bar.end.isoformat()))
    last = bar.close if bar is not None else None

    # -- eligibility ----------------------------------------------------------------------
    asset = v.asset(sym)
    if asset is None and limits.require_asset_info:
        reasons.append(_r(Reason.SYMBOL_UNKNOWN, f"no asset information for {sym}", symbol=sym))
    if asset is not None and (not asset.tradable or asset.status != "active"):
        reasons.append(_r(Reason.SYMBOL_NOT_TRADABLE, f"{sym} is not tradable",
                          tradable=asset.tradable, status=asset.status))
    if sym in limits.deny_symbols:
        reasons.append(_r(Reason.SYMBOL_DENIED, f"{sym} is on the deny list"))
    fractionable = asset.fractionable if asset is not None else False

    # -- price and size -------------------------------------------------------------------
    if intent.order_type in ("limit", "stop_limit"):
        assert intent.limit_price is not None
        price: Decimal | None = intent.limit_price
        if last is not None and abs(intent.limit_price - last) / last > limits.max_limit_away_pct:
            reasons.append(_r(Reason.LIMIT_PRICE_AWAY,
                              f"limit {intent.limit_price} is too far from last {last}",
                              limit_price=intent.limit_price, last=last,
                              max_away_pct=limits.max_limit_away_pct))
    elif last is not None:
        # A buy stop fills once the market has risen to its trigger: priced from there.
        base = max(last, intent.stop_price) if (
            buy and intent.order_type == "stop" and intent.stop_price is not None) else last
        price = base * (ONE + limits.market_buffer_bps / 10_000) if buy else base
    else:
        price = None
    if price is None:
        return _reject(intent, now, reasons)

    sizing = _size(intent, price, fractionable, limits, reasons)
    if sizing is None:
        return _reject(intent, now, reasons)
    qty = sizing.qty
    notional = qty * price
    protection.check(intent, last, sizing.fractional, reasons)

    # -- direction ------------------------------------------------------------------------
    pos = v.position(sym)
    res = v.reserved(sym)
    if buy:
        effective = pos + res.buy_qty  # where the position goes if every open buy fills
        reducing = min(qty, max(-effective, ZERO))
    else:
        effective = pos - res.sell_qty
        reducing = min(qty, max(effective, ZERO))
    opening = qty - reducing
    if opening > 0 and intent.reduce_only:
        reasons.append(_r(Reason.REDUCE_ONLY_WOULD_GROW,
                          "a reduce-only intent would open or grow a position",
                          position=pos, qty=qty, opening=opening))
    if opening > 0 and v.trading_state == "reducing":
        reasons.append(_r(Reason.REDUCE_ONLY_MODE, "trading is reduce-only; this order grows a position",
                          position=pos, opening=opening))
    if not buy and effective - qty < 0 and opening > 0:
        shortable = asset.shortable if asset is not None else False
        if not limits.allow_short or not shortable:
            reasons.append(_r(Reason.SHORTING_DISABLED, f"the order would open a short in {sym}",
                              position=pos, qty=qty, allow_short=limits.allow_short,
                              shortable=shortable))

    # -- protection beyond the position --------------------------------------------------
    # Protective orders reserve no shares (they only close), so two stops for one position
    # would both pass the direction check above; if both triggered they would open the
    # other way. Only what the position still lacks may be protected.
    if opening == 0 and intent.order_type in STOP_ORDER_TYPES:
        guarded = v.protected_qty(sym, side)
        if guarded + qty > abs(pos):
            reasons.append(_r(Reason.PROTECTION_EXCEEDS_POSITION,
                              f"stops already cover {guarded} of the {abs(pos)} {sym} held",
                              position=pos, protected=guarded, qty=qty))

    # -- opposite orders (Alpaca's wash-trade protection) ---------------------------------
    opposite = (res.sell_qty or res.sell_notional) if buy else (res.buy_qty or res.buy_notional)
    if opposite:
        reasons.append(_r(Reason.POTENTIAL_WASH_TRADE,
                          f"an opposite-side order in {sym} is still open",
                          open_opposite_qty=res.sell_qty if buy else res.buy_qty))

    # -- limits that only apply to growing risk -------------------------------------------
    at_risk = ZERO
    headroom: list[Decimal] = []
    if opening > 0:
        open_notional = opening * price
        if notional > limits.max_order_notional:
            reasons.append(_r(Reason.ORDER_NOTIONAL_LIMIT,
                              f"order notional {notional:.2f} exceeds {limits.max_order_notional}",
                              notional=_q(notional), limit=limits.max_order_notional))
        headroom.append(limits.max_order_notional)

        sym_after = v.exposure(sym, extra_buy=qty if buy else ZERO, extra_sell=ZERO if buy else qty)
        sym_before = v.exposure(sym)
        if sym_after > limits.max_symbol_exposure:
            reasons.append(_r(Reason.SYMBOL_EXPOSURE_LIMIT,
                              f"{sym} exposure would be {sym_after:.2f}",
                              exposure_after=_q(sym_after), limit=limits.max_symbol_exposure))
        headroom.append(limits.max_symbol_exposure - sym_before)

        others = v.exposure_of_others(sym)
        gross_after = others + sym_after
        if gross_after > limits.max_gross_exposure:
            reasons.append(_r(Reason.GROSS_EXPOSURE_LIMIT,
                              f"gross exposure would be {gross_after:.2f}",
                              gross_after=_q(gross_after), limit=limits.max_gross_exposure))
        headroom.append(limits.max_gross_exposure - others - sym_before)

        equity = v.equity()
        margin = equity * limits.intraday_leverage
        if gross_after > margin:
            reasons.append(_r(Reason.INTRADAY_MARGIN,
                              f"exposure {gross_after:.2f} would exceed equity x leverage {margin:.2f}",
                              exposure_after=_q(gross_after), equity=_q(equity),
                              leverage=limits.intraday_leverage))
        headroom.append(margin - others - sym_before)

        total = v.total_reserved()
        if buy:
            cost = notional
            bp_left = v.buying_power - total.buy_notional
            if cost > bp_left:
                reasons.append(_r(Reason.NOTIONAL_EXCEEDS_BUYING_POWER,
                                  f"order costs {cost:.2f}, buying power left is {bp_left:.2f}",
                                  notional=_q(cost), buying_power=_q(v.buying_power),
                                  reserved_by_open_orders=_q(total.buy_notional),
                                  price=_q(price), qty=qty))
            headroom.append(bp_left)
            if limits.intraday_leverage <= 1:
                cash_left = v.cash - total.buy_notional
                if cost > cash_left:
                    reasons.append(_r(Reason.NOTIONAL_EXCEEDS_CASH,
                                      f"order costs {cost:.2f}, cash left is {cash_left:.2f}",
                                      notional=_q(cost), cash=_q(v.cash),
                                      reserved_by_open_orders=_q(total.buy_notional)))
                headroom.append(cash_left)

        if pos == 0 and res.orders == 0:
            held = v.symbols()
            if len(held) >= limits.max_open_positions:
                reasons.append(_r(Reason.MAX_OPEN_POSITIONS,
                                  f"{len(held)} positions/symbols with orders already open",
                                  open=len(held), limit=limits.max_open_positions))

        # -- protection ---------------------------------------------------------------------
        if limits.require_protection and not protection.carries_stop(intent):
            if sizing.fractional and not limits.engine_side_protection:
                reasons.append(_r(Reason.FRACTIONAL_PROTECTION_UNAVAILABLE,
                                  f"a fractional position in {sym} can not carry a stop-loss "
                                  "at the broker (no bracket for fractions); buy whole shares "
                                  "or allow risk.engine_side_protection", qty=qty))
            elif not sizing.fractional:
                reasons.append(_r(Reason.PROTECTION_REQUIRED,
                                  "risk.require_protection: an order that opens or adds to a "
                                  "position must carry a stop_loss", opening=opening))

        # The loss this order may add: to its stop-loss (which the broker holds) plus the
        # gap allowance; else to the planning stop (v1 meaning); else the default.
        stop_level = protection.protective_stop_level(intent)
        if stop_level is not None:
            per_dollar = abs(price - stop_level) / price + limits.stop_gap_allowance_pct
        elif intent.stop_price is not None and intent.order_type in ("market", "limit"):
            per_dollar = abs(price - intent.stop_price) / price
        else:
            per_dollar = limits.default_stop_pct
        at_risk = _q(open_notional * per_dollar)
        committed = v.position_risk(limits.default_stop_pct, limits.stop_gap_allowance_pct) \
            + total.at_risk
        for code, realized, limit, label in (
            (Reason.DAILY_LOSS_LIMIT, v.realized_today(), limits.daily_limit(equity), "today"),
            (Reason.WEEKLY_LOSS_LIMIT, v.realized_this_week(), limits.weekly_limit(equity),
             "this week"),
        ):
            used = -realized + committed
            if used + at_risk > limit:
                reasons.append(_r(code,
                                  f"loss {label} plus open risk {used:.2f} and this order's "
                                  f"{at_risk:.2f} would exceed {limit:.2f}",
                                  realized=_q(realized), open_risk=_q(committed),
                                  order_risk=at_risk, limit=_q(limit)))
            if per_dollar > 0:
                headroom.append((limit - used) / per_dollar)

    # -- day trades -----------------------------------------------------------------------
    day_trade = reducing > 0 and v.opened_today(sym)
    if day_trade:
        allowed = _day_trade_allowance(v, limits)
        if allowed is not None:
            used_dt = v.day_trades_in_window()
            if limits.day_trade_mode == "auto" and v.broker_daytrade_count is not None:
                used_dt = max(used_dt, v.broker_daytrade_count)
            pending = v.total_reserved().day_trades
            if used_dt + pending + 1 > allowed:
                reasons.append(_r(Reason.DAY_TRADE_LIMIT,
                                  f"{used_dt} day trades in 5 business days and {pending} pending; "
                                  f"limit {allowed}",
                                  used=used_dt, pending=pending, limit=allowed,
                                  mode=limits.day_trade_mode))

    # -- rate -----------------------------------------------------------------------------
    recent = v.approvals_in_last_minute()
    if recent >= limits.max_orders_per_minute:
        reasons.append(_r(Reason.ORDER_RATE_LIMIT, f"{recent} orders approved in the last minute",
                          recent=recent, limit=limits.max_orders_per_minute))

    if reasons:
        if (intent.allow_notional and not converted and fractionable
                and intent.order_class == "simple" and intent.order_type in ("market", "limit")
                and all(r.code in SIZE_REASONS for r in reasons) and headroom):
            shrunk = _shrink(intent, min(headroom), price, limits)
            if shrunk is not None:
                d = decide(shrunk, v, limits, converted=True, original=intent)
                if isinstance(d, RiskApproved):
                    return d
        return _reject(original or intent, now, reasons)

    coid = client_order_id_for(intent.intent_id)
    oco = intent.order_class == "oco"
    order_type = "limit" if oco else intent.order_type
    limit_price = intent.take_profit.limit_price if oco and intent.take_profit else \
        intent.limit_price
    stop_level = protection.protective_stop_level(intent)
    engine_side = bool(opening > 0 and sizing.fractional and limits.require_protection
                       and limits.engine_side_protection)
    risk_stop = stop_level if stop_level is not None else (
        intent.stop_price if intent.order_type in ("market", "limit") else None)
    if engine_side and risk_stop is None:
        # The engine watches this one: it needs a level, the default stop from the price.
        f = limits.default_stop_pct
        risk_stop = (price * (ONE - f) if buy else price * (ONE + f)).quantize(CENT)
    return RiskApproved(
        ts=now, intent_id=intent.intent_id, client_order_id=coid,
        strategy=intent.strategy, symbol=sym, side=side,  # type: ignore[arg-type]
        order_type=order_type, qty=qty, notional=None,  # type: ignore[arg-type]
        limit_price=limit_price, time_in_force=intent.time_in_force,
        reference_price=price.quantize(PRICE_STEP), estimated_notional=_q(notional),
        at_risk=at_risk,
        reduce_only=intent.reduce_only, day_trade=day_trade, converted_to_notional=converted,
        order_class=intent.order_class,
        stop_price=intent.stop_price if intent.order_type in ("stop", "stop_limit") else None,
        trail_price=intent.trail_price, trail_percent=intent.trail_percent,
        take_profit=intent.take_profit, stop_loss=intent.stop_loss,
        legs=protection.legs_for(intent, coid, qty),
        # Closes only, with a stop or as an OCO: it protects a position, exposes nothing.
        protective=opening == 0 and (oco or intent.order_type in STOP_ORDER_TYPES),
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
        reference_price=price.quantize(PRICE_STEP), estimated_notional=_q(intent.qty * price),
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
    fractional = remaining != remaining.to_integral_value()
    protection.check(intent, last, fractional, reasons)
    mark = last if last is not None else target.reference_price
    moved = msgspec.structs.replace(target, stop_price=intent.stop_price,
                                    trail_price=intent.trail_price,
                                    trail_percent=intent.trail_percent)
    old_level, new_level = stop_level(target, mark), stop_level(moved, mark)
    sell = target.side == "sell"
    extra = remaining * ((old_level - new_level) if sell else (new_level - old_level))
    if extra > 0 and not reasons:
        equity = v.equity()
        total = v.total_reserved()
        committed = v.position_risk(limits.default_stop_pct, limits.stop_gap_allowance_pct) \
            + total.at_risk
        for code, realized, limit, label in (
            (Reason.DAILY_LOSS_LIMIT, v.realized_today(), limits.daily_limit(equity), "today"),
            (Reason.WEEKLY_LOSS_LIMIT, v.realized_this_week(), limits.weekly_limit(equity),
             "this week"),
        ):
            used = -realized + committed
            if used + extra > limit:
                reasons.append(_r(code, f"loosening the stop adds {extra:.2f} to the loss "
                                        f"{label} ({used:.2f}) beyond {limit:.2f}",
                                  realized=_q(realized), open_risk=_q(committed),
                                  order_risk=_q(extra), limit=_q(limit)))
    if reasons:
        return _reject(intent, v.now, reasons)
    return RiskApproved(
        ts=v.now, intent_id=intent.intent_id,
        client_order_id=client_order_id_for(intent.intent_id), strategy=intent.strategy,
        symbol=sym, side=target.side,  # type: ignore[arg-type]
        order_type=target.order_type,  # type: ignore[arg-type]
        qty=remaining, notional=None, limit_price=target.limit_price,
        time_in_force=target.time_in_force, reference_price=mark.quantize(PRICE_STEP),
        estimated_notional=ZERO, at_risk=ZERO, reduce_only=True, order_class=target.order_class,
        stop_price=intent.stop_price, trail_price=intent.trail_price,
        trail_percent=intent.trail_percent, protective=True, risk_stop=new_level,
        replaces=target.client_order_id)


def _size(intent: OrderIntent, price: Decimal, fractionable: bool, limits: RiskLimits,
          reasons: list[RejectReason]) -> _Sizing | None:
    if intent.qty is not None:
        qty = intent.qty
        fractional = qty != qty.to_integral_value()
        if fractional and qty.quantize(QTY_STEP, ROUND_DOWN) != qty:
            reasons.append(_r(Reason.INVALID_INTENT, f"qty {qty} has more than 9 decimals"))
            return None
    else:
        assert intent.notional is not None
        if fractionable:
            qty = (intent.notional / price).quantize(QTY_STEP, ROUND_DOWN)
            fractional = True
        else:
            qty = (intent.notional / price).to_integral_value(ROUND_DOWN)
            fractional = False
            if qty < 1:
                reasons.append(_r(Reason.BELOW_ONE_SHARE,
                                  f"${intent.notional} buys no whole share at {price:.2f}",
                                  notional=intent.notional, price=_q(price)))
                return None
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
                              notional=_q(qty * price), minimum=limits.min_notional))
    if qty <= 0:
        reasons.append(_r(Reason.BELOW_MIN_NOTIONAL, "the order rounds to zero quantity"))
        return None
    return _Sizing(qty=qty, price=price, fractional=fractional)


def _shrink(intent: OrderIntent, dollars: Decimal, price: Decimal,
            limits: RiskLimits) -> OrderIntent | None:
    """The intent as the largest dollar order every size limit allows, if that is ≥ $1."""
    wanted = intent.qty * price if intent.qty is not None else intent.notional
    assert wanted is not None
    amount = min(dollars, wanted).quantize(CENT, ROUND_DOWN)
    if amount < limits.min_notional or amount >= wanted:
        return None
    return msgspec.structs.replace(intent, qty=None, notional=amount)


@functools.lru_cache(maxsize=256)
def _max_age(interval_s: int, bars: Decimal) -> timedelta:
    return timedelta(seconds=float(interval_s * bars))


def _session_bar_fresh(start: datetime, interval_s: int, now: datetime, bars: Decimal) -> bool:
    """A daily (session) bar counts its staleness in sessions, not in hours: it is fresh
    until `bars` later sessions have closed without a newer bar (nights, weekends and
    holidays are not missing bars)."""
    if interval_s < 3 * 3600:
        return False
    day = trading_day(start)
    if start != session_open(day):
        return False
    return now <= sessions_after_close(day, math.ceil(bars))


def _day_trade_allowance(v: GateView, limits: RiskLimits) -> int | None:
    """How many day trades the guard allows in the window, or None when it does not apply."""
    if limits.day_trade_mode == "off":
        return None
    if limits.day_trade_mode == "limit":
        return limits.day_trade_limit
    # auto: the retired PDT rule, only where the broker still reports its fields.
    if v.broker_reports_pdt and v.equity() < limits.pdt_equity_threshold:
        return 3
    return None


def _reject(intent: OrderIntent, now: datetime, reasons: list[RejectReason]) -> RiskRejected:
    return RiskRejected(ts=now, intent_id=intent.intent_id, symbol=intent.symbol,
                        strategy=intent.strategy, reasons=tuple(reasons))


def _q(x: Decimal) -> Decimal:
    return x.quantize(CENT) if x.is_finite() and abs(x) < Decimal("1e15") else x
