"""What a strategy may see and do: read-only views, recent bars, sizing, intent building.

A `StrategyContext` is the strategy's only window on the engine:

- views are frozen copies (`PositionView`, `OrderView`, `AccountView`, `AssetView`) made from
  the projections on each call; a strategy never gets the projection objects, the log or the
  broker;
- `bars(symbol, n)` returns bars the runner has already been fed AND that closed at or before
  the clock (F13). The runner refuses to feed a bar that has not closed yet, so no path to a
  future bar exists;
- intents are built here, with deterministic ids: `"{strategy}:{symbol}:{stamp}:{n}"`, where
  `stamp` is the bar's start (`20261123T1430`) and `n` counts the intents of this strategy for
  this bar. Re-processing the same bar after a crash re-creates the same ids, so the risk gate
  answers them with its first decision instead of a second order.
"""

from __future__ import annotations

import hashlib
from collections import deque
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Any, Literal

import msgspec

from engine.clock import Clock
from events.catalogue import OrderIntent, RiskRejected, StopLoss, TakeProfit
from events.market import Bar, bar_length
from events.vocabulary import (
    CENT,
    MIN_NOTIONAL,
    ORDER_TYPES,
    SIDES,
    ZERO,
    Side,
    choice_problem,
    floor_qty,
    is_positive,
    is_whole,
    qty_notional_problem,
)
from projections.orders import Order, OrderStatus, OrderView, armed_stops, open_orders
from projections.state import Projections

MAX_INTENT_ID = 80

IntentStatus = Literal["pending", "rejected", "open", "filled", "done"]


class PositionView(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: Decimal = ZERO
    avg_cost: Decimal = ZERO

    @property
    def is_flat(self) -> bool:
        return self.qty == 0


class AccountView(msgspec.Struct, frozen=True, kw_only=True):
    """`known` is False until the broker's account has been seen; then cash and equity are
    the last snapshot moved by our own fills since (equity marks positions at the last bar)."""

    known: bool
    cash: Decimal
    equity: Decimal
    buying_power: Decimal


class AssetView(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    tradable: bool
    fractionable: bool
    shortable: bool


class Size(msgspec.Struct, frozen=True, kw_only=True):
    """Exactly one of `qty` (whole or fractional shares) and `notional` (dollars) is set."""

    qty: Decimal | None = None
    notional: Decimal | None = None


class LookAheadError(RuntimeError):
    """A bar was about to reach strategies before it closed (a pipeline bug, F13)."""


class BarHistory:
    """The last `maxlen` bars per symbol, as fed by the runner. `skew`: see the runner."""

    __slots__ = ("_bars", "_maxlen", "_skew")

    def __init__(self, maxlen: int = 390, skew: timedelta = timedelta(0)) -> None:
        if maxlen < 1:
            raise ValueError("history length must be >= 1")
        self._bars: dict[str, deque[Bar]] = {}
        self._maxlen = maxlen
        self._skew = skew

    def append(self, bar: Bar) -> None:
        self.of(bar.symbol).append(bar)

    def of(self, symbol: str) -> deque[Bar]:
        """The bars kept for `symbol` (created empty): appending to it is `append`, which
        is how the runner, holding it per symbol, feeds a bar without a call."""
        dq = self._bars.get(symbol)
        if dq is None:
            dq = self._bars[symbol] = deque(maxlen=self._maxlen)
        return dq

    def recent(self, symbol: str, n: int, now: datetime) -> tuple[Bar, ...]:
        """Up to `n` newest bars of `symbol` that closed at or before `now`, oldest first."""
        dq = self._bars.get(symbol)
        if not dq or n <= 0:
            return ()
        out: list[Bar] = []
        limit = now + self._skew
        for bar in reversed(dq):
            if bar.start + bar_length(bar.interval_s) <= limit:
                out.append(bar)
                if len(out) == n:
                    break
        out.reverse()
        return tuple(out)

    def last(self, symbol: str, now: datetime) -> Bar | None:
        got = self.recent(symbol, 1, now)
        return got[0] if got else None


def _check_decimal(name: str, value: object, *, positive: bool = True) -> None:
    if value is None:
        return
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, got {type(value).__name__} {value!r}")
    if not (is_positive(value) if positive else value.is_finite()):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def intent_id(strategy: str, symbol: str, stamp: str, n: int) -> str:
    """`strategy:symbol:stamp:n`, or, if that is longer than 80 characters, its first 63
    characters plus a 16-hex-digit hash of the whole (still deterministic and unique)."""
    iid = f"{strategy}:{symbol}:{stamp}:{n}"
    if len(iid) <= MAX_INTENT_ID:
        return iid
    digest = hashlib.sha256(iid.encode()).hexdigest()[:16]
    return f"{iid[:MAX_INTENT_ID - 17]}~{digest}"


def bar_stamp(bar: Bar) -> str:
    s = bar.start
    if s.second == 0 and s.microsecond == 0:
        return s.strftime("%Y%m%dT%H%M")
    if s.microsecond == 0:
        return s.strftime("%Y%m%dT%H%M%S")
    return s.strftime("%Y%m%dT%H%M%S%f")


class StrategyContext:
    """One per strategy, owned by the runner. See the module docstring."""

    __slots__ = (
        "_bar",
        "_clock",
        "_history",
        "_n",
        "_name",
        "_proj",
        "_signal_time",
        "_stamp",
        "_symbol",
        "_tif",
    )

    def __init__(self, name: str, projections: Projections, clock: Clock,
                 history: BarHistory, *, time_in_force: str = "day") -> None:
        self._name = name
        self._tif = time_in_force
        self._proj = projections
        self._clock = clock
        self._history = history
        self._bar: Bar | None = None
        self._symbol: str | None = None
        self._stamp: str | None = None
        self._n = 0
        self._signal_time: datetime | None = None

    # --- set by the runner before each hook (for bars it sets the slots directly) ----------

    def _begin_event(self, symbol: str | None, stamp: str) -> None:
        self._bar = None
        self._symbol = symbol
        self._stamp = stamp
        self._n = 0
        self._signal_time = self._clock.now()

    # --- reading -----------------------------------------------------------------------------

    @property
    def strategy(self) -> str:
        return self._name

    @property
    def now(self) -> datetime:
        return self._clock.now()

    @property
    def bar(self) -> Bar | None:
        """The bar being handled (None in on_start/on_fill/on_stop)."""
        return self._bar

    @property
    def signal_time(self) -> datetime | None:
        """When the current signal became knowable: the bar's close time in on_bar, the
        clock's time in the other hooks. Intents carry it as `signal_time`."""
        return self._signal_time

    def bars(self, symbol: str | None = None, n: int = 1) -> tuple[Bar, ...]:
        """Up to `n` most recent bars of `symbol` (default: the current bar's), oldest first,
        all closed at or before the clock. Includes the current bar."""
        sym = symbol or self._symbol
        if sym is None:
            return ()
        return self._history.recent(sym, n, self._clock.now())

    def last_price(self, symbol: str | None = None) -> Decimal | None:
        sym = symbol or self._symbol
        if sym is None:
            return None
        bar = self._history.last(sym, self._clock.now())
        if bar is not None:
            return bar.close
        last = self._proj.market.last_bar.get(sym)
        return last.close if last is not None else None

    def position_qty(self, symbol: str | None = None) -> Decimal:
        pos = self._proj.positions.positions.get(symbol or self._symbol or "")
        return pos.qty if pos is not None else ZERO

    def position(self, symbol: str | None = None) -> PositionView:
        sym = symbol or self._symbol or ""
        pos = self._proj.positions.positions.get(sym)
        if pos is None:
            return PositionView(symbol=sym)
        return PositionView(symbol=sym, qty=pos.qty, avg_cost=pos.avg_cost)

    def open_orders(self, symbol: str | None = None) -> tuple[OrderView, ...]:
        """Open orders of `symbol` (default: the current bar's) from every strategy, oldest
        first."""
        sym = symbol or self._symbol
        return tuple(self._view(o) for o in open_orders(self._proj.orders, sym))

    @staticmethod
    def _view(o: Order) -> OrderView:
        return OrderView.of(o)

    @property
    def cash(self) -> Decimal:
        a = self._proj.account
        return a.cash_now if a.known else ZERO

    @property
    def equity(self) -> Decimal:
        """Cash plus positions marked at their last price (avg cost if none is known)."""
        a = self._proj.account
        if not a.known:
            return ZERO
        total = a.cash_now
        for sym, pos in self._proj.positions.positions.items():
            if pos.qty:
                px = self.last_price(sym)
                total += pos.qty * (px if px is not None else pos.avg_cost)
        return total

    def account(self) -> AccountView:
        a = self._proj.account
        return AccountView(known=a.known, cash=self.cash, equity=self.equity,
                           buying_power=a.buying_power_now if a.known else ZERO)

    def asset(self, symbol: str | None = None) -> AssetView | None:
        sym = symbol or self._symbol or ""
        info = self._proj.market.assets.get(sym)
        if info is None:
            return None
        return AssetView(symbol=sym, tradable=info.tradable, fractionable=info.fractionable,
                         shortable=info.shortable)

    def intent_status(self, intent_id: str) -> IntentStatus:
        """pending: no risk decision yet; rejected: refused by the gate; open: an order is
        live; filled: completely filled; done: ended otherwise (canceled, expired...)."""
        decision = self._proj.risk.decisions.get(intent_id)
        if decision is None:
            return "pending"
        if isinstance(decision, RiskRejected):
            return "rejected"
        order = self._proj.orders.orders.get(decision.client_order_id)
        if order is None or order.is_open:
            return "open"
        return "filled" if order.status is OrderStatus.FILLED else "done"

    # --- sizing --------------------------------------------------------------------------

    @property
    def time_in_force(self) -> str:
        """The strategy's default time in force ("day" or "gtc")."""
        return self._tif

    def _fractionable(self, symbol: str) -> bool:
        if self._tif != "day":
            return False  # fractional orders must be day orders: size in whole shares
        info = self._proj.market.assets.get(symbol)
        # Unknown eligibility is treated as whole shares only: the safe assumption.
        return info is not None and info.fractionable

    def size_by_notional(self, dollars: Decimal, price: Decimal,
                         symbol: str | None = None) -> Size | None:
        """Spend up to `dollars`: a notional (cents, rounded down) on a fractionable symbol,
        else whole shares at `price` (rounded down). None if that buys nothing (less than
        $1 notional, or less than one whole share)."""
        _check_decimal("dollars", dollars)
        _check_decimal("price", price)
        sym = symbol or self._symbol or ""
        if self._fractionable(sym):
            notional = dollars.quantize(CENT, rounding=ROUND_DOWN)
            return Size(notional=notional) if notional >= MIN_NOTIONAL else None
        qty = (dollars / price).to_integral_value(rounding=ROUND_DOWN)
        return Size(qty=qty) if qty >= 1 else None

    def size_by_risk(self, risk_dollars: Decimal, entry: Decimal, stop: Decimal,
                     symbol: str | None = None, *,
                     max_notional: Decimal | None = None) -> Decimal | None:
        """Shares such that a move from `entry` to `stop` loses at most `risk_dollars`
        (capped at `max_notional` / entry). Whole shares unless the symbol is fractionable
        (then 9 decimals). None if that is nothing."""
        _check_decimal("risk_dollars", risk_dollars)
        _check_decimal("entry", entry)
        _check_decimal("stop", stop)
        _check_decimal("max_notional", max_notional)
        per_share = abs(entry - stop)
        if per_share == 0:
            return None
        qty = risk_dollars / per_share
        if max_notional is not None:
            qty = min(qty, max_notional / entry)
        if self._fractionable(symbol or self._symbol or ""):
            qty = floor_qty(qty)
        else:
            qty = qty.to_integral_value(rounding=ROUND_DOWN)
        return qty if qty > 0 else None

    # --- building intents ----------------------------------------------------------------

    def order(self, side: Side, *, symbol: str | None = None, qty: Decimal | None = None,
              notional: Decimal | None = None, size: Size | None = None,
              order_type: str = "market", limit_price: Decimal | None = None,
              stop_price: Decimal | None = None, time_in_force: str | None = None,
              reduce_only: bool = False, allow_notional: bool = False,
              reason: str = "", stop_loss: Decimal | None = None,
              stop_loss_limit: Decimal | None = None, take_profit: Decimal | None = None,
              trail_price: Decimal | None = None, trail_percent: Decimal | None = None,
              ) -> OrderIntent:
        """An intent with the next deterministic id. Bad arguments raise (inside a hook, the
        runner then records the error and pauses the strategy). `time_in_force` defaults to
        the strategy's, except that a fractional order is always a day order and an entry
        with legs good till canceled (its stop must outlive the session).

        `stop_loss=` / `take_profit=` attach legs the broker holds: both make a bracket, one
        an OTO (whole shares only; the gate says so otherwise). `stop_price` is a stop /
        stop-limit order's trigger, or, on a market / limit order, the planning stop that
        sizes the loss budget and is never sent."""
        if size is not None:
            if qty is not None or notional is not None:
                raise ValueError("give size, or qty/notional, not both")
            qty, notional = size.qty, size.notional
        # Each rule is tested inline and its helper called only to word the error (a
        # strategy's intents are nearly always fine): same rules, same order, same words.
        if side not in SIDES:
            raise ValueError(choice_problem("side", side, SIDES))
        if (qty is None) == (notional is None):
            raise ValueError(qty_notional_problem(qty, notional))
        for name, v in (("qty", qty), ("notional", notional), ("limit_price", limit_price),
                        ("stop_price", stop_price), ("stop_loss", stop_loss),
                        ("stop_loss_limit", stop_loss_limit), ("take_profit", take_profit),
                        ("trail_price", trail_price), ("trail_percent", trail_percent)):
            if v is not None:
                _check_decimal(name, v)
        if order_type not in ORDER_TYPES:
            raise ValueError(choice_problem("order_type", order_type, ORDER_TYPES))
        if (order_type in ("limit", "stop_limit")) != (limit_price is not None):
            raise ValueError("a limit order needs limit_price (so does a stop_limit); "
                             "other types take none")
        if stop_loss_limit is not None and stop_loss is None:
            raise ValueError("stop_loss_limit needs stop_loss")
        if time_in_force is None:
            fractional = notional is not None or (qty is not None
                                                  and not is_whole(qty))
            # Legs share their entry's time in force: good till canceled, so a stop does
            # not expire with the session while its position stays open.
            legs = stop_loss is not None or take_profit is not None
            time_in_force = "day" if fractional else ("gtc" if legs else self._tif)
        sym = symbol or self._symbol
        if not sym:
            raise ValueError("no symbol: pass symbol= outside on_bar")
        stamp = self._stamp
        if stamp is None:
            assert self._bar is not None
            stamp = self._stamp = bar_stamp(self._bar)
        iid = intent_id(self._name, sym, stamp, self._n)
        self._n += 1
        order_class = ("bracket" if stop_loss is not None and take_profit is not None
                       else "oto" if stop_loss is not None or take_profit is not None
                       else "simple")
        return OrderIntent(
            ts=self._clock.now(), intent_id=iid, strategy=self._name, symbol=sym, side=side,
            order_type=order_type, qty=qty, notional=notional, limit_price=limit_price,
            stop_price=stop_price, time_in_force=time_in_force, reduce_only=reduce_only,
            allow_notional=allow_notional, signal_time=self._signal_time, reason=reason,
            order_class=order_class,
            take_profit=TakeProfit(limit_price=take_profit) if take_profit is not None else None,
            stop_loss=StopLoss(stop_price=stop_loss, limit_price=stop_loss_limit)
            if stop_loss is not None else None,
            trail_price=trail_price, trail_percent=trail_percent)

    def protect(self, symbol: str | None = None, *, stop: Decimal | None = None,
                stop_limit: Decimal | None = None, take_profit: Decimal | None = None,
                trail_percent: Decimal | None = None, trail_price: Decimal | None = None,
                time_in_force: str | None = None, reason: str = "protect") -> OrderIntent | None:
        """Protection for the position held now (None if flat), held by the broker: a stop
        (stop-limit with `stop_limit`), a trailing stop (`trail_percent` / `trail_price`), or
        an OCO when both a take-profit and a stop are given. Good till canceled for whole
        shares; a fractional position can only have a day stop (Alpaca)."""
        sym = symbol or self._symbol or ""
        qty = self.position_qty(sym)
        if qty == 0:
            return None
        side: Side = "sell" if qty > 0 else "buy"
        trail = trail_percent is not None or trail_price is not None
        if trail == (stop is not None):
            raise ValueError("protect needs a stop or a trail (one of them)")
        if take_profit is not None and stop is None:
            raise ValueError("a take_profit needs a stop to make an OCO")
        whole = is_whole(qty)
        tif = time_in_force or ("gtc" if whole else "day")
        common: dict[str, Any] = {"symbol": sym, "qty": abs(qty), "time_in_force": tif,
                                      "reduce_only": True, "reason": reason}
        if take_profit is not None:
            assert stop is not None
            intent = self.order(side, order_type="limit", limit_price=take_profit,
                                stop_loss=stop, stop_loss_limit=stop_limit,
                                take_profit=take_profit, **common)
            return msgspec.structs.replace(intent, order_class="oco")
        if trail:
            return self.order(side, order_type="trailing_stop", trail_price=trail_price,
                              trail_percent=trail_percent, **common)
        if stop_limit is not None:
            return self.order(side, order_type="stop_limit", stop_price=stop,
                              limit_price=stop_limit, **common)
        return self.order(side, order_type="stop", stop_price=stop, **common)

    def move_stop(self, symbol: str | None = None, *, stop: Decimal | None = None,
                  trail_percent: Decimal | None = None, trail_price: Decimal | None = None,
                  order: str | None = None, reason: str = "move stop") -> OrderIntent | None:
        """Move the stop protecting `symbol` (the oldest one, or the order `order`) to `stop`
        (or a new trail, in the unit it was placed with), through the gate and the broker's
        replace. None when nothing protects the position."""
        sym = symbol or self._symbol or ""
        stops = self.protection(sym)
        target = next((o for o in stops if order is None or o.client_order_id == order), None)
        if target is None:
            return None
        ours = self._proj.orders.orders[target.client_order_id]
        remaining = (ours.qty or ZERO) - ours.filled_qty
        intent = self.order(ours.side, symbol=sym, qty=remaining,  # type: ignore[arg-type]
                            order_type=ours.order_type, limit_price=ours.limit_price,
                            stop_price=stop, trail_percent=trail_percent,
                            trail_price=trail_price, time_in_force=ours.time_in_force,
                            reduce_only=True, reason=reason)
        return msgspec.structs.replace(intent, replaces=ours.client_order_id)

    def ensure_stop(self, symbol: str | None = None, *, stop_pct: Decimal,
                    reason: str = "protect the fill") -> OrderIntent | None:
        """A stop at avg cost -/+ `stop_pct`% for a position that no protective order
        guards yet (legs, stops, OCOs, pending or live); None when flat or guarded."""
        _check_decimal("stop_pct", stop_pct)
        sym = symbol or self._symbol or ""
        pos = self.position(sym)
        closing = "sell" if pos.qty > 0 else "buy"
        # Guarded already, or on its way out (an exit is open): nothing to add.
        if pos.qty == 0 or any(o.protective or o.side == closing
                               for o in open_orders(self._proj.orders, sym)):
            return None
        f = stop_pct / 100
        if pos.qty > 0:
            stop = (pos.avg_cost * (1 - f)).quantize(CENT, rounding=ROUND_DOWN)
        else:
            stop = (pos.avg_cost * (1 + f)).quantize(CENT, rounding=ROUND_UP)
        return self.protect(sym, stop=stop, reason=reason)

    def protection(self, symbol: str | None = None) -> tuple[OrderView, ...]:
        """The protective stops at the broker that protect `symbol`'s position now."""
        sym = symbol or self._symbol or ""
        return tuple(self._view(o) for o in armed_stops(self._proj.orders, sym))

    def protected_qty(self, symbol: str | None = None) -> Decimal:
        """How much of the position those stops cover."""
        return sum(((o.qty or ZERO) - o.filled_qty for o in self.protection(symbol)), ZERO)

    def close_position(self, symbol: str | None = None, *, reason: str = "close"
                       ) -> OrderIntent | None:
        """A reduce-only market order for the whole position, or None if flat."""
        sym = symbol or self._symbol or ""
        qty = self.position_qty(sym)
        if qty == 0:
            return None
        return self.order("sell" if qty > 0 else "buy", symbol=sym, qty=abs(qty),
                          reduce_only=True, reason=reason)

