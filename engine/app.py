"""The composition root: the one place that wires the engine's parts together.

`open_engine(settings, clock=..., broker=...)` opens the log, rebuilds the projections from
it, and builds the gate, execution, reconciliation, kill switch, validator and strategies
around them. The service (`python -m engine run`), backtests and the tests all go through it,
so there is no second way to trade.

The market pipeline is the same everywhere: validate -> the bar is recorded -> strategies ->
risk gate -> execution. `Engine.on_item` is the live path: a task consumes the broker's update
stream (a simulated broker used live watches the recorded bars itself). Simulations (backtests,
the demo, the service's file replay) are driven step by step by `replay.backtest.stepper.StepDriver`,
which moves the simulated clock, lets the simulated broker fill against each recorded bar and
handles its updates inline, so a fill always follows the bar that priced it and runs are
byte-for-byte reproducible. Projections fold each event as it is appended, so every step sees
the whole log so far without waiting for the disk; only what leaves the process (a broker
call, a caller's answer) waits for durability.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from engine.brokers.base import Broker, BrokerAsset
from engine.brokers.simulated import SimConfig, SimulatedBroker
from engine.clock import Clock, SimClock
from engine.config import Settings
from engine.execution.router import OrderRouter
from engine.execution.service import ExecutionService
from engine.marketdata.assets import read_assets_csv, sample_assets_path
from engine.marketdata.types import MarketItem
from engine.marketdata.validator import BarValidator
from engine.protection_watch import engine_side_exits
from engine.rebuild import encode_snapshot, rebuild_from_path, write_snapshot
from engine.recovery.killswitch import KillSwitch
from engine.recovery.loss_watch import LossLimitWatch
from engine.recovery.protection import ProtectionGuard
from engine.recovery.reconcile import ReconcilePolicy, Reconciler
from engine.recovery.startup import RecoveryReport, end_run, recover
from engine.risk.gate import RiskGate
from engine.strategies.base import Strategy, StrategyConfigError
from engine.strategies.registry import default_registry
from engine.strategies.runner import Output, StrategyRunner
from events.base import Event
from events.catalogue import AssetInfo, BarReceived, FillModel, FillReceived, StrategyError
from events.market import Bar
from events.store import EventLog
from projections.state import Projections

log = logging.getLogger(__name__)
LIVE_CLOCK_SKEW = timedelta(seconds=2)


def code_version() -> str:
    try:
        return metadata.version("miniquantdesk")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_strategies(settings: Settings) -> list[Strategy]:
    """The configured strategies. Positions are per symbol, not per strategy, so two
    strategies may not trade the same symbol: each would take the other's position for its
    own (and exit it)."""
    registry = default_registry()
    out = []
    for s in settings.strategies:
        params = dict(s.params)
        if "symbols" not in params and settings.data.symbols:
            params["symbols"] = list(settings.data.symbols)
        out.append(registry.create(s.name, params, instance_name=s.instance))
    if len(out) > 1:
        owner: dict[str, str] = {}
        for strat in out:
            if strat.symbols is None:
                raise StrategyConfigError(strat.instance_name, [
                    "with several strategies each must list its symbols (they may not overlap)"])
            for sym in strat.symbols:
                other = owner.setdefault(sym, strat.instance_name)
                if other != strat.instance_name:
                    raise StrategyConfigError(strat.instance_name, [
                        (f"{sym} is already traded by {other}; positions are per symbol, so "
                         "two strategies can not share one")])
    return out


def assets_for_simulation(settings: Settings, ts: Any) -> dict[str, BrokerAsset]:
    path = settings.data.assets_path or sample_assets_path()
    return {a.symbol: BrokerAsset(symbol=a.symbol, tradable=a.tradable,
                                  fractionable=a.fractionable, shortable=a.shortable)
            for a in read_assets_csv(path, ts)}


def make_broker(settings: Settings, clock: Clock) -> Broker:
    if settings.broker == "simulated":
        s = settings.sim
        return SimulatedBroker(
            clock=clock, assets=assets_for_simulation(settings, clock.now()), cash=s.cash,
            config=SimConfig(slippage_bps=s.slippage_bps, fee_per_share=s.fee_per_share,
                             fee_bps=s.fee_bps, min_fee=s.min_fee,
                             volume_participation=s.volume_participation,
                             fill_at_signal_close=s.fill_at_signal_close,
                             zero_volume=s.zero_volume))
    from engine.brokers.alpaca import AlpacaBroker, AlpacaConfig

    a = settings.alpaca
    assert a.key_id is not None and a.secret_key is not None
    return AlpacaBroker(AlpacaConfig(key_id=a.key_id, secret_key=a.secret_key, paper=a.paper,
                                     rest_url=a.rest_url, stream_url=a.stream_url,
                                     request_timeout_s=a.request_timeout_s,
                                     reconnect_min_backoff_s=a.reconnect_min_backoff_s,
                                     reconnect_max_backoff_s=a.reconnect_max_backoff_s),
                        clock=clock)


@dataclass
class Engine:
    settings: Settings
    clock: Clock
    log: EventLog
    proj: Projections
    broker: Broker
    gate: RiskGate
    execution: ExecutionService
    router: OrderRouter
    reconciler: Reconciler
    kill: KillSwitch
    runner: StrategyRunner
    validator: BarValidator
    run_id: str
    # Driven by a step driver (replay/backtest/stepper.py) rather than by tasks on the broker's stream:
    # the service starts no stream consumer, reconciliation loop or loss-watch task for it.
    step_mode: bool
    loss_watch: LossLimitWatch
    report: RecoveryReport | None = None
    protection: ProtectionGuard | None = None
    _fills: list[FillReceived] = field(default_factory=list)
    # Set by `run_fill_feed` (live): wakes it when a fill is booked.
    _fill_booked: anyio.Event | None = None
    # Called after each routed intent: a step driver handles what the broker did with it
    # before anything else happens (live, the update stream does that on its own time).
    settle: Callable[[], Awaitable[None]] | None = None
    bars_seen: int = 0
    intents_sent: int = 0
    snapshot_seq: int = 0

    @property
    def sim(self) -> SimulatedBroker | None:
        return self.broker if isinstance(self.broker, SimulatedBroker) else None

    def fill_model(self) -> FillModel | None:
        """The simulated broker's fill model with the strategies' time in force; None when a
        real broker fills."""
        sim = self.sim
        if sim is None:
            return None
        tifs = {s.instance_name: s.params.time_in_force for s in self.runner.strategies}
        kinds = set(tifs.values())
        tif = (kinds.pop() if len(kinds) == 1 else
               ", ".join(f"{k}={v}" for k, v in sorted(tifs.items()))) if tifs else "day"
        return sim.config.fill_model(tif)

    # --- lifecycle -----------------------------------------------------------------------

    async def warm_up(self, bars_per_symbol: int = 390) -> int:
        """Feed strategies the bars the log already holds (the newest `bars_per_symbol` of
        each symbol), so a restart resumes with warm indicators. Their intents are dropped:
        those bars were acted on (or deliberately not) before the restart."""
        bars: list[Bar] = []
        async with self.log.reader() as reader:
            for _, e in await reader.newest_bars(self.proj.market.last_bar, bars_per_symbol):
                if isinstance(e, BarReceived) and e.bar.end <= self.clock.now():
                    bars.append(e.bar)
        for bar in bars:
            self.runner.on_bar(bar)
        return len(bars)

    async def recover(self, symbols: Sequence[str] = ()) -> RecoveryReport:
        await self.warm_up()

        async def prepare() -> None:
            await self.refresh_assets(symbols)

        self.report = await recover(
            self.log, self.proj, self.clock, self.reconciler, self.settings.risk_limits(),
            run_id=self.run_id, code_version=code_version(),
            settings_hash=self.settings.fingerprint(), mode=self.settings.mode, prepare=prepare,
            fill_model=self.fill_model())
        if self.report.enabled:
            await self.check_protection("startup")
        for out in self.runner.start():
            await self._act(out)
        return self.report

    async def check_protection(self, when: str) -> int:
        """Every open position still protected at the broker? (see recovery/protection)"""
        if self.protection is None:
            return 0
        return len(await self.protection.check(when=when))

    async def refresh_assets(self, symbols: Sequence[str]) -> None:
        """Record eligibility for the symbols we may trade, where it changed."""
        for sym in sorted(set(symbols)):
            a = await self.broker.asset(sym)
            if a is None:
                continue
            known = self.proj.market.assets.get(sym)
            if known is None or (known.tradable, known.fractionable, known.shortable,
                                 known.status) != (a.tradable, a.fractionable, a.shortable,
                                                   a.status):
                await self.log.append(AssetInfo(ts=self.clock.now(), symbol=sym,
                                                tradable=a.tradable, fractionable=a.fractionable,
                                                shortable=a.shortable, status=a.status))

    async def stop(self, reason: str = "clean") -> None:
        for out in self.runner.stop():
            await self._act(out)
        if self.settings.kill_switch.cancel_on_shutdown:
            for coid in sorted(self.proj.orders.open_ids):
                await self.execution.cancel(coid, reason="shutdown", actor="engine")
        try:
            await self.reconciler.account_snapshot()  # where the account stands at the end
        except Exception as e:  # noqa: BLE001 - a broker hiccup must not block a clean stop
            log.warning("final account snapshot failed: %s", e)
        await end_run(self.log, self.clock, self.run_id, reason)
        await self.save_snapshot()

    async def save_snapshot(self) -> None:
        """Write the projections as of the log's head (everything durable), so the next start
        replays only what comes after it. Safe at any quiet point; a snapshot that does not
        match the log is ignored at load time."""
        await self.log.flush()
        if self.proj.last_seq != self.log.last_seq:
            return  # something was appended meanwhile; the next quiet point will do
        data = encode_snapshot(self.proj, self.log.last_hash)  # on the loop: nothing folds now
        try:
            await anyio.to_thread.run_sync(write_snapshot, self.log.path, data)
            self.snapshot_seq = self.proj.last_seq
        except OSError as e:  # a snapshot is an optimisation; losing one loses nothing
            log.warning("snapshot not saved: %s", e)

    # --- the market pipeline -------------------------------------------------------------

    async def on_item(self, item: MarketItem) -> None:
        """The live path: one provider item through validator, log and strategies."""
        bar = self.record(item)
        if bar is not None:
            await self.on_bar(bar)

    def record(self, item: MarketItem) -> Bar | None:
        """Validate one provider item and append what it yields; the bar, if it is one the
        engine accepted (a refused row is recorded as such, and trades nothing)."""
        events = self.validator.validate(item)
        for e in events:
            self.log.enqueue(e)  # nothing here waits on the commit
        last = events[-1] if events else None
        if not isinstance(last, BarReceived):
            return None
        self.bars_seen += 1
        return last.bar

    async def on_bar(self, bar: Bar) -> None:
        """A recorded bar reaches the engine-side protection watch, then the strategies;
        their intents go through the gate and execution, then fills booked meanwhile are
        delivered to the strategies."""
        if bar.symbol in self.proj.orders.engine_side:  # engine_side_exits' own first test
            for exit_ in engine_side_exits(self.proj, bar, self.clock.now()):
                await self._act(exit_)  # a stop the broker could not hold (protection_watch)
        await self._act_on(self.runner.on_bar(bar))

    def on_bar_now(self, bar: Bar) -> Coroutine[Any, Any, None] | None:
        """`on_bar` for a step driver: what needs no await runs now, and the rest comes back
        as a coroutine to await at once, or None when nothing is left — the common bar: no
        engine-side stop on its symbol, no intent, no fill to deliver, which then costs no
        coroutine. Same steps in the same order as `on_bar`."""
        if bar.symbol in self.proj.orders.engine_side:
            return self.on_bar(bar)
        outs = self.runner.on_bar(bar)
        if outs or self._fills:
            return self._act_on(outs)
        return None

    async def _act_on(self, outs: list[Output]) -> None:
        """The strategies' outputs for one bar, then the fills booked meanwhile."""
        for out in outs:
            await self._act(out)
        if self._fills:  # most bars book none: no coroutine for them
            await self._feed_fills()

    async def _act(self, out: Event) -> None:
        if isinstance(out, StrategyError):
            self.log.append_nowait(out)
            return
        self.intents_sent += 1
        await self.router.route(out)  # type: ignore[arg-type]
        if self.settle is not None:
            await self.settle()

    def _on_event(self, seq: int, event: Any) -> None:
        if type(event) is FillReceived:
            self._fills.append(event)
            if self._fill_booked is not None:
                self._fill_booked.set()

    async def run_fill_feed(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                            ) -> None:
        """Live: strategies hear each fill as soon as it is booked (folded into the views),
        not at the next bar, so protection placed on fill goes out at once. A step driver
        delivers fills after the bar that caused them instead (deterministic order)."""
        self._fill_booked = anyio.Event()
        task_status.started()
        try:
            while True:
                await self._fill_booked.wait()
                self._fill_booked = anyio.Event()
                await self._feed_fills()
        finally:
            self._fill_booked = None

    async def _feed_fills(self) -> None:
        while self._fills:
            fills, self._fills = self._fills, []
            for f in fills:
                for out in self.runner.on_fill(f):
                    await self._act(out)


def paper_exchange(sim: SimulatedBroker) -> Callable[[int, Any], None]:
    """A log subscriber that shows each recorded bar to a simulated broker."""
    def on_event(seq: int, event: Any) -> None:
        if type(event) is BarReceived:
            sim.on_bar(event.bar)
    return on_event


def run_id_for(settings: Settings, clock: Clock, salt: str = "") -> str:
    stamp = clock.now().strftime("%Y%m%dT%H%M%S")
    digest = hashlib.sha256(f"{settings.fingerprint()}|{salt}".encode()).hexdigest()[:8]
    return f"run-{stamp}-{digest}"


@asynccontextmanager
async def open_engine(settings: Settings, *, clock: Clock, broker: Broker | None = None,
                      strategies: Sequence[Strategy] | None = None, run_id: str | None = None,
                      log_path: Path | None = None,
                      step_mode: bool | None = None) -> AsyncIterator[Engine]:
    path = log_path or settings.log_path
    async with EventLog.open(path, synchronous=settings.synchronous) as event_log:
        # Rebuild only once we hold the writer lock: anything appended before it (an offline
        # `halt` while we were starting) is then in what we fold, and nothing can follow.
        proj = await rebuild_from_path(path) if event_log.last_seq else Projections()
        event_log.subscribe(proj.apply)
        the_broker = broker or make_broker(settings, clock)
        gate = RiskGate(event_log, proj, settings.risk_limits(), clock)
        account_id = ""
        execution = ExecutionService(event_log, proj, the_broker, clock, account_id=account_id,
                                     submit_timeout_s=settings.alpaca.request_timeout_s * 2)
        router = OrderRouter(gate, execution)
        rc = settings.reconcile
        reconciler = Reconciler(event_log, proj, the_broker, execution, clock, ReconcilePolicy(
            unexplained_position=rc.unexplained_position, foreign_orders=rc.foreign_orders,
            max_mismatch_value=rc.max_mismatch_value), account_id=account_id)
        kill = KillSwitch(event_log, proj, the_broker, execution, router, clock)
        ks = settings.kill_switch
        loss_watch = LossLimitWatch(proj, kill, clock, settings.risk, enabled=ks.on_loss_limit,
                                    flatten=ks.flatten)
        event_log.subscribe(loss_watch.on_event, LossLimitWatch.TRIGGERS)
        # On the wall clock a bar can arrive while our clock still lags the exchange's by a
        # little; refusing it as from the future would drop live data.
        skew = timedelta(0) if isinstance(clock, SimClock) else LIVE_CLOCK_SKEW
        runner = StrategyRunner(strategies if strategies is not None else build_strategies(settings),
                                projections=proj, clock=clock, max_clock_skew=skew)
        validator = BarValidator(clock, max_clock_skew=skew)
        validator.prime_many((s, b.start) for s, b in proj.market.last_bar.items())
        sim_step = isinstance(the_broker, SimulatedBroker) and isinstance(clock, SimClock)
        engine = Engine(settings=settings, clock=clock, log=event_log, proj=proj,
                        broker=the_broker, gate=gate, execution=execution, router=router,
                        reconciler=reconciler, kill=kill, runner=runner, validator=validator,
                        loss_watch=loss_watch,
                        protection=ProtectionGuard(event_log, proj, router, clock,
                                                   settings.missing_protection_policy()),
                        run_id=run_id or run_id_for(settings, clock),
                        step_mode=sim_step if step_mode is None else step_mode)
        event_log.subscribe(engine._on_event, (FillReceived,))
        if isinstance(the_broker, SimulatedBroker) and not engine.step_mode:
            # A simulated broker used live is an exchange watching the market: it fills
            # against each bar once it is recorded (a step driver feeds it otherwise).
            event_log.subscribe(paper_exchange(the_broker), (BarReceived,))
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(gate.run)
                try:
                    yield engine
                finally:
                    gate.close()
        finally:
            if broker is None:  # we made it, we close it (threads, sockets, stream task)
                aclose = getattr(the_broker, "aclose", None)
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()
