"""Plots and a self-contained HTML page for a `Report`.

matplotlib is optional (the `plots` extra) and imported only inside these functions, never at
module import, so the engine runs without it. We draw on `matplotlib.figure.Figure` with the
Agg canvas directly instead of pyplot: no global backend switch, no figure registry to leak,
safe in worker processes and threads.

Prices and equity become floats here: plotting is the one place precision does not matter.
Long series are thinned to at most `max_points` per line (every k-th point, plus the last, and
the deepest drawdown point is always kept) so a million-bar backtest still draws quickly.
Time axes are trading time: one step per bar close, so nights, weekends and holidays take no
width; sessions are marked and a few dates labelled. Per-symbol plots draw at most
`MAX_MARKERS` trades' entries and exits (evenly sampled) over price, and every closed
trade's net P&L as a scatter below, which stays readable at hundreds of trades.

The HTML page is self-contained: images are embedded as data: URIs, styles inline, no
scripts, fonts or anything else fetched — it opens with no network.
"""

from __future__ import annotations

import base64
import html
import io
import re
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from events.base import UTC
from events.store import ts_to_us
from events.vocabulary import CENT
from replay.backtest.periods import session_of
from replay.backtest.report import Report, daily_rows, monthly_grid, render_table, summary_rows

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_POINTS = 5000
MAX_SYMBOLS = 12
MAX_MARKERS = 150
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PlotsUnavailableError(RuntimeError):
    """matplotlib is not installed."""


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotsUnavailableError(
            "plots need matplotlib: pip install 'miniquantdesk[plots]'") from None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)  # attaches itself to the figure: savefig renders through Agg
    return fig


def _thin(n: int, max_points: int, keep: Sequence[int] = ()) -> list[int]:
    if n <= max_points:
        return list(range(n))
    step = -(-n // max_points)
    idx = set(range(0, n, step)) | {n - 1} | {k for k in keep if 0 <= k < n}
    return sorted(idx)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _money(d: Decimal) -> str:
    return f"{d.quantize(CENT):,}"


def _safe(symbol: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", symbol) or "symbol"


def _session_ticks(points: Sequence[tuple[int, datetime]], max_labels: int = 12
                   ) -> tuple[list[int], list[int], list[str]]:
    """From (position, time) pairs in order (all points, or the thinned ones drawn): the
    positions where a new trading day starts (for separators; to the drawn resolution), and
    a subset of them labelled with the date, at most `max_labels`."""
    starts: list[int] = []
    days: list[str] = []
    for i, t in points:
        day = session_of(t)
        if not days or day != days[-1]:
            starts.append(i)
            days.append(day)
    step = max(1, -(-len(starts) // max_labels))
    return starts, starts[::step], days[::step]


def _trading_axis(ax: Any, n: int, points: Sequence[tuple[int, datetime]], *,
                  separators: bool = True) -> None:
    """Trading time on x: `n` points evenly spaced (nights, weekends and holidays take no
    room), a faint line where each session starts, dates at a few of them."""
    starts, shown, labels = _session_ticks(points)
    if separators and len(starts) <= 400:
        for i in starts[1:]:
            ax.axvline(i - 0.5, color="grey", linewidth=0.3, alpha=0.5)
    ax.set_xticks(shown)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize="small")
    ax.set_xlim(-0.5, max(n - 0.5, 0.5))


def equity_png(report: Report, *, max_points: int = MAX_POINTS) -> bytes:
    """Equity curve with the buy-and-hold benchmark (top) and drawdown in percent (bottom),
    on a trading-time axis."""
    fig = _figure(10, 6)
    ax, ax_dd = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    curve = report.equity_curve
    dd = report.drawdown_series()
    deepest = min(range(len(dd)), key=dd.__getitem__) if dd else 0
    idx = _thin(len(curve), max_points, keep=(deepest,))
    ax.plot(idx, [float(curve[i].equity) for i in idx], color="tab:blue", linewidth=1.0,
            label="strategy")
    bench = report.benchmark
    if bench is not None:
        ax.plot(idx, [bench.curve[i] for i in idx], color="tab:orange", linewidth=0.9,
                alpha=0.8, label=f"buy and hold ({', '.join(bench.symbols[:4])}"
                                 + (", ..." if len(bench.symbols) > 4 else "") + ")")
        ax.legend(loc="best", fontsize="small")
    ax.axhline(float(report.starting_equity), color="grey", linewidth=0.6, linestyle="--")
    ax.set_ylabel("equity")
    title = (f"equity - total return {report.total_return * 100:.2f}%, max drawdown "
             f"{report.max_drawdown * 100:.2f}%")
    if bench is not None:
        title += f", benchmark {bench.total_return * 100:.2f}%"
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax_dd.fill_between(idx, [dd[i] * 100 for i in idx], 0, color="tab:red", alpha=0.4,
                       linewidth=0)
    ax_dd.set_ylabel("drawdown %")
    ax_dd.grid(True, axis="y", alpha=0.3)
    drawn = [(i, curve[i].ts) for i in idx]
    _trading_axis(ax, len(curve), drawn)  # the session separators on both panels
    _trading_axis(ax_dd, len(curve), drawn)
    ax_dd.set_xlabel("trading time (sessions joined)")
    return _png(fig)


def _sample(items: Sequence[Any], k: int) -> list[Any]:
    if len(items) <= k:
        return list(items)
    step = len(items) / k
    return [items[int(i * step)] for i in range(k)]


def trades_png(report: Report, symbol: str, *, max_points: int = MAX_POINTS,
               max_markers: int = MAX_MARKERS) -> bytes:
    """Top: the symbol's closes on a trading-time axis with entries and exits (at most
    `max_markers` trades drawn, evenly sampled, so hundreds of trades stay readable).
    Bottom: every closed trade's net P&L in order, won green, lost red."""
    fig = _figure(10, 6.5)
    ax, ax_pnl = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 2]})
    series = report.prices.get(symbol)
    times_us = series.times_us if series is not None else array("q")
    if series is not None and len(times_us):
        idx = _thin(len(times_us), max_points)
        ax.plot(idx, [series.closes[i] for i in idx], color="tab:grey", linewidth=0.9,
                label="close")
        _trading_axis(ax, len(times_us),
                      [(i, _EPOCH + timedelta(microseconds=times_us[i])) for i in idx],
                      separators=False)

    def at(ts: datetime) -> int:
        # A fill at a bar's start is drawn on that bar (whose end is the first one after it).
        return min(bisect_right(times_us, ts_to_us(ts)), max(len(times_us) - 1, 0))

    trades = [t for t in report.trades if t.symbol == symbol]
    shown = _sample(trades, max_markers)
    for side, marker, color in (("long", "^", "tab:green"), ("short", "v", "tab:red")):
        pts = [t for t in shown if t.side == side]
        if pts:
            ax.scatter([at(t.entry_time) for t in pts], [float(t.entry_price) for t in pts],
                       marker=marker, color=color, s=22, zorder=3,
                       label=f"{side} entry ({sum(1 for t in trades if t.side == side)})")
    exits = [t for t in shown if t.exit_time is not None and t.exit_price is not None]
    if exits:
        ax.scatter([at(t.exit_time) for t in exits if t.exit_time is not None],
                   [float(t.exit_price) for t in exits if t.exit_price is not None],
                   marker="x", color="black", s=18, zorder=3, linewidths=0.8, label="exit")
    note = f" (markers for {len(shown)} of {len(trades)} trades)" if len(shown) < len(trades) \
        else ""
    ax.set_title(f"{symbol}: entries and exits on price{note}")
    ax.set_ylabel("price")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize="small")

    closed = [t for t in trades if not t.open]
    pnl = [float(t.net_pnl) for t in closed]
    colors = ["tab:green" if t.net_pnl.quantize(CENT) > 0 else
              "tab:red" if t.net_pnl.quantize(CENT) < 0 else "tab:grey" for t in closed]
    if closed:
        ax_pnl.scatter(range(1, len(closed) + 1), pnl, c=colors, s=10 if len(closed) > 200
                       else 18)
    ax_pnl.axhline(0, color="grey", linewidth=0.6)
    won = sum(1 for t in closed if t.net_pnl.quantize(CENT) > 0)
    lost = sum(1 for t in closed if t.net_pnl.quantize(CENT) < 0)
    ax_pnl.set_title(f"net P&L per closed trade: {won} won, {lost} lost, "
                     f"{len(closed) - won - lost} break-even", fontsize="medium")
    ax_pnl.set_xlabel("trade number (by entry)")
    ax_pnl.set_ylabel("net P&L")
    ax_pnl.grid(True, alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def plot_symbols(report: Report, max_symbols: int = MAX_SYMBOLS) -> list[str]:
    """The symbols that get a trades plot: those with fills, most fills first."""
    counts: dict[str, int] = {}
    for f in report.fills:
        counts[f.symbol] = counts.get(f.symbol, 0) + 1
    return sorted(counts, key=lambda s: (-counts[s], s))[:max_symbols]


def render_plots(report: Report, *, max_symbols: int = MAX_SYMBOLS,
                 max_points: int = MAX_POINTS) -> dict[str, bytes]:
    """File name -> PNG bytes: `equity.png` and `trades_<SYMBOL>.png` per traded symbol."""
    out = {"equity.png": equity_png(report, max_points=max_points)}
    for sym in plot_symbols(report, max_symbols):
        out[f"trades_{_safe(sym)}.png"] = trades_png(report, sym, max_points=max_points)
    return out


def write_plots(report: Report, out_dir: str | Path, *, max_symbols: int = MAX_SYMBOLS
                ) -> list[Path]:
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in render_plots(report, max_symbols=max_symbols).items():
        p = d / name
        p.write_bytes(data)
        paths.append(p)
    return paths


def write_html(report: Report, out_dir: str | Path, *, name: str = "report.html",
               max_symbols: int = MAX_SYMBOLS, max_trades: int = 500) -> Path:
    """One HTML file with the summary, the plots embedded as data: URIs, and the trades."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    images = render_plots(report, max_symbols=max_symbols)
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary_rows(report))
    imgs = "".join(
        f'<figure><img alt="{esc(n)}" src="data:image/png;base64,'
        f'{base64.b64encode(b).decode()}"><figcaption>{esc(n)}</figcaption></figure>'
        for n, b in images.items())
    trades = "".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in (
            t.symbol, t.side, t.entry_time.isoformat(),
            t.exit_time.isoformat() if t.exit_time else "open", str(t.qty),
            f"{t.entry_price:.4f}", f"{t.exit_price:.4f}" if t.exit_price is not None else "-",
            _money(t.net_pnl), _money(t.fees))) + "</tr>"
        for t in report.trades[:max_trades])
    more = (f"<p>{len(report.trades) - max_trades} more trades in the JSON report.</p>"
            if len(report.trades) > max_trades else "")
    fm = [(k, v) for k, v in summary_rows(report) if k == "fill model"]
    header = "".join(f"<p><b>{esc(k)}:</b> {esc(v)}</p>" for k, v in fm)
    months = ""
    if report.monthly_returns:
        head, body = monthly_grid(report)
        months = ("<h2>Monthly returns</h2><table><tr>"
                  + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
                  + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                            for row in body) + "</table>")
    days = ""
    if report.daily_returns:
        days = ("<h2>Daily returns</h2><table><tr><th>day</th><th>equity</th><th>return</th>"
                "<th>benchmark</th></tr>"
                + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                          for row in daily_rows(report)) + "</table>")
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Backtest report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left;
         font-variant-numeric: tabular-nums; }}
img {{ max-width: 100%; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; }}
</style></head><body>
<h1>Backtest report</h1>
<p>{esc(report.log_path)} (seq {report.first_seq}-{report.last_seq})</p>
{header}
<table>{rows}</table>
{imgs}
{months}
{days}
<h2>Trades ({len(report.trades)})</h2>
<table><tr><th>symbol</th><th>side</th><th>entry</th><th>exit</th><th>qty</th>
<th>entry px</th><th>exit px</th><th>net P&amp;L</th><th>fees</th></tr>{trades}</table>
{more}
<h2>As text</h2><pre>{esc(render_table(report, max_trades=0, max_days=0))}</pre>
</body></html>
"""
    p = d / name
    p.write_text(doc, encoding="utf-8")
    return p
