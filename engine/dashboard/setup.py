"""Building the dashboard from settings, for the CLI (`python -m engine dashboard`) and the
service (`dashboard.enabled`): one place that decides bind, token and clock."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from engine.dashboard.app import DashboardConfig
from engine.dashboard.follow import LogFollower
from engine.dashboard.security import Token, is_loopback, load_or_create_token, parse_bind
from engine.risk.limits import RiskLimits


def announce_token(token: Token, out: TextIO | None = None) -> None:
    """Show the token the one time it is created; afterwards only where it is."""
    stream = out or sys.stderr
    if token.created:
        print(f"dashboard control token (shown once; also in {token.path}, mode 0600): "
              f"{token.value}", file=stream, flush=True)
    else:
        print(f"dashboard control token: in {token.path}", file=stream, flush=True)


def wall_or_log_time(log_path: Path) -> Callable[[LogFollower], datetime]:
    """'Now' for a reader: the wall clock while a service writes the log (a live view), the
    log's last event time otherwise (a finished run is shown as it ended)."""
    from engine.dashboard.control import service_running

    socket_path = log_path.with_name(log_path.name + ".sock")

    def now(f: LogFollower) -> datetime:
        if f.fold.last_ts is None or service_running(log_path, socket_path):
            return datetime.now(UTC)  # a reader's display time, not engine logic
        return f.fold.last_ts

    return now


def build_config(*, log_path: Path, socket_path: Path, data_dir: Path, limits: RiskLimits,
                 bind: str, allow_remote: bool,
                 now: Callable[[LogFollower], datetime] | None = None
                 ) -> tuple[DashboardConfig, str, int]:
    host, port = parse_bind(bind, allow_remote=allow_remote)
    token = load_or_create_token(data_dir)
    cfg = DashboardConfig(log_path=log_path, socket_path=socket_path, limits=limits,
                          token=token, read_needs_token=not is_loopback(host),
                          now=now or wall_or_log_time(log_path))
    return cfg, host, port
