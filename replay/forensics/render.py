"""Plain-text rendering of the forensics results (`replay.forensics`), for people.

Pure functions from data to strings: the CLI prints them, and other commands (`engine status`)
can reuse them. Times are shown in UTC with a trailing Z; amounts exactly as logged.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from replay.backtest.display import table
from replay.forensics.explain import Explanation
from replay.forensics.queries import StateView, TimelineEntry
from replay.forensics.verify import BrokerDiff, VerifyReport


def fmt_ts(ts: datetime | None, *, ms: bool = True) -> str:
    if ts is None:
        return "-"
    return ts.strftime("%Y-%m-%d %H:%M:%S") + (f".{ts.microsecond // 1000:03d}" if ms else "") + "Z"


_DISPLAY_PLACES = Decimal("0.000001")


def fmt_dec(d: Decimal | None) -> str:
    """An amount for people: as logged, except that results of inexact division (average
    costs, and P&L computed from them, carry 28 significant digits) are rounded to 6 places.
    JSON output keeps the exact value."""
    if d is None:
        return "-"
    exp = d.as_tuple().exponent
    if isinstance(exp, int) and exp < -6:
        text = f"{d.quantize(_DISPLAY_PLACES):f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{d:f}"  # never scientific notation (1E+2)


# --- timeline ------------------------------------------------------------------------------

TIMELINE_HEADER = f"{'seq':>8}  {'ts (UTC)':<24}  {'type':<22}  {'symbol':<8}  {'id':<28}  summary"


def timeline_line(e: TimelineEntry) -> str:
    """One row of the timeline; fixed widths so rows can be printed as they stream in."""
    ident = e.client_order_id or e.intent_id or ""
    return (f"{e.seq:>8}  {fmt_ts(e.ts):<24}  {e.type:<22}  {e.symbol or '':<8}  "
            f"{ident:<28}  {e.summary}").rstrip()


# --- state ---------------------------------------------------------------------------------


def render_state(s: StateView) -> str:
    where = "before the first event" if s.as_of_seq == 0 else f"seq {s.as_of_seq}"
    lines = [
        f"state as of {where} ({fmt_ts(s.as_of_ts)}); the log has {s.log_last_seq} rows",
        f"trading: {s.trading_state} ({s.state_reason})",
        f"kill switch: {s.kill_switch}"
        + (f" by {s.kill_actor}: {s.kill_reason}" if s.kill_switch != "off" else ""),
        f"run: {s.current_run or '(none running)'}",
        (f"realized P&L: today ({s.trading_day or '-'}) {fmt_dec(s.realized_today)}, "
         f"week ({s.week or '-'}) {fmt_dec(s.realized_week)}, "
         f"all {fmt_dec(s.realized_total)}"),
        f"day trades in the 5-day window: {s.day_trades_in_window}",
    ]
    a = s.account
    if a.known:
        lines.append(f"account: equity {a.equity} cash {a.cash} buying power {a.buying_power} "
                     f"(snapshot {fmt_ts(a.snapshot_ts)}); cash now {fmt_dec(a.cash_now)}, "
                     f"buying power now {fmt_dec(a.buying_power_now)}")
    else:
        lines.append("account: unknown (no account snapshot yet)")
    lines.append("")
    if s.positions:
        lines.append("positions:")
        lines.append(table(
            ["symbol", "qty", "avg cost", "last", "mkt value", "unrealized", "realized", "fees"],
            [[p.symbol, str(p.qty), fmt_dec(p.avg_cost), fmt_dec(p.last_price),
              fmt_dec(p.market_value), fmt_dec(p.unrealized_pnl), fmt_dec(p.realized_pnl),
              fmt_dec(p.fees)] for p in s.positions], right=range(1, 8)))
    else:
        lines.append("positions: none")
    lines.append("")
    if s.open_orders:
        lines.append(f"open orders ({len(s.open_orders)} of {s.orders_total}):")
        lines.append(table(
            ["client order id", "symbol", "side", "type", "qty/notional", "limit", "status",
             "filled", "broker id"],
            [[o.client_order_id, o.symbol, o.side, o.order_type,
              str(o.qty) if o.qty is not None else f"${o.notional}", fmt_dec(o.limit_price),
              o.status + (f" ({o.ambiguous})" if o.ambiguous else ""), str(o.filled_qty),
              o.broker_order_id or "-"] for o in s.open_orders]))
    else:
        lines.append(f"open orders: none ({s.orders_total} orders in all)")
    if s.last_bars:
        shown = s.last_bars[:20]
        lines.append("last bars: " + ", ".join(
            f"{b.symbol} {b.close} closed {fmt_ts(b.end, ms=False)} (seq {b.seq})" for b in shown)
            + (f", ... {len(s.last_bars) - len(shown)} more" if len(s.last_bars) > 20 else ""))
    lines.append(f"anomalies: {s.anomalies}")
    for an in s.recent_anomalies:
        lines.append(f"  seq {an.seq}: {an.client_order_id}: {an.event_type} refused in state "
                     f"{an.state}" + (f" ({an.detail})" if an.detail else ""))
    return "\n".join(lines)


# --- explain -------------------------------------------------------------------------------

_ROLE_LABEL = {"bar": "bar seen", "intent": "intent", "decision": "risk", "order": "order",
               "fill": "fill", "fill_bar": "fill's bar", "anomaly": "ANOMALY"}


def render_explain(x: Explanation) -> str:
    head = f"{x.matched.replace('_', ' ')} {x.query}"
    if x.intent_id and x.matched != "intent_id":
        head += f" (intent {x.intent_id})"
    if x.symbol:
        head += f" - {x.symbol}"
    lines = [head]
    if x.decision is None:
        lines.append("risk decision: none recorded")
    else:
        lines.append(f"risk decision: {x.decision}")
    for r in x.reasons:
        vals = ", ".join(f"{k}={v}" for k, v in sorted(r.values.items()))
        lines.append(f"  - {r.code}: {r.message}" + (f" [{vals}]" if vals else ""))
    lines.append("")
    lines.append("chain:")
    root = x.client_order_ids[0] if x.client_order_ids else x.query
    for st in x.steps:
        # Several orders share a chain (legs, replacements): name the one a step is about.
        coid = st.client_order_id
        who = "" if coid in (None, root) else (
            f"[{coid[len(root):]}] " if coid.startswith(root) else f"[{coid}] ")
        lines.append(f"  {st.seq:>8}  {fmt_ts(st.ts)}  {_ROLE_LABEL.get(st.role, st.role):<10}  "
                     f"{st.type:<22}  {who}{st.summary}")
    if x.orders:
        lines.append("")
        lines.append("orders now:")
        for o in x.orders:
            avg = f" avg {fmt_dec(o.avg_fill_price)}" if o.avg_fill_price is not None else ""
            family = (f" [{o.leg_role.replace('_', '-')} leg of {o.parent_id}]" if o.parent_id
                      else f" [{o.order_class}, legs {', '.join(o.legs)}]" if o.legs else "")
            stop = f", stop {fmt_dec(o.stop_price)}" if o.stop_price is not None else ""
            lines.append(f"  {o.client_order_id}{family}: {o.order_type} {o.status}{stop}, "
                         f"filled {o.filled_qty}{avg}, fees {o.fees}"
                         + (f" - {o.reason}" if o.reason else ""))
    lines.append("")
    if x.anomalies:
        lines.append(f"anomalies ({len(x.anomalies)}):")
        for an in x.anomalies:
            lines.append(f"  seq {an.seq}: {an.event_type} refused in state {an.state}"
                         + (f" ({an.detail})" if an.detail else ""))
    else:
        lines.append("anomalies: none")
    return "\n".join(lines)


# --- verify / diff -------------------------------------------------------------------------


def render_verify(v: VerifyReport) -> str:
    if v.ok:
        return f"ok: {v.rows_checked} rows, hash chain intact, every row decodes " \
               f"(last seq {v.last_good_seq})"
    where = f"seq {v.first_bad_seq}" if v.first_bad_seq is not None else "the file"
    return (f"BAD at {where}: {v.reason}\n"
            f"{v.rows_checked} rows before it are intact (up to seq {v.last_good_seq})")


def render_diff(d: BrokerDiff) -> str:
    head = (f"log positions as of seq {d.as_of_seq} ({fmt_ts(d.as_of_ts)}) vs broker snapshot"
            + (f" taken {fmt_ts(d.taken_at)}" if d.taken_at else ""))
    if not d.differences:
        return f"{head}\nno differences ({d.compared} position(s) compared)"
    rows = [[x.symbol, x.kind, str(x.ours_qty), str(x.broker_qty), fmt_dec(x.ours_avg),
             fmt_dec(x.broker_avg), x.detail] for x in d.differences]
    return (f"{head}\n{len(d.differences)} difference(s) in {d.compared} position(s):\n"
            + table(["symbol", "kind", "log qty", "broker qty", "log avg", "broker avg",
                     "detail"], rows, right=(2, 3, 4, 5)))
