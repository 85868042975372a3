"""The order vocabulary: the words an order is made of and the steps its numbers move in.

One definition for every layer (events, projections, the engine, the replay tools); it imports
nothing of the project, so anything may import it without a cycle. The words are Alpaca's
(the only live broker); a broker adapter translates anything else at its edge.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_DOWN, Decimal
from typing import Literal, get_args

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit", "trailing_stop"]
OrderClass = Literal["simple", "bracket", "oco", "oto"]
TimeInForce = Literal["day", "gtc", "ioc", "fok", "opg", "cls"]

SIDES: tuple[str, ...] = get_args(Side)
ORDER_TYPES: tuple[str, ...] = get_args(OrderType)
ORDER_CLASSES: tuple[str, ...] = get_args(OrderClass)
TIME_IN_FORCE: tuple[str, ...] = get_args(TimeInForce)
STOP_ORDER_TYPES = frozenset({"stop", "stop_limit", "trailing_stop"})
# Alpaca takes stop-type and bracket / OCO / OTO orders only as day or good-till-canceled.
ADVANCED_TIME_IN_FORCE = ("day", "gtc")

ZERO = Decimal(0)
ONE = Decimal(1)
CENT = Decimal("0.01")
SUB_CENT = Decimal("0.0001")  # the price step below $1, and the step reference prices keep
QTY_STEP = Decimal("0.000000001")  # Alpaca accepts fractional quantities to 9 decimals
MIN_NOTIONAL = ONE  # Alpaca's smallest notional order, in dollars


def choice_problem(name: str, value: str, allowed: Iterable[str]) -> str | None:
    """Why `value` is not a valid `name`, or None when it is one of `allowed`."""
    words = tuple(allowed)
    if value in words:
        return None
    return f"{name} {value!r} is not one of {', '.join(words)}"


def qty_notional_problem(qty: Decimal | None, notional: Decimal | None) -> str | None:
    """An order is sized in shares or in dollars: exactly one of the two."""
    if (qty is None) == (notional is None):
        return "exactly one of qty and notional must be set"
    return None


def is_positive(value: Decimal) -> bool:
    """A usable amount: finite (no NaN, no infinity) and above zero."""
    return value.is_finite() and value > 0


def positive_problem(name: str, value: Decimal | None) -> str | None:
    """Why an optional amount is unusable, or None when it is absent or positive."""
    if value is None or is_positive(value):
        return None
    return f"{name}={value} must be a positive finite number"


def is_whole(qty: Decimal) -> bool:
    return qty == qty.to_integral_value()


def floor_qty(qty: Decimal) -> Decimal:
    """`qty` rounded down to a quantity the broker accepts (9 decimals)."""
    return qty.quantize(QTY_STEP, ROUND_DOWN)


def is_sub_penny(price: Decimal) -> bool:
    """A price off Alpaca's grid: $0.01 steps at or above $1, $0.0001 below."""
    step = CENT if price >= ONE else SUB_CENT
    return price % step != 0
