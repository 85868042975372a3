"""The gate's checks: one small function per rule, each reading the same frozen context and
returning the reasons it refuses for (none when the rule is met).

Two lists, because two facts are only known part of the way through: `MARKET_CHECKS` read the
intent, the view and the limits (state, data, eligibility, the limit price); `ORDER_CHECKS`
also read the order's reference price and size (`Sized`), which `decide` works out between
the two. Every check of a list runs, so one rejection tells the whole story. The limits that
exist to stop risk from growing (exposure, buying power, loss budget, ...) only look at the
part of an order that opens or grows a position: refusing an exit would do the opposite.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, NamedTuple, TypeVar, overload

from engine.risk import protection
from engine.risk.codes import Reason, reason
from engine.risk.limits import RiskLimits
from engine.risk.view import GateView
from events.catalogue import AssetInfo, OrderIntent, RejectReason
from events.vocabulary import CENT, STOP_ORDER_TYPES, ZERO
from projections.calendar import session_open, sessions_after_close, trading_day
from projections.market import LastBar
from projections.orders import Reservation

Reasons = list[RejectReason]
T = TypeVar("T")


class memo(Generic[T]):
    """`functools.cached_property` without its lock: Python 3.11's takes an RLock on every
    first read, which costs more than most of what it caches here. A context lives inside
    one decision of the one gate task, so there is no other thread to guard against; the
    value is stored in the instance's `__dict__` and shadows this descriptor from then on."""

    def __init__(self, fn: Callable[[Any], T]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> memo[T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> T | memo[T]:
        if obj is None:
            return self
        value = self.fn(obj)
        obj.__dict__[self.name] = value
        return value


_CENTS_BELOW = Decimal("1e15")  # larger figures are shown as they are (quantize would raise)


def cents(x: Decimal) -> Decimal:
    return x.quantize(CENT) if x.is_finite() and abs(x) < _CENTS_BELOW else x


class _Frozen:
    """Attributes are set once, in the constructor, through `__dict__` (a frozen
    dataclass's `object.__setattr__` per field cost more than some checks); afterwards the
    context refuses to change, so no check can alter what the next one reads."""

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen (can not set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen (can not delete {name})")


class Context(_Frozen):
    """What the market checks read: the intent, the gate's view at the decision's time, the
    limits, and the symbol's last bar and asset information as the view had them. The
    figures every decision reads (`now`, `sym`, `buy`, `last`, `fractionable`) are taken
    once, here."""

    intent: OrderIntent
    view: GateView
    limits: RiskLimits
    bar: LastBar | None
    asset: AssetInfo | None
    now: datetime
    sym: str
    buy: bool
    last: Decimal | None
    fractionable: bool

    def __init__(self, intent: OrderIntent, view: GateView, limits: RiskLimits,
                 bar: LastBar | None, asset: AssetInfo | None) -> None:
        self.__dict__.update(
            intent=intent, view=view, limits=limits, bar=bar, asset=asset, now=view.now,
            sym=intent.symbol, buy=intent.side == "buy",
            last=bar.close if bar is not None else None,
            fractionable=asset.fractionable if asset is not None else False)

    @classmethod
    def of(cls, intent: OrderIntent, view: GateView, limits: RiskLimits) -> Context:
        sym = intent.symbol
        return cls(intent, view, limits, view.last_bar(sym), view.asset(sym))


class LossBudget(NamedTuple):
    """One period's loss limit and what is already spent of it: the realized loss plus the
    risk open positions and orders hold (`committed`)."""

    code: Reason
    label: str
    realized: Decimal
    limit: Decimal
    committed: Decimal

    @property
    def used(self) -> Decimal:
        return -self.realized + self.committed


def loss_budgets(v: GateView, limits: RiskLimits,
                 equity: Decimal | None = None) -> tuple[LossBudget, LossBudget]:
    """Today's and this week's budgets (what a new order's or a moved stop's risk must fit).
    `equity`: the view's, when the caller has it already."""
    if equity is None:
        equity = v.equity()
    committed = v.position_risk(limits.default_stop_pct, limits.stop_gap_allowance_pct) \
        + v.total_reserved().at_risk
    return (LossBudget(Reason.DAILY_LOSS_LIMIT, "today", v.realized_today(),
                       limits.daily_limit(equity), committed),
            LossBudget(Reason.WEEKLY_LOSS_LIMIT, "this week", v.realized_this_week(),
                       limits.weekly_limit(equity), committed))


class Sized(Context):
    """The context once the order has a reference price and a size. Where the position
    goes (`pos`, `res`, `effective`, `reducing`, `opening`) and the notional, which nearly
    every order check reads, are worked out here at once; what only some checks share
    (exposures, budgets) is worked out once, when first read."""

    price: Decimal  # reference price for notional and budget
    qty: Decimal
    fractional: bool
    notional: Decimal
    pos: Decimal
    res: Reservation
    effective: Decimal  # where the position goes if every open order on the intent's side fills
    reducing: Decimal  # the part of the order that closes what `effective` holds on the other side
    opening: Decimal

    def __init__(self, market: Context, *, price: Decimal, qty: Decimal,
                 fractional: bool) -> None:
        d = self.__dict__
        d.update(market.__dict__)  # the market context's figures (memos read so far too)
        view, sym, buy = market.view, market.sym, market.buy
        pos = view.position(sym)
        res = view.reserved(sym)
        effective = pos + res.buy_qty if buy else pos - res.sell_qty
        reducing = min(qty, max(-effective if buy else effective, ZERO))
        d.update(price=price, qty=qty, fractional=fractional, notional=qty * price, pos=pos,
                 res=res, effective=effective, reducing=reducing, opening=qty - reducing)

    @memo
    def sym_before(self) -> Decimal:
        return self.view.exposure(self.sym)

    @memo
    def sym_after(self) -> Decimal:
        return self.view.exposure(self.sym, extra_buy=self.qty if self.buy else ZERO,
                                  extra_sell=ZERO if self.buy else self.qty)

    @memo
    def others(self) -> Decimal:
        return self.view.exposure_of_others(self.sym)

    @property
    def gross_after(self) -> Decimal:
        return self.others + self.sym_after

    @memo
    def equity(self) -> Decimal:
        return self.view.equity()

    @property
    def margin(self) -> Decimal:
        return self.equity * self.limits.intraday_leverage

    @memo
    def total(self) -> Reservation:
        return self.view.total_reserved()

    @property
    def bp_left(self) -> Decimal:
        return self.view.buying_power - self.total.buy_notional

    @property
    def cash_left(self) -> Decimal:
        return self.view.cash - self.total.buy_notional

    @property
    def cash_only(self) -> bool:
        """Without leverage a buy must also fit the cash (buying power may count margin)."""
        return self.limits.intraday_leverage <= 1

    @memo
    def per_dollar(self) -> Decimal:
        """The loss a dollar of this order may take: to its stop-loss (which the broker
        holds) plus the gap allowance; else to the planning stop (v1 meaning); else the
        default."""
        i, price, limits = self.intent, self.price, self.limits
        level = protection.protective_stop_level(i)
        if level is not None:
            return abs(price - level) / price + limits.stop_gap_allowance_pct
        if i.stop_price is not None and i.order_type in ("market", "limit"):
            return abs(price - i.stop_price) / price
        return limits.default_stop_pct

    @memo
    def at_risk(self) -> Decimal:
        """The loss budget this order takes; nothing for an order that only reduces."""
        return cents(self.opening * self.price * self.per_dollar) if self.opening > 0 else ZERO

    @memo
    def budgets(self) -> tuple[LossBudget, LossBudget]:
        return loss_budgets(self.view, self.limits, self.equity)  # the margin check's equity

    @property
    def day_trade(self) -> bool:
        return self.reducing > 0 and self.view.opened_today(self.sym)


# --- market checks -----------------------------------------------------------------------

def check_state(c: Context) -> Reasons:
    v = c.view
    out: Reasons = []
    if v.kill_switch != "off":
        out.append(reason(Reason.KILL_SWITCH_ENGAGED, "the kill switch is engaged",
                          kill_switch=v.kill_switch))
    elif v.trading_state == "recovering":
        out.append(reason(Reason.RECOVERING, "startup reconciliation has not finished"))
    elif v.trading_state == "halted":
        out.append(reason(Reason.TRADING_HALTED, "trading is halted"))
    if not v.account_known:
        out.append(reason(Reason.NO_ACCOUNT_STATE, "the account's equity and cash are not known"))
    return out


def check_data(c: Context) -> Reasons:
    bar, sym, now = c.bar, c.sym, c.now
    if bar is None:
        return [reason(Reason.NO_MARKET_DATA, f"no valid bar for {sym} yet", symbol=sym)]
    bars = c.limits.stale_after_bars
    max_age = _max_age(bar.interval_s, bars)
    age = now - bar.end
    if age <= max_age or _session_bar_fresh(bar.start, bar.interval_s, now, bars):
        return []
    return [reason(Reason.STALE_DATA, f"last valid {sym} bar closed {age.total_seconds():.0f}s ago",
                   age_s=int(age.total_seconds()), max_age_s=int(max_age.total_seconds()),
                   last_bar_end=bar.end.isoformat())]


def check_eligibility(c: Context) -> Reasons:
    asset, sym = c.asset, c.sym
    out: Reasons = []
    if asset is None and c.limits.require_asset_info:
        out.append(reason(Reason.SYMBOL_UNKNOWN, f"no asset information for {sym}", symbol=sym))
    if asset is not None and (not asset.tradable or asset.status != "active"):
        out.append(reason(Reason.SYMBOL_NOT_TRADABLE, f"{sym} is not tradable",
                          tradable=asset.tradable, status=asset.status))
    if sym in c.limits.deny_symbols:
        out.append(reason(Reason.SYMBOL_DENIED, f"{sym} is on the deny list"))
    return out


def check_limit_price(c: Context) -> Reasons:
    limit, last, away = c.intent.limit_price, c.last, c.limits.max_limit_away_pct
    if c.intent.order_type not in ("limit", "stop_limit") or limit is None or last is None \
            or abs(limit - last) / last <= away:
        return []
    return [reason(Reason.LIMIT_PRICE_AWAY, f"limit {limit} is too far from last {last}",
                   limit_price=limit, last=last, max_away_pct=away)]


# --- order checks ------------------------------------------------------------------------

def check_protection(c: Sized) -> Reasons:
    return protection.check(c.intent, c.last, c.fractional)


def check_direction(c: Sized) -> Reasons:
    i, pos, qty, opening = c.intent, c.pos, c.qty, c.opening
    out: Reasons = []
    if opening > 0 and i.reduce_only:
        out.append(reason(Reason.REDUCE_ONLY_WOULD_GROW,
                          "a reduce-only intent would open or grow a position",
                          position=pos, qty=qty, opening=opening))
    if opening > 0 and c.view.trading_state == "reducing":
        out.append(reason(Reason.REDUCE_ONLY_MODE,
                          "trading is reduce-only; this order grows a position",
                          position=pos, opening=opening))
    if not c.buy and c.effective - qty < 0 and opening > 0:
        shortable = c.asset.shortable if c.asset is not None else False
        allow = c.limits.allow_short
        if not allow or not shortable:
            out.append(reason(Reason.SHORTING_DISABLED, f"the order would open a short in {c.sym}",
                              position=pos, qty=qty, allow_short=allow, shortable=shortable))
    return out


def check_protection_size(c: Sized) -> Reasons:
    """Protective orders reserve no shares (they only close), so two stops for one position
    would both pass the direction check; if both triggered they would open the other way.
    Only what the position still lacks may be protected."""
    if c.opening != 0 or c.intent.order_type not in STOP_ORDER_TYPES:
        return []
    guarded = c.view.protected_qty(c.sym, c.intent.side)
    held = abs(c.pos)
    if guarded + c.qty <= held:
        return []
    return [reason(Reason.PROTECTION_EXCEEDS_POSITION,
                   f"stops already cover {guarded} of the {held} {c.sym} held",
                   position=c.pos, protected=guarded, qty=c.qty)]


def check_wash_trade(c: Sized) -> Reasons:
    """Alpaca refuses an order while one on the other side of the symbol is open."""
    res = c.res
    opposite = (res.sell_qty or res.sell_notional) if c.buy else (res.buy_qty or res.buy_notional)
    if not opposite:
        return []
    return [reason(Reason.POTENTIAL_WASH_TRADE, f"an opposite-side order in {c.sym} is still open",
                   open_opposite_qty=res.sell_qty if c.buy else res.buy_qty)]


def check_order_notional(c: Sized) -> Reasons:
    limit = c.limits.max_order_notional
    if c.opening <= 0 or c.notional <= limit:
        return []
    return [reason(Reason.ORDER_NOTIONAL_LIMIT,
                   f"order notional {c.notional:.2f} exceeds {limit}",
                   notional=cents(c.notional), limit=limit)]


def check_symbol_exposure(c: Sized) -> Reasons:
    limit = c.limits.max_symbol_exposure
    if c.opening <= 0 or c.sym_after <= limit:
        return []
    return [reason(Reason.SYMBOL_EXPOSURE_LIMIT, f"{c.sym} exposure would be {c.sym_after:.2f}",
                   exposure_after=cents(c.sym_after), limit=limit)]


def check_gross_exposure(c: Sized) -> Reasons:
    limit = c.limits.max_gross_exposure
    if c.opening <= 0 or c.gross_after <= limit:
        return []
    return [reason(Reason.GROSS_EXPOSURE_LIMIT, f"gross exposure would be {c.gross_after:.2f}",
                   gross_after=cents(c.gross_after), limit=limit)]


def check_intraday_margin(c: Sized) -> Reasons:
    if c.opening <= 0 or c.gross_after <= c.margin:
        return []
    return [reason(Reason.INTRADAY_MARGIN,
                   f"exposure {c.gross_after:.2f} would exceed equity x leverage {c.margin:.2f}",
                   exposure_after=cents(c.gross_after), equity=cents(c.equity),
                   leverage=c.limits.intraday_leverage)]


def check_buying_power(c: Sized) -> Reasons:
    if c.opening <= 0 or not c.buy:
        return []
    out: Reasons = []
    cost, reserved = c.notional, c.total.buy_notional
    if cost > c.bp_left:
        out.append(reason(Reason.NOTIONAL_EXCEEDS_BUYING_POWER,
                          f"order costs {cost:.2f}, buying power left is {c.bp_left:.2f}",
                          notional=cents(cost), buying_power=cents(c.view.buying_power),
                          reserved_by_open_orders=cents(reserved), price=cents(c.price),
                          qty=c.qty))
    if c.cash_only and cost > c.cash_left:
        out.append(reason(Reason.NOTIONAL_EXCEEDS_CASH,
                          f"order costs {cost:.2f}, cash left is {c.cash_left:.2f}",
                          notional=cents(cost), cash=cents(c.view.cash),
                          reserved_by_open_orders=cents(reserved)))
    return out


def check_open_positions(c: Sized) -> Reasons:
    """Only an order that would start a new position (nothing held, nothing open) counts."""
    if c.opening <= 0 or c.pos != 0 or c.res.orders != 0:
        return []
    held, limit = len(c.view.symbols()), c.limits.max_open_positions
    if held < limit:
        return []
    return [reason(Reason.MAX_OPEN_POSITIONS, f"{held} positions/symbols with orders already open",
                   open=held, limit=limit)]


def check_protection_required(c: Sized) -> Reasons:
    limits = c.limits
    if c.opening <= 0 or not limits.require_protection or protection.carries_stop(c.intent):
        return []
    if c.fractional and not limits.engine_side_protection:
        return [reason(Reason.FRACTIONAL_PROTECTION_UNAVAILABLE,
                       f"a fractional position in {c.sym} can not carry a stop-loss "
                       "at the broker (no bracket for fractions); buy whole shares "
                       "or allow risk.engine_side_protection", qty=c.qty)]
    if not c.fractional:
        return [reason(Reason.PROTECTION_REQUIRED,
                       "risk.require_protection: an order that opens or adds to a "
                       "position must carry a stop_loss", opening=c.opening)]
    return []


def check_loss_budget(c: Sized) -> Reasons:
    if c.opening <= 0:
        return []
    at_risk = c.at_risk
    return [reason(b.code, f"loss {b.label} plus open risk {b.used:.2f} and this order's "
                           f"{at_risk:.2f} would exceed {b.limit:.2f}",
                   realized=cents(b.realized), open_risk=cents(b.committed),
                   order_risk=at_risk, limit=cents(b.limit))
            for b in c.budgets if b.used + at_risk > b.limit]


def check_day_trades(c: Sized) -> Reasons:
    if not c.day_trade:
        return []
    v, limits = c.view, c.limits
    allowed = _day_trade_allowance(v, limits)
    if allowed is None:
        return []
    used = v.day_trades_in_window()
    if limits.day_trade_mode == "auto" and v.broker_daytrade_count is not None:
        used = max(used, v.broker_daytrade_count)
    pending = c.total.day_trades
    if used + pending + 1 <= allowed:
        return []
    return [reason(Reason.DAY_TRADE_LIMIT,
                   f"{used} day trades in 5 business days and {pending} pending; limit {allowed}",
                   used=used, pending=pending, limit=allowed, mode=limits.day_trade_mode)]


def check_rate(c: Sized) -> Reasons:
    recent, limit = c.view.approvals_in_last_minute(), c.limits.max_orders_per_minute
    if recent < limit:
        return []
    return [reason(Reason.ORDER_RATE_LIMIT, f"{recent} orders approved in the last minute",
                   recent=recent, limit=limit)]


MARKET_CHECKS: Sequence[Callable[[Context], Reasons]] = (
    check_state, check_data, check_eligibility, check_limit_price,
)
ORDER_CHECKS: Sequence[Callable[[Sized], Reasons]] = (
    check_protection, check_direction, check_protection_size, check_wash_trade,
    check_order_notional, check_symbol_exposure, check_gross_exposure, check_intraday_margin,
    check_buying_power, check_open_positions, check_protection_required, check_loss_budget,
    check_day_trades, check_rate,
)
# Reasons that shrinking the order could cure (when the intent allows a notional order).
SIZE_REASONS = frozenset({
    Reason.ORDER_NOTIONAL_LIMIT, Reason.SYMBOL_EXPOSURE_LIMIT, Reason.GROSS_EXPOSURE_LIMIT,
    Reason.NOTIONAL_EXCEEDS_BUYING_POWER, Reason.NOTIONAL_EXCEEDS_CASH, Reason.INTRADAY_MARGIN,
    Reason.DAILY_LOSS_LIMIT, Reason.WEEKLY_LOSS_LIMIT,
})


def headroom(c: Sized) -> list[Decimal]:
    """The dollars of opening each size limit still allows (the size checks' limits, from
    the same figures); empty for an order that opens nothing."""
    if c.opening <= 0:
        return []
    limits, before = c.limits, c.others + c.sym_before
    room = [limits.max_order_notional, limits.max_symbol_exposure - c.sym_before,
            limits.max_gross_exposure - before, c.margin - before]
    if c.buy:
        room.append(c.bp_left)
        if c.cash_only:
            room.append(c.cash_left)
    if c.per_dollar > 0:
        room.extend((b.limit - b.used) / c.per_dollar for b in c.budgets)
    return room


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

