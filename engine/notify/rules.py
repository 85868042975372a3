"""Which events are worth waking someone for (pure: events in, alerts out).

Immediate: kill switch engaged, loss limit reached (the loss-limit kill switch or a loss
limit rejection, once per trading day), reconciliation discrepancy, strategy paused, missing
protection. Timed (checked by `due` against the engine's clock): a kill switch engaged but not
verified within `kill_verify_s`, the broker stream down for longer than `stream_down_s`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from events.base import Event, tag_of
from events.catalogue import (
    BrokerStreamStatus,
    DiscrepancyFound,
    KillSwitchEngaged,
    KillSwitchReleased,
    KillSwitchVerified,
    RiskRejected,
    StrategyError,
)
from projections.calendar import trading_day

LOSS_CODES = ("DAILY_LOSS_LIMIT", "WEEKLY_LOSS_LIMIT")
# Issue 11 records a position without its protective stop under this tag; the rule matches
# the tag, so it works as soon as that event type is in the catalogue.
MISSING_PROTECTION_TAGS = ("protection_missing", "missing_protection")


@dataclass(frozen=True)
class Alert:
    alert_id: str
    kind: str
    summary: str
    ts: datetime
    source_seq: int
    details: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {"source": "miniquantdesk", "alert_id": self.alert_id, "kind": self.kind,
                "summary": self.summary, "ts": self.ts.isoformat(),
                "source_seq": self.source_seq, "details": self.details}


@dataclass
class AlertRules:
    kill_verify_s: float = 60.0
    stream_down_s: float = 60.0
    _kill_pending: tuple[int, datetime, str] | None = None  # (seq, ts, who/why)
    _stream_down: tuple[int, datetime, str] | None = None
    _loss_days: set[str] = field(default_factory=set)

    def on_event(self, seq: int, e: Event) -> list[Alert]:
        t = type(e)
        if t is KillSwitchEngaged:
            assert isinstance(e, KillSwitchEngaged)
            self._kill_pending = (seq, e.ts, f"{e.actor}: {e.reason}")
            out: list[Alert | None] = [Alert(f"kill_switch_engaged:{seq}", "kill_switch_engaged",
                         f"kill switch engaged by {e.actor}: {e.reason}"
                         + (" (flatten)" if e.flatten else ""), e.ts, seq,
                         {"actor": e.actor, "reason": e.reason, "flatten": e.flatten})]
            if e.actor == "loss-limit":
                out.append(self._loss(seq, e.ts, f"loss limit reached: {e.reason}", {}))
            return [a for a in out if a is not None]
        if t is KillSwitchVerified or t is KillSwitchReleased:
            self._kill_pending = None
            return []
        if t is RiskRejected:
            assert isinstance(e, RiskRejected)
            hit = [r for r in e.reasons if r.code in LOSS_CODES]
            if hit:
                a = self._loss(seq, e.ts, f"loss limit reached: {hit[0].message}",
                               {"code": hit[0].code, "symbol": e.symbol,
                                "values": dict(hit[0].values)})
                return [a] if a is not None else []
            return []
        if t is DiscrepancyFound:
            assert isinstance(e, DiscrepancyFound)
            return [Alert(f"reconciliation_discrepancy:{seq}", "reconciliation_discrepancy",
                          f"reconciliation: {e.kind} {e.symbol or e.client_order_id or ''}: "
                          f"{e.detail}", e.ts, seq,
                          {"kind": e.kind, "symbol": e.symbol, "ours": e.ours,
                           "broker": e.broker})]
        if t is StrategyError:
            assert isinstance(e, StrategyError)
            if not e.paused:
                return []
            return [Alert(f"strategy_paused:{seq}", "strategy_paused",
                          f"strategy {e.strategy} paused: {e.error}", e.ts, seq,
                          {"strategy": e.strategy, "symbol": e.symbol})]
        if t is BrokerStreamStatus:
            assert isinstance(e, BrokerStreamStatus)
            if e.connected:
                self._stream_down = None
            elif self._stream_down is None:
                self._stream_down = (seq, e.ts, e.state)
            return []
        tag = tag_of(t)
        if tag in MISSING_PROTECTION_TAGS:
            sym = getattr(e, "symbol", None)
            return [Alert(f"missing_protection:{seq}", "missing_protection",
                          f"position {sym or ''} has no live protective stop", e.ts, seq,
                          {"symbol": sym})]
        return []

    def _loss(self, seq: int, ts: datetime, summary: str, details: dict[str, Any]
              ) -> Alert | None:
        day = trading_day(ts).isoformat()
        if day in self._loss_days:
            return None  # once per trading day: every later intent is refused the same way
        self._loss_days.add(day)
        return Alert(f"loss_limit:{seq}", "loss_limit", summary, ts, seq, details | {"day": day})

    def due(self, now: datetime) -> list[Alert]:
        out = []
        if self._kill_pending is not None:
            seq, ts, who = self._kill_pending
            if now - ts >= timedelta(seconds=self.kill_verify_s):
                self._kill_pending = None
                out.append(Alert(f"kill_switch_not_verified:{seq}", "kill_switch_not_verified",
                                 f"kill switch ({who}) NOT verified at the broker after "
                                 f"{self.kill_verify_s:.0f}s", now, seq, {}))
        if self._stream_down is not None:
            seq, ts, state = self._stream_down
            if now - ts >= timedelta(seconds=self.stream_down_s):
                self._stream_down = None  # once per outage
                out.append(Alert(f"broker_stream_down:{seq}", "broker_stream_down",
                                 f"broker stream {state} for more than "
                                 f"{self.stream_down_s:.0f}s", now, seq, {"state": state}))
        return out
