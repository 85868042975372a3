"""The simulation loop: one market item at a time through the engine, in event-time order.

Backtests, the demo and the service's file replay all run on the simulated clock with the
SimulatedBroker, and this driver is the only place that knows it. Each bar goes:

    advance the clock -> record the bar -> the simulated broker fills against it (its updates
    handled at once) -> the loss-limit watch -> the engine (protection watch, strategies, gate,
    execution, each routed intent's updates handled at once) -> fills delivered to strategies

so a fill is always recorded after the bar that priced it, and nothing depends on task
scheduling: the same input writes the same log, byte for byte. The engine itself has no
simulation branch; live, `Engine.on_item` runs and a task consumes the broker's stream.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from engine.app import Engine
from engine.brokers.base import BrokerEvent
from engine.brokers.simulated import SimulatedBroker
from engine.clock import SimClock
from engine.marketdata.types import MarketItem
from events.market import Bar, bar_length
from replay.backtest.overrides import Override

P = ParamSpec("P")
R = TypeVar("R")
# Short enough that a worker thread waiting for the GIL is served within a fraction of a
# commit; long enough that the forced switches cost the loop nothing measurable.
HANDOFF_INTERVAL_S = 0.0005
SWITCH_INTERVAL = Override()  # the interpreter's switch interval, held by running simulations


@contextmanager
def quick_thread_handoffs(interval_s: float = HANDOFF_INTERVAL_S) -> Iterator[None]:
    """A shorter GIL switch interval while a simulation runs (restored on exit).

    A step driver never lets the event loop idle: it runs Python for the whole run. A worker
    thread that released the GIL (the log's checkpointer, the bar file's reader, and the
    log's SQLite writer around each statement it steps, where its child process did not
    start: `events/sink.py`) then waits a whole switch interval (5 ms by default) each time it
    needs it back, several times per commit, so the log's commits fall behind the loop and
    the backlog is written after the last bar, serially, instead of alongside it (at 1M bars
    most of the SQLite work). Nothing about what is decided or recorded changes: only when
    the threads get their turn. The setting is the interpreter's, so it is held for as long
    as any run in the process needs it (`Override`): the first run in sets it, the last one
    out restores it."""
    def apply() -> Callable[[], None]:
        old = sys.getswitchinterval()
        sys.setswitchinterval(min(old, interval_s))
        return lambda: sys.setswitchinterval(old)

    with SWITCH_INTERVAL.hold(apply):
        yield


def with_quick_thread_handoffs(
        fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`fn` (a coroutine function) run inside `quick_thread_handoffs()`."""
    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with quick_thread_handoffs():
            return await fn(*args, **kwargs)
    return run


class StepDriver:
    """Drives an engine opened in step mode over a simulated broker and clock."""

    def __init__(self, engine: Engine) -> None:
        broker, clock = engine.broker, engine.clock
        if not isinstance(broker, SimulatedBroker) or not isinstance(clock, SimClock):
            raise TypeError("a step driver needs the simulated broker and a simulated clock")
        if not engine.step_mode:
            raise ValueError("the engine was opened for the live path (step_mode=False); "
                             "its simulated broker already watches the recorded bars")
        self.engine = engine
        self.broker = broker
        self.clock = clock
        # What the broker did with each routed intent is handled before the next step.
        engine.settle = self.pump

    async def on_item(self, item: MarketItem) -> None:
        """One provider item, in the order above."""
        work = self.step(item)
        if work is not None:
            await work

    def step(self, item: MarketItem) -> Coroutine[Any, Any, None] | None:
        """`on_item`, with the work that has to await returned instead of awaited: None
        when the item is done (a refused row; the common bar, which fills nothing, trips
        nothing and makes no intent), else a coroutine the caller must await at once.

        Written for the common bar: each step below that has nothing to do is settled by a
        synchronous test, and the bar then costs no coroutine at all (a coroutine per bar,
        two with the engine's, was a measurable part of a quiet bar). The steps run in the
        same order either way: a step that must await takes the rest with it (`_finish`)."""
        engine = self.engine
        if type(item) is Bar:
            self.clock.set(item.start + bar_length(item.interval_s))  # the bar's end
        bar = engine.record(item)
        if bar is None:
            return None
        broker = self.broker
        broker.on_bar(bar)  # orders placed on earlier bars fill at this bar's prices
        updates = broker.drain_updates()
        if updates:
            return self._finish(bar, updates, looked=False)
        if engine.loss_watch.look(stepping=True):
            return self._finish(bar, None, looked=True)
        return engine.on_bar_now(bar)

    async def _finish(self, bar: Bar, updates: list[BrokerEvent] | None, *,
                      looked: bool) -> None:
        """The rest of a bar's steps from the first that awaits: the broker's updates (if
        any), the loss-limit watch (`looked`: its `look()` already ran and found work),
        then the engine."""
        watch = self.engine.loss_watch
        if updates:
            await self._handle(updates)
            looked = watch.look(stepping=True)
        if looked and await watch.act(attempts=1):
            await self.pump()  # the kill switch's cancels, before any strategy sees the bar
        await self.engine.on_bar(bar)

    async def pump(self) -> None:
        """Handle every update the simulated broker emitted so far (and what they cause)."""
        await self._handle(self.broker.drain_updates())

    async def _handle(self, updates: list[BrokerEvent]) -> None:
        """`updates`, then whatever the broker emits while they are handled, until it is
        quiet."""
        handle = self.engine.execution.handle
        while updates:
            for u in updates:
                await handle(u)
            updates = self.broker.drain_updates()
