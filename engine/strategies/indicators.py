"""Incremental indicators: O(1) work per bar, never a pass over history.

All in `Decimal`. On this machine a Decimal add or multiply costs ~100 ns, about the same as
converting one Decimal to float (~360 ns), so float buys no speed here; Decimal keeps the
results exactly reproducible. The z-score comparisons are done on squares, so the hot path
never takes a square root.

Determinism: results depend only on the inputs and on the decimal context's precision and
rounding (Python's default: 28 digits, ROUND_HALF_EVEN). The engine never changes the
default context; running sums therefore round identically on every run.
"""

from __future__ import annotations

import math
from decimal import Decimal

from events.vocabulary import ZERO


class SessionVwap:
    """Volume-weighted average price since `reset()`: running sums of price x volume and
    volume. Feed it each bar's own VWAP when the feed has one (that makes the session VWAP
    exact), otherwise its typical price (h + l + c) / 3."""

    __slots__ = ("_pv", "_v", "value")

    def __init__(self) -> None:
        self._pv = ZERO
        self._v = ZERO
        self.value: Decimal | None = None

    def reset(self) -> None:
        self._pv = ZERO
        self._v = ZERO
        self.value = None

    def update(self, price: Decimal, volume: Decimal) -> Decimal | None:
        if volume:  # volume is never negative (the Bar contract refuses it)
            self._pv += price * volume
            self._v += volume
            self.value = self._pv / self._v
        return self.value


class ZThreshold:
    """A z-score threshold prepared for one window size: t, and t^2 * n / (n - 1)."""

    __slots__ = ("c", "t", "window")

    def __init__(self, t: Decimal, window: int) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        n = Decimal(window)
        self.t = t
        self.window = window
        self.c = t * t * n / (n - 1)


class RollingZ:
    """Mean and sample standard deviation of the last `window` values (running sums of the
    values and of their squares), and z-score threshold tests without a square root.

    With a = n*x - S and D = n*Q - S^2 (S, Q: the window's sum and sum of squares), the
    z-score is z = a / sqrt(D * n / (n - 1)); so "z <= t" and "z >= t" are a sign check on a
    and a comparison of a^2 with c * D, c = t^2 * n / (n - 1) (see `ZThreshold`). The sign
    check usually settles it, so most bars cost a multiply and a subtract.

    The tests return False while z is undefined (window not full, or all values equal).
    """

    __slots__ = ("_buf", "_i", "_n", "_s", "_scale", "_sq", "_ss", "count", "window")

    def __init__(self, window: int) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.window = window
        self._n = Decimal(window)
        self._scale = self._n / (self._n - 1)
        self.reset()

    def reset(self) -> None:
        self._buf: list[Decimal] = [ZERO] * self.window
        self._sq: list[Decimal] = [ZERO] * self.window  # squares, so removal needs no multiply
        self._i = 0
        self.count = 0
        self._s = ZERO
        self._ss = ZERO

    @property
    def full(self) -> bool:
        return self.count == self.window

    def threshold(self, t: Decimal) -> ZThreshold:
        return ZThreshold(t, self.window)

    def push(self, x: Decimal) -> None:
        i = self._i
        sq = x * x
        if self.count == self.window:
            self._s += x - self._buf[i]
            self._ss += sq - self._sq[i]
        else:
            self._s += x
            self._ss += sq
            self.count += 1
        self._buf[i] = x
        self._sq[i] = sq
        self._i = i + 1 if i + 1 < self.window else 0

    def _th(self, t: Decimal | ZThreshold) -> ZThreshold:
        return ZThreshold(t.t if isinstance(t, ZThreshold) else t, self.window)

    def z_at_most(self, x: Decimal, t: Decimal | ZThreshold) -> bool:
        """z(x) <= t (False while z is undefined)."""
        if self.count < self.window:
            return False
        th = t if type(t) is ZThreshold and t.window == self.window else self._th(t)
        s = self._s
        a = self._n * x - s
        if th.t < 0:
            if a >= 0:
                return False  # z >= 0 > t, or undefined
            d = self._n * self._ss - s * s
            return d > 0 and a * a >= th.c * d
        d = self._n * self._ss - s * s
        return d > 0 and (a <= 0 or a * a <= th.c * d)

    def z_at_least(self, x: Decimal, t: Decimal | ZThreshold) -> bool:
        """z(x) >= t (False while z is undefined)."""
        if self.count < self.window:
            return False
        th = t if type(t) is ZThreshold and t.window == self.window else self._th(t)
        s = self._s
        a = self._n * x - s
        if th.t > 0:
            if a <= 0:
                return False
            d = self._n * self._ss - s * s
            return d > 0 and a * a >= th.c * d
        d = self._n * self._ss - s * s
        return d > 0 and (a >= 0 or a * a <= th.c * d)

    def zscore(self, x: Decimal) -> float | None:
        """z(x) as a float, for reports and reasons only (decisions use the exact tests)."""
        if self.count < self.window:
            return None
        d = self._n * self._ss - self._s * self._s
        if d <= 0:
            return None
        a = self._n * x - self._s
        return float(a) / math.sqrt(float(d) * float(self._scale))

    def mean(self) -> Decimal | None:
        return self._s / self.count if self.count else None


class Sma:
    """Simple moving average over a ring buffer with a running sum (exact in Decimal as long
    as the sum fits 28 significant digits, which prices x windows of a few hundred do)."""

    __slots__ = ("_buf", "_i", "count", "total", "window")

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._buf: list[Decimal] = [ZERO] * window
        self._i = 0
        self.count = 0
        self.total = ZERO

    @property
    def full(self) -> bool:
        return self.count == self.window

    def push(self, x: Decimal) -> None:
        i = self._i
        if self.count == self.window:
            self.total += x - self._buf[i]
        else:
            self.total += x
            self.count += 1
        self._buf[i] = x
        self._i = i + 1 if i + 1 < self.window else 0

    @property
    def value(self) -> Decimal | None:
        return self.total / self.count if self.full else None


class SmaPair:
    """Two simple moving averages of one series (windows `fast` < `slow`) over one ring
    buffer: a crossover pushes each close once, not once per average. The running sums are
    updated by the very operations two `Sma`s would do (`total += x - leaving`, in the same
    order), so they are the same Decimals; `fast_total`/`slow_total` are their `total`s."""

    __slots__ = ("_buf", "_i", "count", "fast", "fast_total", "slow", "slow_total")

    def __init__(self, fast: int, slow: int) -> None:
        if not 1 <= fast < slow:
            raise ValueError(f"need 1 <= fast < slow, got fast={fast}, slow={slow}")
        self.fast = fast
        self.slow = slow
        self._buf: list[Decimal] = [ZERO] * slow
        self._i = 0
        self.count = 0  # values pushed, up to `slow`
        self.fast_total = ZERO
        self.slow_total = ZERO

    @property
    def full(self) -> bool:
        """Both windows full (the slow one is the longer)."""
        return self.count == self.slow

    def push(self, x: Decimal) -> None:
        buf, i, n = self._buf, self._i, self.count
        if n >= self.fast:
            # The value leaving the fast window was pushed `fast` steps ago: `i - fast`, which
            # Python's negative indexing wraps around the ring.
            self.fast_total += x - buf[i - self.fast]
        else:
            self.fast_total += x
        if n == self.slow:
            self.slow_total += x - buf[i]
        else:
            self.slow_total += x
            self.count = n + 1
        buf[i] = x
        self._i = i + 1 if i + 1 < self.slow else 0
