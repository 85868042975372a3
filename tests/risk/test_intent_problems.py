"""The gate's malformed-intent rules test each rule inline and word only what is wrong
(`invalid_intent_problems`, `protection.structure_problems`). Property: for any intent,
valid or broken in any combination of ways, they report exactly the problems, in exactly
the order, that the rules written out one helper call per rule report."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.risk import protection
from engine.risk.decide import invalid_intent_problems
from events.catalogue import OrderIntent, StopLoss, TakeProfit
from events.vocabulary import (
    ORDER_CLASSES,
    ORDER_TYPES,
    SIDES,
    TIME_IN_FORCE,
    choice_problem,
    positive_problem,
    qty_notional_problem,
)


def plain_structure_problems(i: OrderIntent) -> list[str]:
    problems = []
    cls = i.order_class
    wrong_class = choice_problem("order_class", cls, ORDER_CLASSES)
    if wrong_class:
        problems.append(wrong_class)
        return problems
    tp, sl = i.take_profit, i.stop_loss
    if cls == "simple" and (tp is not None or sl is not None):
        problems.append("take_profit / stop_loss need order_class bracket, oto or oco")
    if cls in ("bracket", "oco") and (tp is None or sl is None):
        problems.append(f"a {cls} order needs both take_profit and stop_loss")
    if cls == "oto" and (tp is None) == (sl is None):
        problems.append("an oto order needs exactly one of take_profit and stop_loss")
    if i.order_type in ("stop", "stop_limit") and i.stop_price is None:
        problems.append(f"a {i.order_type} order needs stop_price")
    if i.order_type == "stop_limit" and i.limit_price is None:
        problems.append("a stop_limit order needs limit_price")
    if i.order_type in ("stop", "trailing_stop") and i.limit_price is not None:
        problems.append(f"a {i.order_type} order must not carry limit_price")
    trails = (i.trail_price is not None) + (i.trail_percent is not None)
    if i.order_type == "trailing_stop" and trails != 1:
        problems.append("a trailing_stop needs exactly one of trail_price and trail_percent")
    if i.order_type != "trailing_stop" and trails:
        problems.append("trail_price / trail_percent only go with order_type trailing_stop")
    if i.order_type == "trailing_stop" and cls != "simple":
        problems.append("a trailing stop can not be part of a bracket, oco or oto")
    for name, v in (("take_profit.limit_price", tp.limit_price if tp else None),
                    ("stop_loss.stop_price", sl.stop_price if sl else None),
                    ("stop_loss.limit_price", sl.limit_price if sl else None)):
        problem = positive_problem(name, v)
        if problem:
            problems.append(problem)
    for name, v in (("trail_price", i.trail_price), ("trail_percent", i.trail_percent)):
        if v is not None and not v.is_finite():
            problems.append(f"{name}={v} must be a finite number")
    return problems


def plain_intent_problems(i: OrderIntent) -> list[str]:
    problems: list[str] = []
    if not i.intent_id or len(i.intent_id) > 200:
        problems.append("intent_id must be 1-200 characters")
    if not i.symbol or not i.symbol.replace(".", "").replace("/", "").isalnum() \
            or i.symbol != i.symbol.upper():
        problems.append(f"symbol {i.symbol!r} is not an upper-case ticker")
    found = (choice_problem("side", i.side, SIDES),
             choice_problem("order_type", i.order_type, ORDER_TYPES),
             choice_problem("time_in_force", i.time_in_force, TIME_IN_FORCE),
             qty_notional_problem(i.qty, i.notional),
             *(positive_problem(name, getattr(i, name))
               for name in ("qty", "notional", "limit_price", "stop_price")))
    problems.extend(p for p in found if p)
    if i.order_type == "limit" and i.limit_price is None:
        problems.append("a limit order needs limit_price")
    if i.order_type == "market" and i.limit_price is not None:
        problems.append("a market order must not carry limit_price")
    problems.extend(plain_structure_problems(i))
    return problems


amounts = st.one_of(st.none(), st.sampled_from([
    Decimal(10), Decimal("0.5"), Decimal("101.23"), Decimal(0), Decimal(-3),
    Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")]))
prices = st.sampled_from([Decimal("99.5"), Decimal(0), Decimal(-1), Decimal("NaN")])


@st.composite
def intents(draw: st.DrawFn) -> OrderIntent:
    return OrderIntent(
        ts=datetime(2026, 11, 23, 15, 0, tzinfo=UTC),
        intent_id=draw(st.sampled_from(["s:AAPL:20261123T1500:0", "", "x" * 201])),
        strategy="s",
        symbol=draw(st.sampled_from(["AAPL", "BRK.B", "BTC/USD", "aapl", "", "A-B"])),
        side=draw(st.sampled_from([*SIDES, "short"])),
        order_type=draw(st.sampled_from([*ORDER_TYPES, "peg"])),
        qty=draw(amounts), notional=draw(amounts), limit_price=draw(amounts),
        stop_price=draw(amounts),
        time_in_force=draw(st.sampled_from([*TIME_IN_FORCE, "gtd"])),
        order_class=draw(st.sampled_from([*ORDER_CLASSES, "multileg"])),
        take_profit=draw(st.one_of(st.none(), st.builds(TakeProfit, limit_price=prices))),
        stop_loss=draw(st.one_of(st.none(), st.builds(
            StopLoss, stop_price=prices, limit_price=st.one_of(st.none(), prices)))),
        trail_price=draw(amounts), trail_percent=draw(amounts))


@settings(max_examples=1500, deadline=None)
@given(intents())
def test_problems_are_the_rules_written_out(intent: OrderIntent) -> None:
    assert protection.structure_problems(intent) == plain_structure_problems(intent)
    assert invalid_intent_problems(intent) == plain_intent_problems(intent)


def test_a_well_formed_intent_has_no_problem() -> None:
    ok = OrderIntent(ts=datetime(2026, 11, 23, 15, 0, tzinfo=UTC), intent_id="s:AAPL:x:0",
                     strategy="s", symbol="AAPL", side="buy", qty=Decimal(10))
    assert invalid_intent_problems(ok) == [] == plain_intent_problems(ok)
