"""VWAP mean reversion, the reference strategy.

Per symbol and New York regular session:

- session VWAP from running sums (each bar's own VWAP when the feed gives one, else its
  typical price), reset at each session's first bar;
- the deviation d = close - VWAP, and its z-score over the last `window` bars of the session
  (the current bar included): z = (d - mean(d)) / sd(d);
- flat and z <= -entry_z: buy `notional_fraction` of equity (a notional order on a fractionable
  symbol, else whole shares; `allow_notional=True`), with `stop_price` = close x (1 - stop_pct%);
  with `allow_short`, z >= entry_z sells short whole shares (stop above);
- long: exit when z >= -exit_z (reverted), when a bar's low touches avg cost x (1 - stop_pct%)
  (stop), or at the first bar closing at or after `flat_time` (flat by the close). Shorts
  mirror this;
- one position per symbol at most, and nothing new while its last intent is undecided or its
  order is open (an intent the gate never answered is given up after `pending_timeout_bars`);
- no entries after `last_entry`; bars outside the session are ignored;
- `protect` (default on): every entry's stop lives at the broker. A whole-share entry
  carries it as a stop-loss leg (OTO); a fractional one (no legs for fractions at Alpaca)
  gets a day stop at avg cost x (1 - stop_pct%) as soon as its fill is booked. Exits cancel
  that protection first (see `engine.execution.router`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, time
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Any

from pydantic import Field, model_validator

from events.catalogue import FillReceived, OrderIntent
from events.market import Bar
from events.vocabulary import CENT, ONE

from .base import Strategy, StrategyParams
from .context import StrategyContext
from .indicators import RollingZ, SessionVwap, ZThreshold
from .session import SessionClock, SessionDay

THREE = Decimal(3)
HUNDRED = Decimal(100)


class VwapMeanReversionParams(StrategyParams):
    entry_z: Decimal = Field(Decimal("2.0"), gt=0, description="enter at |z| >= entry_z")
    exit_z: Decimal = Field(Decimal("0.0"), description="exit a long at z >= -exit_z")
    window: int = Field(30, ge=5, le=2000, description="bars in the z-score window")
    stop_pct: Decimal = Field(Decimal("1.0"), gt=0, lt=100, description="stop distance, %")
    notional_fraction: Decimal = Field(Decimal("0.1"), gt=0, le=1,
                                       description="share of equity per entry")
    allow_short: bool = False
    session_open: time = time(9, 30)
    session_close: time = time(16, 0)
    last_entry: time = time(15, 45)
    flat_time: time = time(15, 55)
    pending_timeout_bars: int = Field(5, ge=1)
    protect: bool = Field(True, description="keep each entry's stop at the broker")

    @model_validator(mode="after")
    def _consistent(self) -> VwapMeanReversionParams:
        if self.exit_z >= self.entry_z:
            raise ValueError(f"exit_z ({self.exit_z}) must be below entry_z ({self.entry_z})")
        if not (self.session_open < self.last_entry <= self.flat_time <= self.session_close):
            raise ValueError("need session_open < last_entry <= flat_time <= session_close")
        return self


class _SymbolState:
    __slots__ = ("day", "pending", "pending_bars", "vwap", "z")

    def __init__(self, window: int) -> None:
        self.day: date | None = None
        self.vwap = SessionVwap()
        self.z = RollingZ(window)
        self.pending: str | None = None
        self.pending_bars = 0


class VwapMeanReversion(Strategy):
    name = "vwap_mean_reversion"
    Params = VwapMeanReversionParams
    params: VwapMeanReversionParams

    def __init__(self, params: StrategyParams | Mapping[str, Any] | None = None, *,
                 instance_name: str | None = None) -> None:
        super().__init__(params, instance_name=instance_name)
        p = self.params
        self._session = SessionClock(open_=p.session_open, close=p.session_close,
                                     last_entry=p.last_entry, flat=p.flat_time)
        self._state: dict[str, _SymbolState] = {}
        self._day: SessionDay | None = None
        w = p.window
        self._allow_short = p.allow_short
        self._long_entry = ZThreshold(-p.entry_z, w)  # z <= -entry_z
        self._short_entry = ZThreshold(p.entry_z, w)  # z >= entry_z
        self._long_exit = ZThreshold(-p.exit_z, w)  # z >= -exit_z
        self._short_exit = ZThreshold(p.exit_z, w)  # z <= exit_z
        self._long_stop = ONE - p.stop_pct / HUNDRED
        self._short_stop = ONE + p.stop_pct / HUNDRED

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent] | None:
        sym = bar.symbol
        if self.symbols is not None and sym not in self.symbols:
            return None
        st = self._state.get(sym)
        if st is None:
            st = self._state[sym] = _SymbolState(self.params.window)
        start = bar.start
        sess = self._day
        if sess is None or not sess.lo <= start < sess.hi:
            sess = self._day = self._session.day_of(start)
        if st.day != sess.day:
            st.day = sess.day
            st.vwap.reset()
            st.z.reset()
        if start < sess.open or start >= sess.close:
            return None
        close = bar.close
        price = bar.vwap
        if price is None:
            price = (bar.high + bar.low + close) / THREE
        vwap = st.vwap.update(price, bar.volume)
        if vwap is None:
            return None
        dev = close - vwap
        z = st.z
        z.push(dev)

        if st.pending is not None:
            status = ctx.intent_status(st.pending)
            if status == "open":
                return None
            if status == "pending":
                st.pending_bars += 1
                if st.pending_bars <= self.params.pending_timeout_bars:
                    return None
            st.pending = None

        end = ctx.signal_time
        assert end is not None
        qty = ctx.position_qty(sym)
        if qty:
            return self._exit(bar, ctx, st, qty, dev, end >= sess.flat)
        if end > sess.last_entry:
            return None
        if z.z_at_most(dev, self._long_entry):
            return self._enter(ctx, st, "buy", close, vwap, dev)
        if self._allow_short and z.z_at_least(dev, self._short_entry):
            return self._enter(ctx, st, "sell", close, vwap, dev)
        return None

    def _exit(self, bar: Bar, ctx: StrategyContext, st: _SymbolState, qty: Decimal,
              dev: Decimal, closing: bool) -> list[OrderIntent] | None:
        if closing:
            reason = "flat by the close"
        else:
            avg = ctx.position(bar.symbol).avg_cost
            if qty > 0:
                if bar.low <= avg * self._long_stop:
                    reason = f"stop: low {bar.low} <= {(avg * self._long_stop).quantize(CENT)}"
                elif st.z.z_at_least(dev, self._long_exit):
                    reason = f"reverted: z={st.z.zscore(dev) or 0:.2f}"
                else:
                    return None
            else:
                if bar.high >= avg * self._short_stop:
                    reason = f"stop: high {bar.high} >= {(avg * self._short_stop).quantize(CENT)}"
                elif st.z.z_at_most(dev, self._short_exit):
                    reason = f"reverted: z={st.z.zscore(dev) or 0:.2f}"
                else:
                    return None
        intent = ctx.close_position(bar.symbol, reason=reason)
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

    def _enter(self, ctx: StrategyContext, st: _SymbolState, side: str, close: Decimal,
               vwap: Decimal, dev: Decimal) -> list[OrderIntent] | None:
        dollars = ctx.equity * self.params.notional_fraction
        if dollars <= 0:
            return None
        reason = f"z={st.z.zscore(dev) or 0:.2f} close={close} vwap={vwap.quantize(CENT)}"
        if side == "buy":
            size = ctx.size_by_notional(dollars, close)
            if size is None:
                return None
            stop = (close * self._long_stop).quantize(CENT, rounding=ROUND_DOWN)
            if self.params.protect and size.qty is not None:
                intent = ctx.order("buy", size=size, stop_loss=stop, reason=reason)
            else:
                intent = ctx.order("buy", size=size, stop_price=stop, allow_notional=True,
                                   reason=reason)
        else:
            asset = ctx.asset()
            if asset is None or not asset.shortable:
                return None
            # Short sales must be whole shares (no fractional or notional shorts at Alpaca).
            qty = (dollars / close).to_integral_value(rounding=ROUND_DOWN)
            if qty < 1:
                return None
            stop = (close * self._short_stop).quantize(CENT, rounding=ROUND_UP)
            if self.params.protect:
                intent = ctx.order("sell", qty=qty, stop_loss=stop, reason=reason)
            else:
                intent = ctx.order("sell", qty=qty, stop_price=stop, reason=reason)
        st.pending, st.pending_bars = intent.intent_id, 0
        return [intent]
