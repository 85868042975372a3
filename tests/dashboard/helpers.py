"""A real dashboard (uvicorn on 127.0.0.1, an ephemeral port) over a real log file, and a
plain HTTP client (urllib in a worker thread) to talk to it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from engine.dashboard.app import DashboardConfig
from engine.dashboard.follow import LogFollower
from engine.dashboard.security import load_or_create_token
from engine.dashboard.server import Served, run_dashboard
from engine.risk.limits import RiskLimits


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
            body: bytes | None = None) -> Answer:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


@dataclass
class Running:
    served: Served
    cfg: DashboardConfig
    follower: LogFollower

    async def get(self, path: str, **kw: Any) -> Answer:
        return await anyio.to_thread.run_sync(lambda: request(self.served.url + path.lstrip("/"),
                                                              **kw))

    async def post(self, path: str, payload: Any, *, token: str | None = None,
                   content_type: str = "application/json") -> Answer:
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["X-MQD-Token"] = token
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return await self.get(path, method="POST", headers=headers, body=data)


@asynccontextmanager
async def dashboard(log_path: Path, data_dir: Path, *, limits: RiskLimits | None = None,
                    now: datetime | None = None, read_needs_token: bool = False,
                    socket_path: Path | None = None, push_interval_s: float = 0.05,
                    poll_s: float = 0.02) -> AsyncIterator[Running]:
    cfg = DashboardConfig(
        log_path=log_path, socket_path=socket_path or log_path.with_name(log_path.name + ".sock"),
        limits=limits or RiskLimits(), token=load_or_create_token(data_dir),
        read_needs_token=read_needs_token,
        now=(lambda f: now) if now is not None else (lambda f: f.fold.last_ts or datetime.now()),
        push_interval_s=push_interval_s)
    follower = LogFollower(log_path, poll_s=poll_s)
    async with anyio.create_task_group() as tg:
        served = await tg.start(partial(run_dashboard, follower=follower), cfg, "127.0.0.1", 0)
        with anyio.fail_after(30):
            await follower.wait_caught_up()
        try:
            yield Running(served, cfg, follower)
        finally:
            tg.cancel_scope.cancel()
