"""The loss watch remembers a day's verdict short of the limit while the loss stands and only
marks moved equity (kept at any equity no lower than the one it was reached at). Whatever is
booked — fills (losses, gains, positions opened and closed), bars of held and unheld
symbols, account snapshots, position adjustments, days passing — `look()` must say exactly
what a fresh computation says (`breach()`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.clock import SimClock
from engine.recovery.loss_watch import LossLimitWatch
from engine.risk.limits import RiskLimits
from events.catalogue import AccountSnapshot, BarReceived, FillReceived, PositionAdjusted
from events.market import Bar
from projections.state import Projections

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
SYMBOLS = ("AAA", "BBB")
_price = st.integers(90, 110).map(Decimal)
_steps = st.one_of(
    st.tuples(st.just("bar"), st.sampled_from(SYMBOLS), _price),
    # A fill executed now, or (a late clock) on the next day: booked to that day's loss.
    st.tuples(st.just("fill"), st.sampled_from(SYMBOLS), st.sampled_from(["buy", "sell"]),
              st.integers(1, 40).map(Decimal), _price, st.sampled_from([0, 0, 0, 1])),
    st.tuples(st.just("snapshot"), st.integers(500, 1500).map(Decimal)),
    st.tuples(st.just("adjust"), st.sampled_from(SYMBOLS), st.integers(-30, 30).map(Decimal),
              _price),
    st.tuples(st.just("time"), st.integers(1, 60 * 30)),  # minutes: days pass too
)


def _event(step: tuple[Any, ...], now: datetime, n: int) -> Any:
    kind = step[0]
    if kind == "bar":
        _, sym, close = step
        return BarReceived(ts=now, bar=Bar(symbol=sym, start=now - timedelta(minutes=1),
                                           interval_s=60, open=close, high=close, low=close,
                                           close=close, volume=Decimal(100)))
    if kind == "fill":
        _, sym, side, qty, price, ahead = step
        return FillReceived(ts=now, client_order_id=f"o{n}", broker_order_id=f"b{n}",
                            execution_id=f"x{n}", symbol=sym, side=side, qty=qty, price=price,
                            broker_time=now + timedelta(days=ahead), order_done=True,
                            source="simulated")
    if kind == "snapshot":
        _, cash = step
        return AccountSnapshot(ts=now, equity=cash, cash=cash, buying_power=cash, as_of=now)
    _, sym, qty, price = step
    return PositionAdjusted(ts=now, adjustment_id=f"a{n}", symbol=sym, qty_before=Decimal(0),
                            qty_after=qty, avg_price=price, reason="test")


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(_steps, max_size=60),
       limits=st.sampled_from([{"daily_loss_limit_pct": Decimal("0.05")},
                               {"daily_loss_limit": Decimal(40), "daily_loss_limit_pct": None},
                               {"daily_loss_limit": Decimal(60),
                                "daily_loss_limit_pct": Decimal("0.05")}]))
# A loss short of the limit, then the held rest of the position marked down: equity falls
# (-1040 cash + 20 x 100 -> 20 x 90), so 5% of it reaches the day's loss of 40.
@example(steps=[("fill", "AAA", "buy", Decimal(40), Decimal(100), 0),
                ("fill", "AAA", "sell", Decimal(20), Decimal(98), 0),
                ("bar", "AAA", Decimal(100)), ("bar", "AAA", Decimal(90))],
         limits={"daily_loss_limit_pct": Decimal("0.05")})
# Marked down a little, from just short of the limit to it (840 -> 780: 5% is 42 -> 39).
@example(steps=[("fill", "AAA", "buy", Decimal(40), Decimal(100), 0),
                ("fill", "AAA", "sell", Decimal(20), Decimal(98), 0),
                ("bar", "AAA", Decimal(94)), ("bar", "AAA", Decimal(91))],
         limits={"daily_loss_limit_pct": Decimal("0.05")})
# Equity below zero (no limit to reach), then marked up to where 5% of it is the loss.
@example(steps=[("fill", "AAA", "buy", Decimal(40), Decimal(100), 0),
                ("fill", "AAA", "sell", Decimal(20), Decimal(98), 0),
                ("bar", "AAA", Decimal(50)), ("bar", "AAA", Decimal(93)),
                ("bar", "AAA", Decimal(92))],
         limits={"daily_loss_limit_pct": Decimal("0.05")})
# The same loss, flat; then a snapshot takes cash away, an adjustment (a short) takes equity
# away, each seen at the next bar of a symbol not held.
@example(steps=[("fill", "AAA", "buy", Decimal(40), Decimal(100), 0),
                ("fill", "AAA", "sell", Decimal(40), Decimal(99), 0),
                ("bar", "BBB", Decimal(100)), ("snapshot", Decimal(700)),
                ("bar", "BBB", Decimal(100)), ("snapshot", Decimal(960)),
                ("bar", "BBB", Decimal(100)), ("adjust", "AAA", Decimal(-5), Decimal(100)),
                ("bar", "BBB", Decimal(100))],
         limits={"daily_loss_limit_pct": Decimal("0.05")})
# Reached on a held symbol's bar, then a bar of a symbol not held: still reached (a
# verdict short of the limit from before the drop must not be kept past the breach).
@example(steps=[("fill", "AAA", "buy", Decimal(40), Decimal(100), 0),
                ("fill", "AAA", "sell", Decimal(20), Decimal(98), 0),
                ("bar", "AAA", Decimal(100)), ("bar", "AAA", Decimal(90)),
                ("bar", "BBB", Decimal(100))],
         limits={"daily_loss_limit_pct": Decimal("0.05")})
# Tomorrow's loss booked early (a clock behind the broker's): today's verdict is not
# tomorrow's, though nothing is booked when the day changes.
@example(steps=[("fill", "AAA", "buy", Decimal(40), Decimal(100), 0),
                ("fill", "AAA", "sell", Decimal(40), Decimal(99), 0),
                ("fill", "BBB", "buy", Decimal(40), Decimal(100), 1),
                ("fill", "BBB", "sell", Decimal(40), Decimal(98), 1),
                ("bar", "BBB", Decimal(100)), ("time", 60 * 24), ("bar", "BBB", Decimal(100))],
         limits={"daily_loss_limit_pct": Decimal("0.05")})
def test_look_says_what_a_fresh_computation_says(steps: list[tuple[Any, ...]],
                                                  limits: dict[str, Any]) -> None:
    proj = Projections()
    clock = SimClock(T0)
    watch = LossLimitWatch(proj, None, clock, RiskLimits(**limits),  # type: ignore[arg-type]
                           enabled=True, flatten=False)
    # As of before the first fill, so fills move cash from it.
    proj.apply(1, AccountSnapshot(ts=T0, equity=Decimal(1000), cash=Decimal(1000),
                                  buying_power=Decimal(1000), as_of=T0 - timedelta(hours=1)))
    for n, step in enumerate(steps, start=2):
        if step[0] == "time":
            clock.set(clock.now() + timedelta(minutes=step[1]))
            continue
        event = _event(step, clock.now(), n)
        proj.apply(n, event)  # the projections subscribe first, as in open_engine
        watch.on_event(n, event)
        want = watch.breach() is not None
        assert watch.look(stepping=True) is want, (n, step)


_money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(10**9), places=2)


@settings(max_examples=300)
@given(a=_money, b=_money, usd=st.one_of(st.none(), _money),
       pct=st.one_of(st.none(), st.decimals(min_value=Decimal("0.0001"), max_value=1,
                                            places=4)))
def test_the_limit_never_shrinks_as_equity_grows(a: Decimal, b: Decimal, usd: Decimal | None,
                                                 pct: Decimal | None) -> None:
    # What a verdict kept at a higher equity rests on (see the loss watch's docstring).
    if usd is None and pct is None:
        pct = Decimal("0.03")
    limits = RiskLimits(daily_loss_limit=usd, daily_loss_limit_pct=pct)
    lo, hi = sorted((a, b))
    assert limits.daily_limit(lo) <= limits.daily_limit(hi)
