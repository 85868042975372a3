"""One line per event, for timelines, explanations and the dashboard."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from events.base import Event, tag_of
from events.catalogue import RejectReason
from events.market import Bar


def _amount(qty: Decimal | None, notional: Decimal | None) -> str:
    if qty is not None:
        return str(qty)
    if notional is not None:
        return f"${notional}"
    return "?"


def _bar_text(b: Bar) -> str:
    span = f"{b.interval_s // 60}m" if b.interval_s % 60 == 0 else f"{b.interval_s}s"
    return (f"{span} bar {b.start:%Y-%m-%d %H:%M}Z O {b.open} H {b.high} L {b.low} "
            f"C {b.close} V {b.volume}")


def _reasons_text(reasons: Sequence[RejectReason]) -> str:
    return ", ".join(r.code for r in reasons) or "(no reason given)"


def summarize(e: Event) -> str:
    """A readable one-line description of any event (a generic one for unknown types)."""
    f = _SUMMARIES.get(tag_of(type(e)))
    if f is not None:
        return f(e)
    fields = {k: v for k, v in msgspec.structs.asdict(e).items()
              if k not in ("ts", "intent_id", "client_order_id", "symbol")}
    return " ".join(f"{k}={v}" for k, v in fields.items())


def _protection_text(e: Any) -> list[str]:
    parts = []
    if e.order_class != "simple":
        parts.append(e.order_class)
    if e.take_profit is not None:
        parts.append(f"take-profit {e.take_profit.limit_price}")
    if e.stop_loss is not None:
        sl = e.stop_loss
        parts.append(f"stop-loss {sl.stop_price}"
                     + (f" limit {sl.limit_price}" if sl.limit_price is not None else ""))
    if e.trail_price is not None:
        parts.append(f"trail ${e.trail_price}")
    if e.trail_percent is not None:
        parts.append(f"trail {e.trail_percent}%")
    return parts


def _s_intent(e: Any) -> str:
    parts = [f"{e.strategy}: {e.side} {_amount(e.qty, e.notional)} {e.order_type}"]
    if e.limit_price is not None:
        parts.append(f"limit {e.limit_price}")
    if e.stop_price is not None:
        parts.append(f"stop {e.stop_price}" if e.order_type in ("stop", "stop_limit")
                     else f"planning stop {e.stop_price}")
    parts += _protection_text(e)
    if e.reduce_only:
        parts.append("reduce-only")
    if e.reason:
        parts.append(f"- {e.reason}")
    return " ".join(parts)


def _s_approved(e: Any) -> str:
    flags = [n for n, on in (("reduce-only", e.reduce_only), ("day trade", e.day_trade),
                             ("converted to notional", e.converted_to_notional)) if on]
    flags += [n for n, on in (("protective", e.protective),
                              ("protection engine-side only", e.engine_side)) if on]
    limit = f" limit {e.limit_price}" if e.limit_price is not None else ""
    stop = f" stop {e.stop_price}" if e.stop_price is not None else ""
    extra = " ".join(_protection_text(e))
    legs = "".join(f"; {leg.role} leg {leg.client_order_id}: {leg.side} {leg.qty} "
                   f"{leg.order_type} {leg.stop_price or leg.limit_price}" for leg in e.legs)
    return (f"approved as {e.client_order_id}: {e.side} {_amount(e.qty, e.notional)} "
            f"{e.order_type}{limit}{stop}{' ' + extra if extra else ''} ref "
            f"{e.reference_price} est ${e.estimated_notional} "
            f"at risk ${e.at_risk}" + (f" ({', '.join(flags)})" if flags else "") + legs)


def _terms(e: Any) -> str:
    parts = [f"{k} {v}" for k, v in (("qty", e.qty), ("limit", e.limit_price),
                                       ("stop", e.stop_price), ("trail $", e.trail_price),
                                       ("trail %", e.trail_percent)) if v is not None]
    return " ".join(parts) or "terms as requested"


def _s_fill(e: Any) -> str:
    return (f"{e.side} {e.qty} @ {e.price} fee {e.fee}{' (order done)' if e.order_done else ''} "
            f"exec {e.execution_id} via {e.source}")


_SUMMARIES: dict[str, Callable[[Any], str]] = {
    "bar": lambda e: _bar_text(e.bar),
    "data_rejected": lambda e: f"{e.reason}: {e.detail}",
    "data_gap": lambda e: (f"{e.missing_bars} bar(s) missing between {e.previous_start:%H:%M} "
                           f"and {e.start:%H:%M}"),
    "intent": _s_intent,
    "strategy_error": lambda e: (f"{e.strategy} raised: {e.error}"
                                 + (" (paused)" if e.paused else "")),
    "risk_approved": _s_approved,
    "risk_rejected": lambda e: f"rejected: {_reasons_text(e.reasons)}",
    "order_submit_requested": lambda e: f"submit requested (attempt {e.attempt})",
    "order_submitted": lambda e: (f"broker has it as {e.broker_order_id}"
                                  + (f" ({e.broker_status})" if e.broker_status else "")),
    "order_submit_ambiguous": lambda e: f"outcome unknown ({e.kind}): {e.error}",
    "order_accepted": lambda e: (f"accepted by the broker as {e.broker_order_id}"
                                 + (f" (qty {e.qty})" if e.qty is not None else "")),
    "trailing_stop_updated": lambda e: f"trailing stop moved: hwm {e.hwm}, stop {e.stop_price}",
    "fill": _s_fill,
    "cancel_requested": lambda e: f"cancel requested by {e.actor}: {e.reason}",
    "cancel_rejected": lambda e: f"cancel refused: {e.reason}",
    "order_canceled": lambda e: "canceled" + (f": {e.reason}" if e.reason else ""),
    "order_rejected": lambda e: (f"rejected by {'the broker' if e.by_broker else 'the engine'}: "
                                 f"{e.reason}"),
    "order_expired": lambda e: "expired",
    "replace_requested": lambda e: (f"replace requested as {e.new_client_order_id}: "
                                    f"{_terms(e)}"),
    "order_replaced": lambda e: (f"replaced by {e.new_client_order_id} "
                                 f"({e.new_broker_order_id}): {_terms(e)}"),
    "unknown_broker_message": lambda e: f"{e.source}: {e.error}: {e.raw[:80]}",
    "account_snapshot": lambda e: (f"equity {e.equity} cash {e.cash} buying power "
                                   f"{e.buying_power}" + (f" ({e.source})" if e.source else "")),
    "asset_info": lambda e: (f"tradable={e.tradable} fractionable={e.fractionable} "
                             f"shortable={e.shortable} status={e.status}"),
    "run_started": lambda e: (f"run {e.run_id} started, mode {e.mode}, code {e.code_version}, "
                              f"settings {e.settings_hash}"
                              + (f"; fills: slippage {e.fill_model.slippage_bps} bps, volume "
                                 f"cap {e.fill_model.volume_participation}, zero volume "
                                 f"{e.fill_model.zero_volume}, time in force "
                                 f"{e.fill_model.time_in_force}"
                                 if e.fill_model is not None else "")),
    "run_ended": lambda e: f"run {e.run_id} ended: {e.reason}",
    "run_sealed": lambda e: f"run {e.run_id} sealed at seq {e.last_seq}: {e.reason}",
    "recovery_step": lambda e: f"{e.step}" + (f": {e.detail}" if e.detail else ""),
    "recovery_completed": lambda e: (f"recovery {'ok' if e.ok else 'FAILED'}, "
                                     f"{e.discrepancies} discrepancies"
                                     + (f": {e.detail}" if e.detail else "")),
    "trading_state": lambda e: f"trading {e.state} ({e.actor}): {e.reason}",
    "kill_switch_engaged": lambda e: (f"KILL SWITCH by {e.actor}"
                                      + (" with flatten" if e.flatten else "") + f": {e.reason}"),
    "kill_switch_verified": lambda e: (f"kill switch verified: {e.open_orders} open orders, "
                                       f"flat={e.flat}, {e.attempts} attempt(s)"),
    "kill_switch_released": lambda e: f"kill switch released by {e.actor}: {e.reason}",
    "discrepancy": lambda e: (f"{e.kind}: {e.detail}"
                              + (f" (ours {e.ours}, broker {e.broker})"
                                 if e.ours or e.broker else "")),
    "position_adjusted": lambda e: (f"position {e.qty_before} -> {e.qty_after} @ {e.avg_price}: "
                                    f"{e.reason}"),
    "orphan_adopted": lambda e: (f"adopted broker order {e.broker_order_id}: {e.side} "
                                 f"{_amount(e.qty, e.notional)} {e.order_type}, filled "
                                 f"{e.filled_qty}, {e.broker_status}"),
    "orphan_canceled": lambda e: f"canceled orphan {e.broker_order_id}: {e.reason}",
    "reconciliation_completed": lambda e: (f"{e.kind} reconciliation "
                                           f"{'ok' if e.ok else 'NOT ok'}, "
                                           f"{e.discrepancies} discrepancies"),
    "illegal_transition": lambda e: (f"{e.event_type} refused in state {e.from_state}"
                                     + (f" (seq {e.event_seq})" if e.event_seq else "")),
}


