"""The report's benchmark: buy and hold of the traded symbols over the same bars.

Equal weights: at the start of the curve the starting equity is split equally between the
symbols, each slice buying its symbol at the open of that symbol's first bar (fractional
shares, no fees or slippage) and holding to the end; a slice whose symbol has not traded yet
waits in cash. It is valued at every point of the strategy's equity curve (bar closes), so
the two can be compared point by point.

Figures: total return (exact, from the Decimal prices: mean(last close / first open) - 1),
excess return (strategy total return - benchmark total return), and beta and correlation of
the strategy's per-point returns against the benchmark's. Beta comes from empyrical
(`empyrical-reloaded`, the maintained fork of Quantopian's library; the `report` extra),
correlation from numpy; without them those two are None and the report says why.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from events.store import ts_to_us


class Series(Protocol):
    @property
    def times_us(self) -> Sequence[int]: ...

    @property
    def closes(self) -> Sequence[float]: ...


class _Point(Protocol):
    @property
    def ts(self) -> datetime: ...

    @property
    def equity(self) -> Decimal: ...


METRICS_MISSING = ("beta and correlation need empyrical-reloaded and numpy: "
                   "pip install 'miniquantdesk[report]'")


@dataclass
class Benchmark:
    symbols: list[str]
    entry_prices: dict[str, Decimal]
    final_prices: dict[str, Decimal]
    total_return: float
    excess_return: float
    beta: float | None
    correlation: float | None
    curve: list[float] = field(repr=False)  # the benchmark's value at each equity point
    note: str = ""


def build_benchmark(curve: Sequence[_Point], symbols: Sequence[str],
                    prices: Mapping[str, Series], first_open: Mapping[str, Decimal],
                    last_close: Mapping[str, Decimal], strategy_return: float
                    ) -> Benchmark | None:
    syms = [s for s in symbols if s in first_open and s in last_close and first_open[s] > 0]
    if not curve or not syms:
        return None
    start = float(curve[0].equity)
    ratios = [_relative(curve, prices[s], float(first_open[s])) for s in syms]
    values = [start * math.fsum(r[i] for r in ratios) / len(syms) for i in range(len(curve))]
    exact = sum((last_close[s] / first_open[s] for s in syms), Decimal(0)) / len(syms) - 1
    total = float(exact)
    beta, corr, note = _beta_corr(_returns([float(p.equity) for p in curve]), _returns(values))
    return Benchmark(symbols=list(syms), entry_prices={s: first_open[s] for s in syms},
                     final_prices={s: last_close[s] for s in syms}, total_return=total,
                     excess_return=strategy_return - total, beta=beta, correlation=corr,
                     curve=values, note=note)


def _relative(curve: Sequence[_Point], series: Series, entry: float) -> list[float]:
    """The symbol's last close at or before each point over its entry price (1.0 before its
    first bar closes: the slice is cash, or bought at the open and not yet marked)."""
    out: list[float] = []
    times, closes = series.times_us, series.closes
    j, n = 0, len(times)
    current = 1.0
    for p in curve:
        t = ts_to_us(p.ts)
        while j < n and times[j] <= t:
            current = closes[j] / entry
            j += 1
        out.append(current)
    return out


def _returns(values: Sequence[float]) -> list[float]:
    return [b / a - 1.0 if a > 0 else 0.0 for a, b in itertools.pairwise(values)]


def _beta_corr(strategy: Sequence[float], bench: Sequence[float]
               ) -> tuple[float | None, float | None, str]:
    if len(strategy) < 2:
        return None, None, "too few points for beta and correlation"
    try:
        import empyrical
        import numpy as np
    except ImportError:
        return None, None, METRICS_MISSING
    s = np.asarray(strategy, dtype=float)
    b = np.asarray(bench, dtype=float)
    if float(np.std(b)) == 0.0:
        return None, None, "the benchmark never moved: beta and correlation are undefined"
    beta = float(empyrical.beta(s, b))
    corr = float(np.corrcoef(s, b)[0, 1]) if float(np.std(s)) > 0 else None
    return (beta if math.isfinite(beta) else None,
            corr if corr is not None and math.isfinite(corr) else None, "")
