"""Server-rendered SVG charts (no chart library, no network): the equity curve with its
drawdown shaded. Built only from numbers and dates, so it is safe to inline in the page."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from html import escape

from engine.dashboard.fold import CurvePoint


def equity_svg(points: Sequence[CurvePoint], *, width: int = 1200, height: int = 200,
               title: str = "equity") -> str:
    pad_l, pad_r, pad_t, pad_b = 64, 10, 18, 22
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} '
            f'{height}" role="img" aria-label="{escape(title)}">')
    if len(points) < 2:
        return (head + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
                'class="muted">not enough bars yet</text></svg>')
    values = [p.equity for p in points]
    lo, hi = min(values), max(values)
    if hi == lo:
        hi, lo = hi + 1, lo - 1
    span = hi - lo
    n = len(points) - 1

    def x(i: int) -> float:
        return round(pad_l + w * i / n, 1)

    def y(v: Decimal) -> float:
        return round(pad_t + float((hi - v) / span) * h, 1)

    line = " ".join(f"{x(i)},{y(v)}" for i, v in enumerate(values))
    peak = values[0]
    upper, lower = [], []
    for i, v in enumerate(values):
        peak = max(peak, v)
        upper.append(f"{x(i)},{y(peak)}")
        lower.append(f"{x(i)},{y(v)}")
    dd = " ".join(upper + lower[::-1])
    first, last = points[0].ts, points[-1].ts
    return (head
            + f'<polygon class="dd" points="{dd}"/>'
            + f'<polyline class="eq" fill="none" points="{line}"/>'
            + f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end">{hi:.2f}</text>'
            + f'<text x="{pad_l - 4}" y="{pad_t + h}" text-anchor="end">{lo:.2f}</text>'
            + f'<text x="{pad_l}" y="{height - 6}">{escape(first.strftime("%m-%d %H:%M"))}</text>'
            + f'<text x="{width - pad_r}" y="{height - 6}" text-anchor="end">'
            + f'{escape(last.strftime("%m-%d %H:%M"))} UTC</text>'
            + "</svg>")
