"""The notifier inside the service: it watches the log as events are appended, turns them
into alerts (`rules`), hands each to every webhook's queue, checks the timed rules on the
engine's clock, and records each delivery as `AlertSent` through the log's normal append."""

from __future__ import annotations

import logging
from typing import Any

import anyio
from anyio.abc import TaskStatus

from engine.clock import Clock
from engine.config import NotifySettings
from engine.notify.rules import Alert, AlertRules
from engine.notify.webhook import Outcome, WebhookDeliverer
from events.catalogue import AlertSent
from events.store import EventLog

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, event_log: EventLog, clock: Clock, settings: NotifySettings,
                 **deliverer_kw: Any) -> None:
        self._log = event_log
        self._clock = clock
        self.rules = AlertRules(kill_verify_s=settings.kill_verify_s,
                                stream_down_s=settings.stream_down_s)
        self.deliverers = [
            WebhookDeliverer(url, queue_size=settings.queue_size,
                             max_attempts=settings.max_attempts, backoff_s=settings.backoff_s,
                             timeout_s=settings.timeout_s, record=self._record, **deliverer_kw)
            for url in settings.webhook_url]
        self.raised = 0

    def on_event(self, seq: int, event: Any) -> None:
        """Commit listener: runs inline after each commit, so it only queues (never waits)."""
        if type(event) is AlertSent:
            return
        try:
            alerts = self.rules.on_event(seq, event)
        except Exception:
            log.exception("alert rule failed on seq %d", seq)
            return
        for alert in alerts:
            self.raise_alert(alert)

    def raise_alert(self, alert: Alert) -> None:
        self.raised += 1
        for d in self.deliverers:
            d.offer(alert)

    async def _record(self, webhook: str, alert: Alert, outcome: Outcome, dropped: int) -> None:
        await self._log.append(AlertSent(
            ts=self._clock.now(), alert_id=alert.alert_id, kind=alert.kind,
            summary=alert.summary[:500], webhook=webhook, delivered=outcome.delivered,
            attempts=outcome.attempts, status=outcome.status, error=outcome.error,
            source_seq=alert.source_seq, dropped=dropped))

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # on_commit, not subscribe: an alert leaves the process, so only for durable facts
        self._log.on_commit(self.on_event)
        async with anyio.create_task_group() as tg:
            for d in self.deliverers:
                tg.start_soon(d.run)
            task_status.started()
            while True:
                await self._clock.sleep(1.0)
                for alert in self.rules.due(self._clock.now()):
                    self.raise_alert(alert)
