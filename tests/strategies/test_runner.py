"""StrategyRunner: routing, deterministic order, and isolation of a failing strategy."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.clock import SimClock
from engine.strategies import Strategy, StrategyContext, StrategyRunner
from events.catalogue import FillReceived, OrderIntent, StrategyError
from events.market import Bar

from .helpers import Book, minutes, mkbar, ny

D = Decimal


class EveryBar(Strategy):
    """Buys one share on every bar."""

    name = "every_bar"

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent]:
        return [ctx.order("buy", qty=D(1), reason=f"bar {bar.start:%H%M}")]


class Boom(Strategy):
    name = "boom"

    def __init__(self, fail_on: int = 2, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.calls = 0
        self.fail_on = fail_on

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent]:
        self.calls += 1
        if self.calls == self.fail_on:
            raise ZeroDivisionError("division by zero in my signal")
        return [ctx.order("sell", qty=D(1))]


class Returns(Strategy):
    name = "returns"

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> object:  # type: ignore[override]
        return self.value(ctx) if callable(self.value) else self.value


class FillWatcher(Strategy):
    name = "fill_watcher"

    def __init__(self) -> None:
        super().__init__()
        self.fills: list[FillReceived] = []

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent]:
        return [ctx.order("buy", qty=D(2))] if not self.fills else []

    def on_fill(self, fill: FillReceived, ctx: StrategyContext) -> list[OrderIntent]:
        self.fills.append(fill)
        return [ctx.order("sell", symbol=fill.symbol, qty=fill.qty, reduce_only=True)]


def run(runner: StrategyRunner, clock: SimClock, bars: list[Bar]) -> list:
    out = []
    for b in bars:
        clock.set(b.end)
        out.append(runner.on_bar(b))
    return out


def test_a_raising_strategy_is_paused_and_recorded_while_the_other_goes_on():
    clock = SimClock(ny(10, 0))
    book = Book(clock)
    boom = Boom(fail_on=2)
    runner = StrategyRunner([boom, EveryBar()], projections=book.proj, clock=clock)
    bars = [mkbar("AAPL", t, "100") for t in minutes(ny(10, 0), 4)]
    outs = run(runner, clock, bars)
    kinds = [[(type(e).__name__, e.strategy) for e in out] for out in outs]
    assert kinds == [
        [("OrderIntent", "boom"), ("OrderIntent", "every_bar")],
        [("StrategyError", "boom"), ("OrderIntent", "every_bar")],  # in registration order
        [("OrderIntent", "every_bar")],
        [("OrderIntent", "every_bar")],
    ]
    err = outs[1][0]
    assert isinstance(err, StrategyError) and err.paused and err.symbol == "AAPL"
    assert err.error.startswith("ZeroDivisionError: division by zero in my signal (at test_runner")
    assert err.ts == bars[1].end
    assert boom.calls == 2  # not called again once paused
    assert runner.paused() == {"boom": err.error}
    runner.resume("boom")
    assert [e.strategy for e in run(runner, clock, [mkbar("AAPL", ny(10, 4), "1")])[0]] == [
        "boom", "every_bar"]


@pytest.mark.parametrize(("value", "problem"), [
    ("not a list", "returned str, expected a list of OrderIntent"),
    ([object()], "returned object, expected OrderIntent"),
    (lambda ctx: [OrderIntent(ts=ctx.now, intent_id="x", strategy="someone_else",
                              symbol="AAPL", side="buy", qty=D(1))],
     "returned an intent of strategy 'someone_else'"),
    (lambda ctx: [OrderIntent(ts=ctx.now, intent_id="x", strategy="returns", symbol="AAPL",
                              side="buy", qty=1.5)],  # type: ignore[arg-type]
     "intent x: qty is float, not Decimal"),
    (lambda ctx: [ctx.order("buy", qty=D(1))] * 2, "twice"),
])
def test_malformed_output_pauses_the_strategy(value, problem):
    clock = SimClock(ny(10, 1))
    runner = StrategyRunner([Returns(value), EveryBar()], projections=Book(clock).proj,
                            clock=clock)
    out = runner.on_bar(mkbar("AAPL", ny(10, 0), "100"))
    assert isinstance(out[0], StrategyError) and problem in out[0].error
    assert isinstance(out[1], OrderIntent) and out[1].strategy == "every_bar"


def test_bars_go_only_to_strategies_of_that_symbol():
    clock = SimClock(ny(10, 1))
    only_msft = EveryBar({"symbols": ["MSFT"]}, instance_name="msft_only")
    runner = StrategyRunner([only_msft, EveryBar()], projections=Book(clock).proj, clock=clock)
    assert [e.strategy for e in runner.on_bar(mkbar("AAPL", ny(10, 0), "1"))] == ["every_bar"]
    assert [e.intent_id for e in runner.on_bar(mkbar("MSFT", ny(10, 0), "1"))] == [
        "msft_only:MSFT:20261123T1500:0", "every_bar:MSFT:20261123T1500:0"]


def test_instance_names_must_be_unique():
    clock = SimClock(ny(10, 1))
    with pytest.raises(ValueError, match="two strategies are named 'every_bar'"):
        StrategyRunner([EveryBar(), EveryBar()], projections=Book(clock).proj, clock=clock)


def test_fills_go_to_the_strategy_that_placed_the_order():
    clock = SimClock(ny(10, 1))
    book = Book(clock)
    watcher = FillWatcher()
    other = EveryBar()
    runner = StrategyRunner([watcher, other], projections=book.proj, clock=clock)
    mine, theirs = runner.on_bar(mkbar("AAPL", ny(10, 0), "100"))
    fill = book.fill(mine, "100.5")
    book.fill(theirs, "100.5")
    out = runner.on_fill(fill)
    assert [(i.strategy, i.side, i.qty, i.reduce_only) for i in out] == [
        ("fill_watcher", "sell", D(2), True)]
    assert out[0].intent_id == f"fill_watcher:AAPL:Fx-{book.coids[mine.intent_id]}:0"
    assert watcher.fills == [fill]


def test_start_and_stop_hooks_are_isolated_too():
    class Starter(EveryBar):
        name = "starter"

        def on_start(self, ctx: StrategyContext) -> None:
            raise RuntimeError("cannot start")

    clock = SimClock(ny(10, 1))
    runner = StrategyRunner([Starter(), EveryBar()], projections=Book(clock).proj, clock=clock)
    (err,) = runner.start()
    assert isinstance(err, StrategyError) and err.strategy == "starter" and err.symbol is None
    assert [e.strategy for e in runner.on_bar(mkbar("AAPL", ny(10, 0), "1"))] == ["every_bar"]
    assert runner.stop() == []
