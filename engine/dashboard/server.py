"""Serve the dashboard inside a task group: the log follower and uvicorn, started and
stopped with the group (cancel it, e.g. on SIGTERM, and both stop cleanly: uvicorn shuts
down gracefully, closing its connections, before the call returns)."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

import anyio
import uvicorn
from anyio.abc import TaskStatus

from engine.dashboard.app import DashboardConfig, make_app
from engine.dashboard.follow import LogFollower

log = logging.getLogger(__name__)


class DashboardStartError(RuntimeError):
    pass


@dataclass(frozen=True)
class Served:
    url: str
    host: str
    port: int


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the service owns SIGTERM/SIGINT) and with a
    startup we can wait on."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    def capture_signals(self) -> Any:
        import contextlib

        return contextlib.nullcontext()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind here, not in uvicorn: a port in use is then a clear error, not a `sys.exit`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise DashboardStartError(f"dashboard can not listen on {host}:{port}: "
                                  f"{e.strerror or e}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def run_dashboard(cfg: DashboardConfig, host: str, port: int, *,
                        follower: LogFollower | None = None,
                        task_status: TaskStatus[Served] = anyio.TASK_STATUS_IGNORED) -> None:
    follower = follower or LogFollower(cfg.log_path)
    sock = bind_socket(host, port)
    actual = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    served = Served(url=f"http://{shown}:{actual}/", host=host, port=actual)
    app = make_app(follower, cfg)
    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                    lifespan="off", timeout_graceful_shutdown=2,
                                    ws="none"))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(follower.run)

            async def serve() -> None:
                # shielded: cancellation ends it through `should_exit` (graceful), below
                with anyio.CancelScope(shield=True):
                    await server.serve(sockets=[sock])

            tg.start_soon(serve)
            try:
                await server.ready.wait()
                task_status.started(served)
                await anyio.sleep_forever()
            finally:
                follower.close_streams()  # open event streams end, so shutdown is prompt
                server.should_exit = True
    finally:
        sock.close()
