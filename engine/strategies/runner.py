"""Feeding bars and fills to strategies, with each strategy isolated from the others.

`StrategyRunner.on_bar(bar)` hands a validated bar to every strategy that trades its symbol,
in registration order, and returns their intents in that order. A strategy that raises, or
returns something that is not a well-formed intent of its own, produces a `StrategyError`
event (at its place in the output) and is paused; the others carry on. The caller appends
the returned events to the log and sends the intents to the risk gate.

Order of calls the caller must keep: fold an event into the projections *before* handing it
to the runner (a fill must already be in the positions when `on_fill` runs), and advance the
clock to at least `bar.end` before `on_bar(bar)`: a bar that has not closed yet is refused
with `LookAheadError` (F13), and strategies never see it. Live, pass the validator's
`max_clock_skew` here too, so a bar the validator accepted a few hundred milliseconds
"early" by our clock is not refused.
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from decimal import Decimal

from engine.clock import Clock
from events.catalogue import FillReceived, OrderIntent, StrategyError
from events.market import Bar, bar_length
from projections.state import Projections

from .base import Strategy
from .context import BarHistory, LookAheadError, StrategyContext

Output = OrderIntent | StrategyError
_DECIMAL_FIELDS = ("qty", "notional", "limit_price", "stop_price")


class _Slot:
    __slots__ = ("ctx", "error", "on_bar", "paused", "strategy")

    def __init__(self, strategy: Strategy, ctx: StrategyContext) -> None:
        self.strategy = strategy
        self.on_bar = strategy.on_bar  # bound once; called for every bar
        self.ctx = ctx
        self.paused = False
        self.error: str | None = None


def _where(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    if not tb:
        return ""
    last = tb[-1]
    return f" (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name})"


class StrategyRunner:
    """Runs strategies over bars and fills. Not thread-safe; one per engine run."""

    def __init__(self, strategies: Iterable[Strategy], *, projections: Projections,
                 clock: Clock, history_bars: int = 390,
                 max_clock_skew: timedelta = timedelta(0)) -> None:
        if max_clock_skew < timedelta(0):
            raise ValueError("max_clock_skew must not be negative")
        self._clock = clock
        self._skew = max_clock_skew if max_clock_skew else None  # None: skip the add
        self._history = BarHistory(history_bars, max_clock_skew)
        self._slots: list[_Slot] = []
        names: set[str] = set()
        for s in strategies:
            if not isinstance(s, Strategy):
                raise TypeError(f"not a Strategy: {s!r}")
            if s.instance_name in names:
                raise ValueError(f"two strategies are named {s.instance_name!r}; give each "
                                 "instance its own instance_name")
            names.add(s.instance_name)
            self._slots.append(_Slot(s, StrategyContext(s.instance_name, projections, clock,
                                                        self._history,
                                                        time_in_force=s.params.time_in_force)))
        self._by_name = {slot.strategy.instance_name: slot for slot in self._slots}
        # Per symbol: the strategies that trade it and its bar history (`BarHistory.of`).
        self._by_symbol: dict[str, tuple[tuple[_Slot, ...], deque[Bar]]] = {}
        self._projections = projections

    # --- introspection ----------------------------------------------------------------

    @property
    def strategies(self) -> tuple[Strategy, ...]:
        return tuple(slot.strategy for slot in self._slots)

    def paused(self) -> dict[str, str]:
        """Paused strategies and the error that paused them."""
        return {n: s.error or "" for n, s in self._by_name.items() if s.paused}

    def resume(self, name: str) -> None:
        """Un-pause a strategy (an operator decision; its internal state is as it was)."""
        self._by_name[name].paused = False
        self._by_name[name].error = None

    def bars(self, symbol: str, n: int) -> tuple[Bar, ...]:
        return self._history.recent(symbol, n, self._clock.now())

    # --- hooks --------------------------------------------------------------------------

    def start(self) -> list[Output]:
        stamp = "start" + self._clock.now().strftime("%Y%m%dT%H%M%S")
        out: list[Output] = []
        for slot in self._slots:
            if not slot.paused:
                slot.ctx._begin_event(None, stamp)
                self._call(slot, out, None, slot.strategy.on_start, slot.ctx)
        return out

    def stop(self) -> list[Output]:
        stamp = "stop" + self._clock.now().strftime("%Y%m%dT%H%M%S")
        out: list[Output] = []
        for slot in self._slots:
            if not slot.paused:
                slot.ctx._begin_event(None, stamp)
                self._call(slot, out, None, slot.strategy.on_stop, slot.ctx)
        return out

    def on_bar(self, bar: Bar) -> list[Output]:
        now = self._clock.now()
        end = bar.start + bar_length(bar.interval_s)
        if end > (now if self._skew is None else now + self._skew):
            raise LookAheadError(f"{bar.symbol} bar {bar.start.isoformat()} closes at "
                                 f"{end.isoformat()}, after the clock {now.isoformat()}")
        sym = bar.symbol
        known = self._by_symbol.get(sym)
        if known is None:
            known = self._by_symbol[sym] = (tuple(
                s for s in self._slots if s.strategy.symbols is None or sym in s.strategy.symbols
            ), self._history.of(sym))
        slots, history = known
        history.append(bar)  # `BarHistory.append`, without the call (this runs per bar)
        out: list[Output] = []
        for slot in slots:
            if slot.paused:
                continue
            ctx = slot.ctx
            # Reset the context for this bar (inline: this loop runs for every bar).
            ctx._bar = bar
            ctx._symbol = sym
            ctx._stamp = None
            ctx._n = 0
            ctx._signal_time = end
            try:
                result = slot.on_bar(bar, ctx)
            except Exception as e:  # noqa: BLE001 - isolating strategies is the point
                out.append(self._pause(slot, e, sym))
                continue
            if result:
                self._accept(slot, result, out, sym)
        return out

    def on_fill(self, fill: FillReceived) -> list[Output]:
        """Route a fill to the strategy whose order it is (by the order's strategy name)."""
        order = self._projections.orders.orders.get(fill.client_order_id)
        slot = self._by_name.get(order.strategy) if order is not None else None
        out: list[Output] = []
        if slot is None or slot.paused:
            return out
        slot.ctx._begin_event(fill.symbol, "F" + fill.execution_id)
        self._call(slot, out, fill.symbol, slot.strategy.on_fill, fill, slot.ctx)
        return out

    # --- helpers ------------------------------------------------------------------------

    def _call(self, slot: _Slot, out: list[Output], symbol: str | None,
              fn: Callable[..., Sequence[OrderIntent] | None], *args: object) -> None:
        try:
            result = fn(*args)
        except Exception as e:  # noqa: BLE001 - same isolation as on_bar
            out.append(self._pause(slot, e, symbol))
            return
        if result:
            self._accept(slot, result, out, symbol)

    def _accept(self, slot: _Slot, result: object, out: list[Output],
                symbol: str | None) -> None:
        problem = self._check(slot.strategy.instance_name, result)
        if problem is not None:
            out.append(self._pause(slot, None, symbol, problem))
            return
        out.extend(result)  # type: ignore[arg-type]

    @staticmethod
    def _check(name: str, result: object) -> str | None:
        if not isinstance(result, (list, tuple)):
            return f"returned {type(result).__name__}, expected a list of OrderIntent"
        seen: set[str] = set()
        for item in result:
            if not isinstance(item, OrderIntent):
                return f"returned {type(item).__name__}, expected OrderIntent"
            if item.strategy != name:
                return f"returned an intent of strategy {item.strategy!r}"
            if item.intent_id in seen:
                return f"returned intent id {item.intent_id!r} twice"
            seen.add(item.intent_id)
            for f in _DECIMAL_FIELDS:
                v = getattr(item, f)
                if v is not None and not isinstance(v, Decimal):
                    return f"intent {item.intent_id}: {f} is {type(v).__name__}, not Decimal"
        return None

    def _pause(self, slot: _Slot, e: BaseException | None, symbol: str | None,
               problem: str | None = None) -> StrategyError:
        error = (problem or "") if e is None else f"{type(e).__name__}: {e}{_where(e)}"
        slot.paused = True
        slot.error = error
        return StrategyError(ts=self._clock.now(), strategy=slot.strategy.instance_name,
                             error=error, symbol=symbol, paused=True)


__all__ = ["LookAheadError", "StrategyRunner"]
