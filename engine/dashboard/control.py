"""The dashboard's halt/flatten/resume: the service's own control socket (the path the CLI
uses), with actor `dashboard`, so the log records them exactly as a CLI command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio

from events.store import writer_is_running

ACTOR = "dashboard"


class ControlUnavailable(Exception):
    """No service is running this log (or its control socket is missing)."""


def service_running(log_path: Path, socket_path: Path) -> bool:
    # the socket first: probing the writer lock takes it for an instant when nobody holds
    # it, and a service starting in that instant would find its log "locked"
    return socket_path.exists() and writer_is_running(log_path)


async def send_command(socket_path: Path, request: dict[str, Any], *,
                       timeout_s: float = 90.0) -> dict[str, Any]:
    """One JSON line to the service, its one-line answer back."""
    try:
        with anyio.fail_after(timeout_s):
            async with await anyio.connect_unix(socket_path) as stream:
                await stream.send((json.dumps(request) + "\n").encode())
                buf = b""
                while not buf.endswith(b"\n"):
                    try:
                        buf += await stream.receive()
                    except anyio.EndOfStream:
                        break
    except OSError as e:
        raise ControlUnavailable(f"the service's control socket did not answer "
                                 f"({type(e).__name__})") from None
    except TimeoutError:
        raise ControlUnavailable(f"the service did not answer within {timeout_s:.0f}s; "
                                 "the command may still complete (see the timeline)") from None
    try:
        answer: dict[str, Any] = json.loads(buf)
    except json.JSONDecodeError:
        raise ControlUnavailable("the service sent an answer that is not JSON") from None
    return answer
