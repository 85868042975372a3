"""Alpaca's rules for stop, stop-limit and trailing-stop orders and the bracket / OCO / OTO
order classes, as the fake enforces them. Pure functions, no state.

What this relies on (found with the search tool; "assumed" marks what no source confirmed):
- Order types market, limit, stop, stop_limit, trailing_stop; `trail_price` xor
  `trail_percent`; `hwm` is the best price since submission and the stop ratchets from it
  (alpaca-py `alpaca/trading/models.py` Order docstring: "trail_percent ... away from the
  high water mark", "hwm: the highest (lowest) market price seen since the trailing stop
  order was submitted").
- Order classes: equities take simple, oco, oto, bracket (Alpaca maintainer in
  alpacahq/alpaca-py#505 quoting the POST /v2/orders reference); crypto and options only
  simple.
- A bracket's entry must be a market or limit order ("bracket orders must be market or
  limit orders", 40010001, Petersoj/alpaca-java#44) and must open a position ("bracket
  orders must be entry orders", 42210000, alpacahq/alpaca-trade-api-js#248). Its
  time_in_force must be day or gtc (rustrade-execution's AlpacaBracketOrderRequest docs;
  the exact error text is assumed).
- Legs are `held` until the parent fills completely; then the take-profit goes `new` and
  the stop-loss stays `held` until it triggers; one leg filling cancels the other;
  canceling one leg cancels the other (forum.alpaca.markets threads 3697 and 11938).
- Stop-loss and take-profit must be at least $0.01 away from the base price: "stop price
  must be less than base_price - 0.01" (alpacahq/Alpaca-API#166, an OTO stop_loss), and
  take_profit.limit_price >= base_price + 0.01 (mirrored; text assumed).
- Replacing a limit leg with a stop price: "limit orders must not have stop_price"
  (forum.alpaca.markets thread 11938).
- Fractional quantities: market and limit day orders, and since 2024-08-20 stop and
  stop-limit (docs.alpaca.markets changelog "Support for Fractional USD Stop, Stop Limit");
  "fractional orders must be DAY orders" (Petersoj/alpaca-java#140). Trailing stops and the
  advanced classes are not listed as fractional, so the fake refuses them (text assumed).
- Sub-penny: prices of $1.00 and above take at most 2 decimals, below $1.00 at most 4
  ("sub-penny increment does not fulfill minimum pricing criteria", assumed wording).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .broker_errors import ApiError

PENNY = Decimal("0.01")
ORDER_TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")
ORDER_CLASSES = ("simple", "bracket", "oco", "oto")
FRACTIONAL_TYPES = ("market", "limit", "stop", "stop_limit")


def check_increment(name: str, price: Decimal | None) -> None:
    if price is None:
        return
    places = 2 if price >= 1 else 4
    if price != price.quantize(Decimal(1).scaleb(-places)):
        raise ApiError(
            422, 42210000,
            f"invalid {name} {price}. sub-penny increment does not fulfill minimum pricing "
            "criteria",
        )


def check_trail(otype: str, trail_price: Decimal | None, trail_percent: Decimal | None) -> None:
    if otype != "trailing_stop":
        if trail_price is not None or trail_percent is not None:
            raise ApiError(422, 40010001, "trail_price and trail_percent are only for "
                                          "trailing_stop orders")
        return
    if (trail_price is None) == (trail_percent is None):
        raise ApiError(422, 40010001, "exactly one of trail_price and trail_percent is "
                                      "required for trailing_stop orders")
    value = trail_price if trail_price is not None else trail_percent
    assert value is not None
    if value <= 0:
        raise ApiError(422, 40010001, "trail_price/trail_percent must be > 0")


def check_fractional(otype: str, tif: str, order_class: str) -> None:
    if otype not in FRACTIONAL_TYPES:
        raise ApiError(422, 42210000, "fractional orders must be market, limit, stop or "
                                      "stop_limit orders")
    if tif != "day":
        raise ApiError(422, 42210000, "fractional orders must be DAY orders")
    if order_class != "simple":
        raise ApiError(422, 42210000, f"fractional orders are not supported for "
                                      f"{order_class} orders")


def leg_prices(body: dict[str, Any], dec: Any) -> tuple[Decimal | None, Decimal | None,
                                                       Decimal | None]:
    """(take_profit.limit_price, stop_loss.stop_price, stop_loss.limit_price)."""
    tp = body.get("take_profit") or None
    sl = body.get("stop_loss") or None
    if tp is not None and not isinstance(tp, dict):
        raise ApiError(400, 40010000, "request body format is invalid")
    if sl is not None and not isinstance(sl, dict):
        raise ApiError(400, 40010000, "request body format is invalid")
    try:
        tp_limit = dec(tp["limit_price"]) if tp and tp.get("limit_price") is not None else None
        sl_stop = dec(sl["stop_price"]) if sl and sl.get("stop_price") is not None else None
        sl_limit = dec(sl["limit_price"]) if sl and sl.get("limit_price") is not None else None
    except ValueError as exc:
        raise ApiError(422, 40010001, str(exc)) from None
    if tp is not None and tp_limit is None:
        raise ApiError(422, 40010001, "take_profit.limit_price is required")
    if sl is not None and sl_stop is None:
        raise ApiError(422, 40010001, "stop_loss.stop_price is required")
    return tp_limit, sl_stop, sl_limit


def check_class(order_class: str, otype: str, tif: str, side: str, base: Decimal | None,
                tp_limit: Decimal | None, sl_stop: Decimal | None,
                sl_limit: Decimal | None) -> None:
    """Validate an advanced order's shape and its legs' prices against the base price (the
    entry's limit price, else the market price)."""
    if order_class == "simple":
        if tp_limit is not None or sl_stop is not None:
            raise ApiError(422, 40010001, "take_profit/stop_loss need order_class bracket, "
                                          "oco or oto")
        return
    if tif not in ("day", "gtc"):
        raise ApiError(422, 42210000, f"time_in_force must be day or gtc for {order_class} "
                                      "orders")
    if order_class == "bracket":
        if otype not in ("market", "limit"):
            raise ApiError(422, 40010001, "bracket orders must be market or limit orders")
        if tp_limit is None or sl_stop is None:
            raise ApiError(422, 40010001, "bracket orders require take_profit and stop_loss")
    elif order_class == "oco":
        if otype != "limit":
            raise ApiError(422, 40010001, "oco orders must be limit orders")
        if tp_limit is None or sl_stop is None:
            raise ApiError(422, 40010001, "oco orders require take_profit and stop_loss")
    elif order_class == "oto":
        if otype not in ("market", "limit"):
            raise ApiError(422, 40010001, "oto orders must be market or limit orders")
        if (tp_limit is None) == (sl_stop is None):
            raise ApiError(422, 40010001, "oto orders require exactly one of take_profit "
                                          "and stop_loss")
    for name, px in (("take_profit.limit_price", tp_limit), ("stop_loss.stop_price", sl_stop),
                     ("stop_loss.limit_price", sl_limit)):
        if px is not None and px <= 0:
            raise ApiError(422, 40010001, f"invalid {name}: must be > 0")
        check_increment(name, px)
    if base is None:
        return
    # An exit leg sells above/below a long entry (mirrored for a short entry). An OCO is an
    # exit itself: its side is the legs' side, so the mirror flips.
    exits_long = (side == "buy") != (order_class == "oco")
    if order_class == "oco":
        return  # the take-profit is the order itself; the stop is checked against the market
    if tp_limit is not None:
        ok = tp_limit >= base + PENNY if exits_long else tp_limit <= base - PENNY
        if not ok:
            sign = ">=" if exits_long else "<="
            op = "+" if exits_long else "-"
            raise ApiError(422, 42210000, f"take_profit.limit_price must be {sign} "
                                          f"base_price {op} 0.01")
    if sl_stop is not None:
        ok = sl_stop <= base - PENNY if exits_long else sl_stop >= base + PENNY
        if not ok:
            word = "less" if exits_long else "greater"
            op = "-" if exits_long else "+"
            raise ApiError(422, 42210000, f"stop price must be {word} than base_price {op} "
                                          "0.01")


def check_stop_side(side: str, stop: Decimal | None, market: Decimal | None) -> None:
    """A sell stop triggers below the market, a buy stop above it; one on the wrong side
    would trigger at once (text assumed)."""
    if stop is None or market is None:
        return
    if side == "sell" and stop >= market:
        raise ApiError(422, 42210000, f"stop_price {stop} must be below the current price "
                                      f"{market} for a sell stop")
    if side == "buy" and stop <= market:
        raise ApiError(422, 42210000, f"stop_price {stop} must be above the current price "
                                      f"{market} for a buy stop")


def trail_stop(side: str, hwm: Decimal, trail_price: Decimal | None,
               trail_percent: Decimal | None) -> Decimal:
    """The trailing stop's stop price from its high-water mark (a sell trails below the
    highest price, a buy above the lowest), rounded to the cent like Alpaca shows it."""
    if trail_price is not None:
        stop = hwm - trail_price if side == "sell" else hwm + trail_price
    else:
        assert trail_percent is not None
        factor = trail_percent / 100
        stop = hwm * (1 - factor) if side == "sell" else hwm * (1 + factor)
    return stop.quantize(PENNY)
