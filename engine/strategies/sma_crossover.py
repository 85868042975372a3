"""SMA crossover on bar closes, for comparisons with other backtesters.

Long-only by default: buy when the fast SMA crosses above the slow one, sell everything when
it crosses below. A cross is judged like backtrader's `CrossOver`: against the last
*non-zero* difference, so touching without crossing is not a signal. With `allow_short`,
a downward cross from flat sells short (whole shares) and an upward cross covers.
Averages are exact (Decimal running sums), so signals do not depend on float rounding.
Sizing: a fixed `qty` when given, else `notional_fraction` of equity.
`protect` (default on) keeps a stop `stop_pct`% from the entry at the broker: a stop-loss
leg on a whole-share entry (OTO), or a day stop placed when a fractional entry fills.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Any

from pydantic import Field, model_validator

from events.catalogue import FillReceived, OrderIntent
from events.market import Bar
from events.vocabulary import CENT

from .base import Strategy, StrategyParams
from .context import StrategyContext
from .indicators import SmaPair


class SmaCrossoverParams(StrategyParams):
    fast: int = Field(10, ge=1, le=5000)
    slow: int = Field(30, ge=2, le=5000)
    qty: Decimal | None = Field(None, gt=0, description="fixed shares per entry")
    notional_fraction: Decimal = Field(Decimal("0.1"), gt=0, le=1)
    allow_short: bool = False
    pending_timeout_bars: int = Field(5, ge=1)
    protect: bool = Field(True, description="keep each entry's stop at the broker")
    stop_pct: Decimal = Field(Decimal("2.0"), gt=0, lt=100, description="stop distance, %")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> SmaCrossoverParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be below slow ({self.slow})")
        return self


class _SymbolState:
    __slots__ = ("last_sign", "pending", "pending_bars", "sma")

    def __init__(self, fast: int, slow: int) -> None:
        self.sma = SmaPair(fast, slow)
        self.last_sign = 0  # sign of the last non-zero (fast - slow)
        self.pending: str | None = None
        self.pending_bars = 0


class SmaCrossover(Strategy):
    name = "sma_crossover"
    Params = SmaCrossoverParams
    params: SmaCrossoverParams

    def __init__(self, params: StrategyParams | Mapping[str, Any] | None = None, *,
                 instance_name: str | None = None) -> None:
        super().__init__(params, instance_name=instance_name)
        self._state: dict[str, _SymbolState] = {}
        self._nf = Decimal(self.params.fast)
        self._ns = Decimal(self.params.slow)

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent] | None:
        sym = bar.symbol
        if self.symbols is not None and sym not in self.symbols:
            return None
        st = self._state.get(sym)
        if st is None:
            st = self._state[sym] = _SymbolState(self.params.fast, self.params.slow)
        sma = st.sma
        sma.push(bar.close)
        if sma.count < sma.slow:  # not full yet
            return None
        # Compare the averages without dividing: fast_sum * n_slow vs slow_sum * n_fast.
        diff = sma.fast_total * self._ns - sma.slow_total * self._nf
        sign = (diff > 0) - (diff < 0)
        if sign == 0:
            return None
        prev, st.last_sign = st.last_sign, sign
        if prev == 0 or prev == sign:
            return None
        if st.pending is not None:
            status = ctx.intent_status(st.pending)
            if status == "open" or (status == "pending"
                                    and st.pending_bars < self.params.pending_timeout_bars):
                st.pending_bars += 1
                return None
            st.pending = None
        qty = ctx.position_qty(sym)
        intent: OrderIntent | None = None
        if sign > 0:  # crossed up
            if qty < 0:
                intent = ctx.close_position(sym, reason="cross up: cover")
            elif qty == 0:
                intent = self._open(ctx, "buy", bar.close)
        else:  # crossed down
            if qty > 0:
                intent = ctx.close_position(sym, reason="cross down: sell")
            elif qty == 0 and self.params.allow_short:
                intent = self._open(ctx, "sell", bar.close)
        if intent is None:
            return None
        st.pending, st.pending_bars = intent.intent_id, 0
        return [intent]

    def on_fill(self, fill: FillReceived, ctx: StrategyContext) -> list[OrderIntent] | None:
        """An entry that could not carry its stop (a fraction) gets one once it fills."""
        if not self.params.protect:
            return None
        intent = ctx.ensure_stop(fill.symbol, stop_pct=self.params.stop_pct)
        return [intent] if intent is not None else None

    def _stop(self, side: str, close: Decimal) -> Decimal | None:
        if not self.params.protect:
            return None
        f = self.params.stop_pct / 100
        if side == "buy":
            return (close * (1 - f)).quantize(CENT, rounding=ROUND_DOWN)
        return (close * (1 + f)).quantize(CENT, rounding=ROUND_UP)

    def _open(self, ctx: StrategyContext, side: str, close: Decimal) -> OrderIntent | None:
        reason = f"cross {'up' if side == 'buy' else 'down'} at {close}"
        stop = self._stop(side, close)
        if self.params.qty is not None:
            whole = self.params.qty == self.params.qty.to_integral_value()
            return ctx.order("buy" if side == "buy" else "sell", qty=self.params.qty,
                             stop_loss=stop if whole else None, reason=reason)
        dollars = ctx.equity * self.params.notional_fraction
        if dollars <= 0:
            return None
        if side == "buy":
            size = ctx.size_by_notional(dollars, close)
            if size is None:
                return None
            if stop is not None and size.qty is not None:
                return ctx.order("buy", size=size, stop_loss=stop, reason=reason)
            return ctx.order("buy", size=size, allow_notional=True, reason=reason)
        asset = ctx.asset()
        if asset is None or not asset.shortable:
            return None
        qty = (dollars / close).to_integral_value(rounding=ROUND_DOWN)
        return ctx.order("sell", qty=qty, stop_loss=stop, reason=reason) if qty >= 1 else None
