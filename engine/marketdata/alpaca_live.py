"""Live minute bars from Alpaca's data stream (alpaca-py 0.44 `StockDataStream`).

Three things the SDK does not do for us:

- **Silence.** A stream can stay connected but mute (alpaca-py issue #740): pings are
  answered, no data comes. Our own silence timer (on the injected clock) fails the socket when
  no bar arrived for `silence_timeout` seconds; the SDK then reconnects as after any network
  error. Failing the socket also unsticks the SDK when a server accepts the websocket and then
  never says "connected" (its handshake `recv()` has no timeout). While reconnects find
  nothing (a quiet market, a closed session) the timeout doubles up to `max_silence_timeout`,
  and the first bar resets it.
- **Gaps.** The SDK reconnects silently and never replays what was missed. Every connection
  after the first (or the first too, with `backfill_since`, or after `resume_from` a previous
  run's last bars) triggers a backfill from REST history of every *completed* bar after the
  last one we delivered, per symbol — so a restart misses nothing either.
- **Order and duplicates.** Live bars that arrive while a backfill runs are held back and
  released after it, so a symbol's bars stay in time order; bars the backfill delivered are not
  delivered again when the stream repeats them. Anything else (a live duplicate, an
  out-of-order bar) is passed on for the validator to record.

The stream runs on this event loop (the asyncio backend; alpaca-py is asyncio-only) inside the
provider's task group, so it lives exactly as long as `async with provider:`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from engine.clock import Clock
from events.market import Bar

from .alpaca_convert import bar_from_alpaca, render_raw
from .alpaca_history import AlpacaHistory
from .types import BadInput, BarProvider, MarketItem, ProviderError

log = logging.getLogger(__name__)
Feed = Literal["iex", "sip"]
_MINUTE = timedelta(minutes=1)


@dataclass
class LiveStats:
    """Counters for monitoring and tests."""

    connects: int = 0
    live_bars: int = 0
    backfilled: int = 0
    duplicates_dropped: int = 0
    forced_reconnects: int = 0
    backfills: int = 0
    backfill_failures: int = 0


def _hooked_stream_class() -> type[Any]:
    """StockDataStream that tells us each time a connection is up and subscribed (the SDK
    calls `_send_subscribe_msg` right after every successful (re)connect and auth)."""
    from alpaca.data.live.stock import StockDataStream

    class HookedStockDataStream(StockDataStream):
        on_subscribed: Any = None

        async def _send_subscribe_msg(self) -> None:
            await super()._send_subscribe_msg()
            if self.on_subscribed is not None:
                self.on_subscribed()

    return HookedStockDataStream


def _floor_minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


class AlpacaLiveProvider(BarProvider):
    """Live 1-minute bars of `symbols`.

    `history` backfills missed bars (None disables backfill: gaps are then only flagged by
    the validator). `backfill_since`: also backfill on the first connection, from this time
    for symbols not seen yet (default: symbols not seen yet are backfilled from the first
    connection's minute). `reconnect_backoff` sets the SDK's (min, max) reconnect delay.
    """

    def __init__(self, symbols: Sequence[str], *, api_key: str, secret_key: str, clock: Clock,
                 history: AlpacaHistory | None, feed: Feed = "iex",
                 url_override: str | None = None, silence_timeout: float = 150.0,
                 max_silence_timeout: float = 900.0, backfill_since: datetime | None = None,
                 reconnect_backoff: tuple[float, float] = (1.0, 30.0), buffer: int = 10_000,
                 provider: str = "alpaca-live",
                 websocket_params: dict[str, Any] | None = None) -> None:
        if not symbols:
            raise ValueError("AlpacaLiveProvider needs at least one symbol")
        if feed not in ("iex", "sip"):
            raise ValueError(f"feed must be 'iex' or 'sip', got {feed!r}")
        if silence_timeout <= 0 or max_silence_timeout < silence_timeout:
            raise ValueError("need 0 < silence_timeout <= max_silence_timeout")
        if backfill_since is not None and backfill_since.tzinfo is None:
            raise ValueError("backfill_since must be timezone-aware")
        self.name = provider
        self.symbols = sorted(set(symbols))
        self.feed = feed
        self.stats = LiveStats()
        self._key = api_key
        self._secret = secret_key
        self._url = url_override
        self._clock = clock
        self._history = history
        self._silence = silence_timeout
        self._max_silence = max_silence_timeout
        self._timeout = silence_timeout
        self._backfill_since = backfill_since
        self._backoff = reconnect_backoff
        self._buffer = buffer
        self._ws_params = websocket_params
        self._stream: Any = None
        self._tg: TaskGroup | None = None
        self._send: MemoryObjectSendStream[MarketItem] | None = None
        self._receive: MemoryObjectReceiveStream[MarketItem] | None = None
        self._last_activity: datetime | None = None
        self._first_connect: datetime | None = None
        self._last_emitted: dict[str, datetime] = {}
        self._backfilled: set[tuple[str, datetime]] = set()
        self._holding = False
        self._held: list[MarketItem] = []
        self._backfill_wanted: anyio.Event | None = None  # created on enter (needs a loop)
        self._resuming = False
        self._max_backfill = timedelta(days=5)

    def resume_from(self, last_bars: Mapping[str, datetime], *,
                    max_backfill: timedelta = timedelta(days=5)) -> None:
        """Carry on from a previous run: `last_bars` is each symbol's last bar start in the
        log. The first connection then backfills every symbol from the bar after it (at most
        `max_backfill` back; older holes are left to the validator's gap record), so bars
        published while the engine was down are not missed. Call before entering."""
        for sym, start in last_bars.items():
            if sym in self.symbols:
                if start.tzinfo is None:
                    raise ValueError("last bar starts must be timezone-aware")
                self._last_emitted[sym] = start
        self._resuming = bool(self._last_emitted)
        self._max_backfill = max_backfill

    # --- lifecycle ---------------------------------------------------------------------

    def _make_stream(self) -> Any:
        from alpaca.data.enums import DataFeed

        cls = _hooked_stream_class()
        stream = cls(self._key, self._secret, raw_data=True, feed=DataFeed(self.feed),
                     url_override=self._url, websocket_params=self._ws_params)
        stream._reconnect_min_backoff, stream._reconnect_max_backoff = self._backoff
        stream.on_subscribed = self._on_subscribed
        # Subscribing before the stream runs: on a running stream the SDK would block on a
        # future of this very loop.
        stream.subscribe_bars(self._on_bar, *self.symbols)
        return stream

    async def __aenter__(self) -> Self:
        if self._tg is not None:
            raise RuntimeError("AlpacaLiveProvider is already running")
        self._send, self._receive = anyio.create_memory_object_stream[MarketItem](self._buffer)
        self._backfill_wanted = anyio.Event()
        self._last_activity = self._clock.now()
        self._stream = self._make_stream()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._run_sdk)
        tg.start_soon(self._watchdog)
        tg.start_soon(self._backfill_worker)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(exc_type, exc, tb)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                if self._stream is not None:
                    await self._stream.close()
            if self._send is not None:
                self._send.close()
            if self._receive is not None:
                self._receive.close()

    async def stream(self) -> AsyncGenerator[MarketItem, None]:
        if self._receive is None:
            raise RuntimeError("enter the provider first: async with provider: ...")
        async for item in self._receive:
            yield item

    async def _run_sdk(self) -> None:
        await self._stream._run_forever()
        # _run_forever only returns on a permanent refusal ("insufficient subscription").
        raise ProviderError(f"Alpaca data stream ({self.feed}) stopped; see the log for why")

    # --- the SDK's callbacks (run on this loop, inside the SDK's task) -----------------

    def _on_subscribed(self) -> None:
        self.stats.connects += 1
        now = self._clock.now()
        self._last_activity = now
        if self._first_connect is None:
            self._first_connect = _floor_minute(now)
            if self._backfill_since is None and not self._resuming:
                return
        if self._history is None or self._backfill_wanted is None:
            return
        self._holding = True  # from now until the backfill is out, live bars wait
        self._backfill_wanted.set()

    async def _on_bar(self, msg: Any) -> None:
        # The SDK loses a message whose handler raises; never raise from here.
        try:
            self._last_activity = self._clock.now()
            self._timeout = self._silence
            self.stats.live_bars += 1
            item = bar_from_alpaca(msg, provider=self.name)
        except Exception as e:  # noqa: BLE001 - anything here is bad input, not a crash
            item = BadInput(reason="UNSUPPORTED_MESSAGE", detail=f"{type(e).__name__}: {e}",
                            raw=render_raw(msg), provider=self.name)
        if self._holding:
            self._held.append(item)
            return
        await self._emit(item, backfill=False)

    async def _emit(self, item: MarketItem, *, backfill: bool) -> None:
        if isinstance(item, Bar):
            key = (item.symbol, item.start)
            last = self._last_emitted.get(item.symbol)
            if backfill:
                if last is not None and item.start <= last:
                    self.stats.duplicates_dropped += 1
                    return
                self._backfilled.add(key)
                self.stats.backfilled += 1
            elif key in self._backfilled:
                self.stats.duplicates_dropped += 1
                return
            if last is None or item.start > last:
                self._last_emitted[item.symbol] = item.start
        assert self._send is not None
        try:
            await self._send.send(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the consumer is gone; we are shutting down

    # --- silence timer -----------------------------------------------------------------

    async def _watchdog(self) -> None:
        clock = self._clock
        while True:
            assert self._last_activity is not None
            deadline = self._last_activity + timedelta(seconds=self._timeout)
            now = clock.now()
            if now < deadline:
                await clock.sleep((deadline - now).total_seconds())
                continue
            log.warning("no bars on the Alpaca %s stream for %.1fs; forcing a reconnect",
                        self.feed, self._timeout)
            self.stats.forced_reconnects += 1
            self._fail_socket()
            self._last_activity = clock.now()
            self._timeout = min(self._timeout * 2, self._max_silence)

    def _fail_socket(self) -> None:
        ws = getattr(self._stream, "_ws", None)
        if ws is None:
            return  # between connections: the SDK is reconnecting already
        # fail_connection closes the transport without waiting for the peer (a mute peer may
        # never answer a close handshake); the SDK's pending recv() then raises and it
        # reconnects.
        ws.fail_connection(1001, "no market data")

    # --- backfill ----------------------------------------------------------------------

    async def _backfill_worker(self) -> None:
        while True:
            assert self._backfill_wanted is not None
            await self._backfill_wanted.wait()
            self._backfill_wanted = anyio.Event()
            await self._backfill()

    def _since(self, symbol: str) -> datetime:
        last = self._last_emitted.get(symbol)
        if last is not None:
            return max(last + _MINUTE, _floor_minute(self._clock.now() - self._max_backfill))
        if self._backfill_since is not None:
            return self._backfill_since
        assert self._first_connect is not None
        return self._first_connect

    async def _backfill(self) -> None:
        assert self._history is not None
        self.stats.backfills += 1
        now = self._clock.now()
        since = {s: self._since(s) for s in self.symbols}
        try:
            items = await self._history.fetch(self.symbols, min(since.values()), now)
        except Exception as e:  # noqa: BLE001 - recorded; the validator flags the gap
            self.stats.backfill_failures += 1
            log.warning("backfill from Alpaca history failed: %s", e)
            await self._emit(BadInput(reason="BACKFILL_FAILED",
                                      detail=f"{type(e).__name__}: {e}", provider=self.name),
                             backfill=True)
            items = []
        self._backfilled = set()
        for item in items:
            if isinstance(item, Bar) and (item.start < since.get(item.symbol, item.start)
                                          or item.end > now):
                continue  # before the hole, or not complete yet (the stream will send it)
            await self._emit(item, backfill=True)
        # Release what arrived meanwhile, oldest first; a bar arriving while we release is
        # queued behind the others because `_holding` stays set until the list is empty.
        while self._held:
            await self._emit(self._held.pop(0), backfill=False)
        self._holding = False
