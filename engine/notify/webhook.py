"""Deliver alerts to one webhook: a bounded queue drained by its own task, JSON POSTs
retried with exponential backoff. Enqueueing never waits: a full queue drops its oldest
alert and counts it, so a dead webhook can not slow anything that raises alerts."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
from pydantic import SecretStr

from engine.notify.rules import Alert

log = logging.getLogger(__name__)


def public_name(url: str) -> str:
    """The webhook without its secret parts (path, query, credentials): scheme://host:port."""
    u = urlsplit(url)
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{u.hostname}{port}"


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    attempts: int
    status: int | None
    error: str


def post_json(url: str, body: bytes, timeout_s: float) -> int:
    """One POST (blocking: run it in a worker thread). Returns the HTTP status; raises
    OSError for network failures."""
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "miniquantdesk-alerts"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


Recorder = Callable[[str, Alert, Outcome, int], Awaitable[None]]


class WebhookDeliverer:
    def __init__(self, url: SecretStr, *, queue_size: int, max_attempts: int,
                 backoff_s: float, timeout_s: float, record: Recorder,
                 post: Callable[[str, bytes, float], int] = post_json) -> None:
        self._url = url
        self.name = public_name(url.get_secret_value())
        self._queue: deque[Alert] = deque()
        self._size = queue_size
        self._attempts = max_attempts
        self._backoff = backoff_s
        self._timeout = timeout_s
        self._record = record
        self._post = post
        self._wake = anyio.Event()
        self.dropped = 0  # since the last record
        self.dropped_total = 0
        # our own thread: a hung webhook must not hold the threads broker calls use
        self._limiter = anyio.CapacityLimiter(1)

    def offer(self, alert: Alert) -> None:
        """Queue an alert; never waits (drops the oldest when full)."""
        if len(self._queue) >= self._size:
            self._queue.popleft()
            self.dropped += 1
            self.dropped_total += 1
        self._queue.append(alert)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        while True:
            while not self._queue:
                self._wake = anyio.Event()
                await self._wake.wait()
            alert = self._queue.popleft()
            outcome = await self.deliver(alert)
            dropped, self.dropped = self.dropped, 0
            await self._record(self.name, alert, outcome, dropped)

    async def deliver(self, alert: Alert) -> Outcome:
        body = json.dumps(alert.payload()).encode()
        url = self._url.get_secret_value()
        status: int | None = None
        error = ""
        for attempt in range(1, self._attempts + 1):
            try:
                status = await anyio.to_thread.run_sync(
                    self._post, url, body, self._timeout, limiter=self._limiter,
                    abandon_on_cancel=True)
                error = "" if 200 <= status < 300 else f"HTTP {status}"
            except OSError as e:  # refused, reset, timed out, DNS
                status, error = None, _describe(e)
            if status is not None and 200 <= status < 300:
                return Outcome(True, attempt, status, "")
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                break  # the webhook refuses this request: retrying will not change it
            if attempt < self._attempts:
                await anyio.sleep(self._backoff * 2 ** (attempt - 1))
        log.warning("alert %s not delivered to %s: %s", alert.alert_id, self.name, error)
        return Outcome(False, attempt, status, error)


def _describe(e: BaseException) -> str:
    reason: Any = getattr(e, "reason", None)
    inner = reason if isinstance(reason, BaseException) else e
    return type(inner).__name__  # never the text: it may echo the URL (and its secret)
