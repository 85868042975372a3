"""Plots and a self-contained HTML page for a `Report`.

matplotlib is optional (the `plots` extra) and imported only inside these functions, never at
module import, so the engine runs without it. We draw on `matplotlib.figure.Figure` with the
Agg canvas directly instead of pyplot: no global backend switch, no figure registry to leak,
safe in worker processes and threads.

Prices and equity become floats here: plotting is the one place precision does not matter.
Long series are thinned to at most `max_points` per line (every k-th point, plus the last, and
the deepest drawdown point is always kept) so a million-bar backtest still draws quickly.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from events.base import UTC
from replay.report import Report, render_table, summary_rows

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_POINTS = 5000
MAX_SYMBOLS = 12
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


def _dates(ts: Sequence[datetime]) -> list[float]:
    """Matplotlib's date numbers (days since its epoch), so the axes stay typed as floats."""
    from matplotlib.dates import date2num

    return [float(x) for x in date2num(list(ts))]  # type: ignore[no-untyped-call]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _safe(symbol: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", symbol) or "symbol"


def equity_png(report: Report, *, max_points: int = MAX_POINTS) -> bytes:
    """Equity curve (top) and drawdown in percent (bottom), sharing the time axis."""
    fig = _figure(10, 6)
    ax, ax_dd = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    curve = report.equity_curve
    dd = report.drawdown_series()
    deepest = min(range(len(dd)), key=dd.__getitem__) if dd else 0
    idx = _thin(len(curve), max_points, keep=(deepest,))
    xs = _dates([curve[i].ts for i in idx])
    ax.plot(xs, [float(curve[i].equity) for i in idx], color="tab:blue", linewidth=1.0)
    ax.axhline(float(report.starting_equity), color="grey", linewidth=0.6, linestyle="--")
    ax.set_ylabel("equity")
    ax.set_title(f"equity - total return {report.total_return * 100:.2f}%, max drawdown "
                 f"{report.max_drawdown * 100:.2f}%")
    ax.grid(True, alpha=0.3)
    ax_dd.fill_between(xs, [dd[i] * 100 for i in idx], 0, color="tab:red", alpha=0.4,
                       linewidth=0)
    ax_dd.set_ylabel("drawdown %")
    ax_dd.xaxis_date(tz=UTC)
    ax_dd.grid(True, alpha=0.3)
    fig.autofmt_xdate()
    return _png(fig)


def trades_png(report: Report, symbol: str, *, max_points: int = MAX_POINTS) -> bytes:
    """The symbol's closes with its fills: buys as green up-triangles, sells red down."""
    fig = _figure(10, 4.5)
    ax = fig.subplots()
    series = report.prices.get(symbol)
    if series is not None and len(series.times_us):
        idx = _thin(len(series.times_us), max_points)
        ax.plot(_dates([_EPOCH + timedelta(microseconds=series.times_us[i]) for i in idx]),
                [series.closes[i] for i in idx], color="tab:grey", linewidth=0.9, label="close")
    for side, marker, color in (("buy", "^", "tab:green"), ("sell", "v", "tab:red")):
        pts = [f for f in report.fills if f.symbol == symbol and f.side == side]
        if pts:
            ax.scatter(_dates([f.ts for f in pts]), [float(f.price) for f in pts], marker=marker,
                       color=color, s=36, zorder=3, label=f"{side} ({len(pts)})")
    ax.xaxis_date(tz=UTC)
    ax.set_title(f"{symbol}: trades on price")
    ax.set_ylabel("price")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.autofmt_xdate()
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
            str(t.entry_price), str(t.exit_price) if t.exit_price is not None else "-",
            str(t.net_pnl), str(t.fees))) + "</tr>"
        for t in report.trades[:max_trades])
    more = (f"<p>{len(report.trades) - max_trades} more trades in the JSON report.</p>"
            if len(report.trades) > max_trades else "")
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
<table>{rows}</table>
{imgs}
<h2>Trades ({len(report.trades)})</h2>
<table><tr><th>symbol</th><th>side</th><th>entry</th><th>exit</th><th>qty</th>
<th>entry px</th><th>exit px</th><th>net P&amp;L</th><th>fees</th></tr>{trades}</table>
{more}
<h2>As text</h2><pre>{esc(render_table(report, max_trades=0))}</pre>
</body></html>
"""
    p = d / name
    p.write_text(doc, encoding="utf-8")
    return p
