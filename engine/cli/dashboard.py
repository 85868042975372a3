"""`dashboard`: the operator's dashboard on any log."""

from __future__ import annotations

import argparse
import signal
import sys

import anyio

from engine.cli.common import EXIT_OK, UsageError
from engine.cli.status import status_log
from engine.config import Settings


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from engine.dashboard.security import BindError
    from engine.dashboard.server import DashboardStartError, run_dashboard
    from engine.dashboard.setup import announce_token, build_config
    from engine.service import control_socket_path

    log_path, chosen = status_log(settings)  # --log, else the most recent run's
    settings = settings.model_copy(update={"log_file": log_path})
    bind = args.bind or settings.dashboard.bind
    try:
        cfg, host, port = build_config(
            log_path=log_path, socket_path=control_socket_path(settings),
            data_dir=settings.data_dir, limits=settings.risk, bind=bind,
            allow_remote=args.allow_remote or settings.dashboard.allow_remote)
    except BindError as e:
        raise UsageError(str(e)) from None
    announce_token(cfg.token)

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            try:
                served = await tg.start(run_dashboard, cfg, host, port)
            except DashboardStartError as e:
                raise UsageError(str(e)) from None
            print(f"dashboard {served.url} (log {log_path}, {chosen}); Ctrl-C to stop",
                  file=sys.stderr, flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()

    anyio.run(serve)
    return EXIT_OK


