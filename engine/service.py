"""The long-running service: `python -m engine run`.

Everything runs under one anyio task group: the market-data pipeline (provider -> validator
-> strategies -> risk gate -> execution), the broker's trade-update stream, continuous
reconciliation, the kill-switch monitors and the control socket (halt/resume from the CLI).
Recovery runs before any of it trades. If any part fails, the group cancels the rest, the
reason is recorded in the log (`RunEnded`), and the process exits non-zero — never a
half-running engine. SIGTERM/SIGINT stop intake, let in-flight decisions land, optionally
cancel open orders, and close the log cleanly.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import aclosing, nullcontext
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from engine.app import Engine, open_engine
from engine.brokers.base import BrokerError
from engine.brokers.simulated import default_assets_line
from engine.clock import Clock, LiveClock, SimClock
from engine.config import Settings
from engine.marketdata.types import BarProvider, MarketItem
from engine.recovery.startup import end_run
from engine.sources import (
    FILE_SOURCES,
    StartedSource,
    data_symbols,
    first_bar_start,
    make_provider,
)

if TYPE_CHECKING:
    from replay.backtest.stepper import StepDriver

log = logging.getLogger(__name__)


@dataclass
class ServiceResult:
    run_id: str
    log_path: Path
    bars: int
    intents: int
    reason: str
    enabled: bool


def control_socket_path(settings: Settings) -> Path:
    return settings.log_path.with_name(settings.log_path.name + ".sock")


def restore_simulated(engine: Engine) -> None:
    """The simulated paper account lives in the log: rebuild the broker's book from it."""
    sim = engine.sim
    if sim is None or engine.proj.last_seq == 0:
        return
    from engine.brokers.base import OrderRequest

    p = engine.proj
    positions = {s: (x.qty, x.avg_cost) for s, x in p.positions.positions.items()}
    opened = []
    parents: dict[str, str] = {}
    held: set[str] = set()
    hwms: dict[str, Decimal] = {}
    for coid in sorted(p.orders.open_ids):
        o = p.orders.orders[coid]
        if o.broker_order_id is None:
            continue
        req = OrderRequest(client_order_id=coid, symbol=o.symbol, side=o.side,  # type: ignore[arg-type]
                           order_type=o.order_type, time_in_force=o.time_in_force,  # type: ignore[arg-type]
                           qty=o.qty, notional=o.notional, limit_price=o.limit_price,
                           stop_price=o.stop_price if o.order_type != "trailing_stop" else None,
                           trail_price=o.trail_price, trail_percent=o.trail_percent,
                           order_class=o.order_class)  # type: ignore[arg-type]
        opened.append((req, o.broker_order_id, o.filled_qty, o.filled_notional,
                       engine.clock.now()))
        if o.parent_id is not None:
            parents[coid] = o.parent_id
        if o.status.value == "held":
            held.add(coid)
        if o.hwm is not None:
            hwms[coid] = o.hwm
    seen = [int(o.broker_order_id[4:]) for o in p.orders.orders.values()
            if o.broker_order_id and o.broker_order_id.startswith("sim-")
            and o.broker_order_id[4:].isdigit()]
    cash = p.account.cash_now if p.account.known else sim.cash
    sim.restore(cash, positions, opened, orders_seen=max(seen, default=0),
                executions_seen=len(p.orders.execution_ids), held=held, parents=parents,
                hwms=hwms)


class BrokerErrorMonitor:
    """Counts broker errors in a sliding window; too many trip the kill switch."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.times: deque[float] = deque()
        self.tripped = anyio.Event()
        self.last = ""

    def record(self, what: str) -> None:
        now = time.monotonic()  # a duration, not a timestamp: safe to read directly
        self.times.append(now)
        self.last = what
        while self.times and now - self.times[0] > self.window_s:
            self.times.popleft()
        if len(self.times) >= self.limit:
            self.tripped.set()


async def run_service(settings: Settings, *, clock: Clock | None = None,
                      provider: BarProvider | None = None, broker: Any = None,
                      stop_after_data: bool | None = None,
                      task_status: TaskStatus[Engine] = anyio.TASK_STATUS_IGNORED,
                      log_path: Path | None = None,
                      progress: Callable[[int], None] | None = None) -> ServiceResult:
    """Run until the data ends (file sources), a signal, or a failure. `progress(bars)` is
    called now and then with the bars handled so far (a display for long replays)."""
    replaying = settings.data.source in FILE_SOURCES
    # Your own bar files on the simulated broker: their symbols trade out of the box.
    # Read (and sorted) once: the stream started here to learn where the files begin is the
    # one the engine consumes.
    preview = await StartedSource.open(settings) if (
        replaying and settings.broker == "simulated" and broker is None
        and settings.data.source in ("csv", "parquet")) else None
    if clock is None:
        # Bars from files are replayed at accelerated simulated time on the simulated broker;
        # anything else runs on the wall clock.
        clock = SimClock(preview.first_start if preview else await first_bar_start(settings)) \
            if replaying and settings.broker == "simulated" else LiveClock()
    source = provider or preview or make_provider(settings, clock)
    finite = replaying if stop_after_data is None else stop_after_data
    reason = "clean"
    async with preview or nullcontext(), open_engine(settings, clock=clock, broker=broker,
                                                     log_path=log_path) as engine:
        restore_simulated(engine)
        sim = engine.sim
        if sim is not None and preview is not None:
            defaulted = sim.add_default_assets(preview.symbols)
            if defaulted:
                log.warning("%s", default_assets_line(defaulted))
        symbols = sorted(set(data_symbols(settings)) | set(sim.assets if sim is not None else ()))
        monitor = BrokerErrorMonitor(settings.kill_switch.max_broker_errors,
                                     settings.kill_switch.broker_error_window_s)
        engine.execution.on_broker_error = monitor.record
        # A file replay on the simulated broker and clock is a simulation: the step driver
        # runs it (as it runs backtests). Attached before recovery, which may act already.
        step = _step_driver(engine)
        try:
            report = await engine.recover(symbols)
        except Exception as e:
            # Never a half-started engine: say why in the log (if the run got that far).
            reason = f"failed during recovery: {type(e).__name__}: {e}"
            log.error("service stopping: %s", reason)
            if engine.log.failed is None and engine.proj.runs.current == engine.run_id:
                with anyio.CancelScope(shield=True):
                    await end_run(engine.log, engine.clock, engine.run_id, reason[:500])
            raise
        log.info("recovery: %s", report.reason, extra={"seq": engine.log.last_seq})
        # Bars published while we were down: the provider fills from the log's last bars.
        source.resume_from({s: b.start for s, b in engine.proj.market.last_bar.items()})
        if engine.step_mode and engine.proj.risk.kill_switch != "off":
            # a stepped simulation has no stream to wait for: its cancels settle at once
            await engine.kill.engage(actor="recovery", reason="kill switch engaged at startup",
                                     flatten=engine.proj.risk.kill_flatten)
        try:
            async with anyio.create_task_group() as tg:
                stop = anyio.Event()
                tg.start_soon(_signals, stop)
                await tg.start(_control_server, engine, control_socket_path(settings))
                if settings.notify.webhook_url:
                    from engine.notify.service import Notifier

                    await tg.start(Notifier(engine.log, engine.clock, settings.notify).run)
                if settings.dashboard.enabled:
                    await tg.start(_dashboard, engine, settings)
                if not engine.step_mode:
                    await tg.start(engine.execution.run_updates)
                    await tg.start(engine.run_fill_feed)
                    tg.start_soon(_reconcile_loop, engine, settings.reconcile.interval_s)
                    # only now: the stream and reconciliation run while it cancels
                    tg.start_soon(_kill_until_verified, engine,
                                  settings.kill_switch.retry_interval_s)
                    if hasattr(engine.broker, "stream_health"):
                        tg.start_soon(_stream_watch, engine)
                tg.start_soon(_kill_monitors, engine, monitor, settings)
                tg.start_soon(_snapshots, engine, settings.snapshot_every)
                task_status.started(engine)
                log.info("engine ready: trading state %s", engine.proj.risk.trading_state,
                         extra={"seq": engine.log.last_seq})
                done = anyio.Event()
                # pacing slows replays only: live bars come at their own pace
                tg.start_soon(_market, engine, source, done, progress,
                              settings.data.pace_s if replaying else 0.0,
                              step.on_item if step is not None else engine.on_item)
                with anyio.CancelScope() as wait_scope:
                    async with anyio.create_task_group() as waiters:
                        async def first(ev: anyio.Event, why: str) -> None:
                            nonlocal reason
                            await ev.wait()
                            reason = reason if reason != "clean" else why
                            wait_scope.cancel()
                        waiters.start_soon(first, stop, "signal")
                        if finite:
                            waiters.start_soon(first, done, "data finished")
                tg.cancel_scope.cancel()
        except BaseException as e:
            failure = _describe(e)
            if failure is None:
                raise
            reason = f"failed: {failure}"
            log.error("service stopping: %s", reason)
            with anyio.CancelScope(shield=True):
                if engine.log.failed is None:
                    await engine.stop(reason[:500])
            raise
        with anyio.CancelScope(shield=True):
            await engine.stop(reason)
        return ServiceResult(run_id=engine.run_id, log_path=engine.log.path,
                             bars=engine.bars_seen, intents=engine.intents_sent,
                             reason=reason, enabled=report.enabled)


def _describe(e: BaseException) -> str | None:
    if isinstance(e, BaseExceptionGroup):
        parts = [d for d in (_describe(x) for x in e.exceptions) if d]
        return "; ".join(parts) or None
    if isinstance(e, (anyio.get_cancelled_exc_class(), KeyboardInterrupt, SystemExit)):
        return None
    return f"{type(e).__name__}: {e}"


async def _signals(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for sig in signals:
            log.info("received %s: stopping intake", signal.Signals(sig).name)
            stop.set()
            return


def _step_driver(engine: Engine) -> StepDriver | None:
    """The simulation loop for an engine opened in step mode, else None (the live path)."""
    if not engine.step_mode:
        return None
    from replay.backtest.stepper import StepDriver  # the simulation's driver lives with the replays

    return StepDriver(engine)


async def _market(engine: Engine, source: BarProvider, done: anyio.Event,
                  progress: Callable[[int], None] | None = None,
                  pace_s: float = 0.0,
                  on_item: Callable[[MarketItem], Awaitable[None]] | None = None) -> None:
    """Feed the source's items through `on_item` (the step driver's or the live path's)."""
    handle = on_item if on_item is not None else engine.on_item
    async with source, aclosing(source.stream()) as items:
        item: MarketItem
        n = 0
        async for item in items:
            await handle(item)
            n += 1
            if progress is not None and n % 1000 == 0:
                progress(engine.bars_seen)
            if pace_s:
                # a replay slowed to a watchable pace (wall time between bars; the engine's
                # simulated clock still moves by bar time)
                await engine.log.flush()
                await anyio.sleep(pace_s)
        if progress is not None:
            progress(engine.bars_seen)
    await engine.log.flush()
    done.set()


async def _snapshots(engine: Engine, every: int) -> None:
    """Save the projections now and then, so a restart (even after a crash) replays only the
    events since — startup time stays flat however long the log grows."""
    while True:
        await engine.clock.sleep(30.0)
        if engine.log.last_seq - engine.snapshot_seq >= every:
            await engine.save_snapshot()


async def _dashboard(engine: Engine, settings: Settings, *,
                     task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """The operator's dashboard on this service's log (a reader like any other; its
    commands come back through the control socket)."""
    from engine.dashboard.server import run_dashboard
    from engine.dashboard.setup import announce_token, build_config

    d = settings.dashboard
    cfg, host, port = build_config(
        log_path=engine.log.path, socket_path=control_socket_path(settings),
        data_dir=settings.data_dir, limits=settings.risk, bind=d.bind,
        allow_remote=d.allow_remote, now=lambda _: engine.clock.now())
    announce_token(cfg.token)
    async with anyio.create_task_group() as tg:
        served = await tg.start(run_dashboard, cfg, host, port)
        print(f"dashboard {served.url}", file=sys.stderr, flush=True)
        log.info("dashboard at %s", served.url)
        task_status.started()


async def _stream_watch(engine: Engine, every_s: float = 0.2) -> None:
    """Record the broker stream's state when it changes, so the dashboard and the alerts
    can tell from the log how long it has been down."""
    from events.catalogue import BrokerStreamStatus

    last: tuple[str, bool] | None = None
    while True:
        health = engine.broker.stream_health  # type: ignore[attr-defined]
        now = (health.state, health.state == "listening")
        if now != last and health.state != "idle":
            last = now
            await engine.log.append(BrokerStreamStatus(
                ts=engine.clock.now(), state=health.state, connected=now[1],
                detail=(health.last_error or "")[:300]))
        await anyio.sleep(every_s)  # polled: the SDK's reconnect loop has no callback


async def _reconcile_loop(engine: Engine, interval_s: float) -> None:
    while True:
        await engine.clock.sleep(interval_s)
        try:
            result = await engine.reconciler.reconcile(startup=False)
            await engine.check_protection("reconciliation")
        except BrokerError as e:
            log.warning("reconciliation skipped: %s", e)
            continue
        if result.mismatch_value > engine.reconciler.policy.max_mismatch_value:
            await engine.kill.engage(actor="reconciliation",
                                     reason=f"position mismatch worth {result.mismatch_value}",
                                     flatten=engine.settings.kill_switch.flatten)


async def _kill_until_verified(engine: Engine, retry_s: float) -> None:
    """An engaged kill switch the broker has not confirmed — recorded before this start (an
    offline `halt`), or a round that ran out of attempts — is worked on until it is: cancel,
    flatten if asked, verify. Across restarts too, since the engaged state is in the log."""
    while True:
        if engine.proj.risk.kill_switch == "engaged":
            try:
                await engine.kill.engage(actor="recovery",
                                         reason="kill switch engaged, not yet verified",
                                         flatten=engine.proj.risk.kill_flatten)
            except BrokerError as e:
                log.warning("kill switch round failed: %s; retrying in %.0fs", e, retry_s)
        await engine.clock.sleep(retry_s)


async def _kill_monitors(engine: Engine, monitor: BrokerErrorMonitor, settings: Settings) -> None:
    async def broker_errors() -> None:
        await monitor.tripped.wait()
        if engine.proj.risk.kill_switch == "off":
            await engine.kill.engage(actor="broker-errors",
                                     reason=f"{monitor.limit} broker errors within "
                                            f"{monitor.window_s:.0f}s (last: {monitor.last})",
                                     flatten=False)

    async with anyio.create_task_group() as tg:
        tg.start_soon(broker_errors)
        if not engine.step_mode:  # in step mode the step driver checks after each bar
            tg.start_soon(engine.loss_watch.run)


async def _control_server(engine: Engine, path: Path, *,
                          task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """A Unix socket for operator commands (one JSON line in, one out): halt, resume."""
    path.unlink(missing_ok=True)
    try:
        listener = await anyio.create_unix_listener(path)
    except OSError as e:  # e.g. a path too long for AF_UNIX: the CLI falls back to the log
        log.warning("control socket unavailable (%s); halt/resume work offline only", e)
        task_status.started()
        return
    task_status.started()
    try:
        async with listener:
            await listener.serve(lambda stream: _handle_control(engine, stream))
    finally:
        path.unlink(missing_ok=True)


async def _handle_control(engine: Engine, stream: Any) -> None:
    async with stream:
        try:
            raw = b""
            while not raw.endswith(b"\n") and len(raw) < 65536:
                raw += await stream.receive()
            req = json.loads(raw)
            answer = await operator_command(engine, req)
        except Exception as e:  # noqa: BLE001 - answer the operator, keep serving
            answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        try:
            await stream.send((json.dumps(answer) + "\n").encode())
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
            # The operator's client gave up waiting; the command itself is in the log.
            log.warning("control client left before its answer: %s", answer)


async def operator_command(engine: Engine, req: dict[str, Any]) -> dict[str, Any]:
    cmd = req.get("cmd")
    actor = str(req.get("actor") or "operator")
    why = str(req.get("reason") or "")
    if not why:
        return {"ok": False, "error": "a reason is required"}
    if cmd == "halt":
        res = await engine.kill.engage(actor=actor, reason=why, flatten=bool(req.get("flatten")))
        return {"ok": res.verified, "verified": res.verified, "open_orders": res.open_orders,
                "flat": res.flat, "attempts": res.attempts, "seq": engine.log.last_seq}
    if cmd == "resume":
        await engine.kill.release(actor=actor, reason=why)
        return {"ok": True, "state": engine.proj.risk.trading_state, "seq": engine.log.last_seq}
    return {"ok": False, "error": f"unknown command {cmd!r}"}
