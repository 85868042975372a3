"""Alpaca's trade-updates websocket through alpaca-py 0.44's `TradingStream`, made safe.

We keep the SDK's connection and reconnect loop (`TradingStream._run_forever`) and run it as
a task on *our* event loop, owned by `AlpacaTradeUpdates` and cancelled when it is closed.
A thread running `run()` (which is `asyncio.run`) would add a second loop, cross-thread
hand-offs, and a `stop()` that needs up to 5 s; on our loop the stream is plain asyncio
(websockets is asyncio-native), cancellation is immediate, and nothing outlives the iterator.

A subclass overrides four hooks:

- `_start_ws` (connect + authenticate + send `listen`): bounded by our handshake timeout
  (the SDK's `_auth` `recv()` has none; the `listen` confirmation must also arrive within
  it, or the socket is failed and reconnected) and observed, so a refused handshake (HTTP 429,
  Alpaca's one-connection-per-account limit, or an `unauthorized` reply) is counted, logged
  at ERROR and reported once per streak as an `UnparsedMessage(error="stream_refused: ...")`
  instead of only the SDK's warning.
- `_consume`: reads frames and parses the raw JSON ourselves (`parse_float=Decimal`). The
  SDK's version json-decodes to floats, validates with pydantic and drops the update if that
  fails or if the handler raises; ours never raises for a frame: anything it cannot parse is
  queued as `UnparsedMessage` with the frame verbatim. It also waits on `recv()` without the
  SDK's 5 s polling (we stop by cancelling, not through its stop queue).
- The server's `listening` reply is the proof that a (re)connection is live: each one
  queues `StreamConnected(since, reconnect)` *before* any update of that connection, so the
  receiver can fill the gap over REST. Alpaca never replays.
- `_wait_before_reconnect`: the SDK's jittered exponential backoff, but slept on the
  injected `Clock`.

The websocket library logs every frame at DEBUG, including our `authenticate` frame with
the secret (elided, but partly visible): its logger is wrapped so such frames are redacted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, MutableMapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Self

import msgspec
import websockets
from alpaca.trading.stream import TradingStream

from engine.clock import Clock

from .alpaca_parse import AlpacaParseError, parse_trade_update
from .base import (
    BrokerEvent,
    BrokerOrder,
    BrokerUnavailableError,
    StreamConnected,
    TradeUpdate,
    UnparsedMessage,
)

log = logging.getLogger("engine.brokers.alpaca")
_ws_log = logging.getLogger("engine.brokers.alpaca.websocket")

StreamState = Literal["idle", "connecting", "listening", "reconnecting", "refused", "closed"]
REFUSED_PREFIX = "stream_refused: "
_MAX_DESC = 300


class StreamHealth(msgspec.Struct, frozen=True, kw_only=True):
    """What the trade-updates stream is doing, for monitoring and tests."""

    state: StreamState
    connects: int  # connections that reached "listening"
    refusals: int  # handshakes refused: HTTP 429 / connection limit / unauthorized
    failures: int  # other failed attempts (timeouts, 5xx, network)
    disconnects: int  # live connections lost
    last_error: str | None
    last_update_at: datetime | None


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def describe(exc: BaseException, secrets: tuple[str, ...]) -> str:
    """A one-line, credential-free description of a foreign exception."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = redact(text, secrets)
    return text if len(text) <= _MAX_DESC else text[: _MAX_DESC - 3] + "..."


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """Logger for the websockets library: a frame carrying a credential is replaced by a
    placeholder (checked on the frame's bytes, because its printed form is elided and may
    cut the secret in pieces), and any credential left in a message is masked."""

    def __init__(self, logger: logging.Logger, secrets: tuple[str, ...]) -> None:
        super().__init__(logger, {})
        self._secrets = tuple(s for s in secrets if s)
        self._secret_bytes = tuple(s.encode() for s in self._secrets)

    def _scrub(self, arg: object) -> object:
        data = getattr(arg, "data", None)
        if isinstance(data, (bytes, bytearray, memoryview)):
            raw = bytes(data)
            if any(s in raw for s in self._secret_bytes):
                return "<frame redacted: contains credentials>"
            return arg
        if isinstance(arg, str):
            return redact(arg, self._secrets)
        if isinstance(arg, (bytes, bytearray)) and any(s in arg for s in self._secret_bytes):
            return b"<redacted>"
        return arg

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        safe = tuple(self._scrub(a) for a in args)
        try:
            text = str(msg) % safe if safe else str(msg)
        except (TypeError, ValueError):
            text = " ".join([str(msg), *map(str, safe)])
        kwargs.setdefault("stacklevel", 2)
        self.logger.log(level, "%s", redact(text, self._secrets), **kwargs)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs


class _End:
    """Queue sentinel: the iterator is finished (closed, or the stream task died)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class StreamTracker:
    """Stream state that lives as long as the broker, so a new iterator after a closed one
    still reports `reconnect=True` and the right `since`."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.state: StreamState = "idle"
        self.connects = 0
        self.refusals = 0
        self.failures = 0
        self.disconnects = 0
        self.last_error: str | None = None
        self.last_update_at: datetime | None = None  # broker time of the newest update seen
        self.first_listen_at: datetime | None = None  # our clock, at the first "listening"
        self.refused_streak = False

    def health(self) -> StreamHealth:
        return StreamHealth(
            state=self.state,
            connects=self.connects,
            refusals=self.refusals,
            failures=self.failures,
            disconnects=self.disconnects,
            last_error=self.last_error,
            last_update_at=self.last_update_at,
        )

    def saw_update(self, update: TradeUpdate) -> None:
        # max, not last: an out-of-order update must not move the watermark backwards
        if self.last_update_at is None or update.timestamp > self.last_update_at:
            self.last_update_at = update.timestamp

    def listening(self) -> StreamConnected:
        # `since` is the newest update seen; before any update, the time we first listened
        # (a reconnect must always say where the gap starts). None only on the first connect.
        since = self.last_update_at or self.first_listen_at
        event = StreamConnected(since=since, reconnect=self.connects > 0)
        if self.first_listen_at is None:
            self.first_listen_at = self._clock.now()
        self.connects += 1
        self.state = "listening"
        self.refused_streak = False
        return event


def _handshake_status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)  # legacy InvalidStatusCode
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)  # InvalidStatus
    return status if isinstance(status, int) else None


def _is_refusal(exc: BaseException) -> bool:
    if _handshake_status(exc) == 429:
        return True
    # the SDK's _auth raises this for an "unauthorized" reply (bad keys, or Alpaca's
    # connection limit reported at authentication)
    return isinstance(exc, ValueError) and "failed to authenticate" in str(exc)


class _ListenTimeout(websockets.exceptions.WebSocketException):
    """Raised (and handled by the SDK's reconnect loop) when `listen` is not confirmed."""


class EngineTradingStream(TradingStream):
    """`TradingStream` with our frame handling, connection tracking and clock."""

    def __init__(
        self,
        *,
        key_id: str,
        secret_key: str,
        paper: bool,
        url: str | None,
        sink: AlpacaTradeUpdates,
        clock: Clock,
        min_backoff_s: float,
        max_backoff_s: float,
        handshake_timeout_s: float,
        ping_interval_s: float,
        ping_timeout_s: float,
    ) -> None:
        super().__init__(
            key_id,
            secret_key,
            paper=paper,
            raw_data=True,
            url_override=url,  # type: ignore[arg-type]  # SDK annotates str = None
            websocket_params={
                "ping_interval": ping_interval_s,
                "ping_timeout": ping_timeout_s,
                "max_queue": 1024,
                "open_timeout": handshake_timeout_s,
                # close() waits this long for the peer; a dead peer must not hold shutdown
                "close_timeout": 1,
                "logger": RedactingLogger(_ws_log, (secret_key,)),
            },
        )
        self._reconnect_min_backoff = min_backoff_s
        self._reconnect_max_backoff = max_backoff_s
        self._sink = sink
        self._clock = clock
        self._handshake_timeout_s = handshake_timeout_s
        # loop time by which the current connection must confirm `listen` (None: confirmed)
        self._listen_deadline: float | None = None
        # _run_forever waits until a handler is set and `listen` is only sent when one is;
        # frames are handled in _consume, so this handler is never called.
        self.subscribe_trade_updates(self._unused_handler)

    async def _unused_handler(self, msg: Any) -> None:  # pragma: no cover - never called
        return None

    async def _start_ws(self) -> None:
        self._sink.on_connecting()
        self._listen_deadline = None
        try:
            async with asyncio.timeout(self._handshake_timeout_s):
                await super()._start_ws()  # type: ignore[no-untyped-call]
        except Exception as exc:
            self._sink.on_connect_failed(exc)
            raise  # the SDK closes the socket and reconnects with backoff
        self._listen_deadline = asyncio.get_running_loop().time() + self._handshake_timeout_s

    async def _consume(self) -> None:
        ws = self._ws
        if ws is None:  # pragma: no cover - _start_ws just set it
            raise websockets.exceptions.WebSocketException("no connection")
        try:
            while True:
                if self._listen_deadline is not None:
                    frame = await self._recv_before_listen(ws)
                else:
                    frame = await ws.recv()
                if self._sink.on_frame(frame):
                    # the SDK resets its backoff after a connection that delivered data
                    self._data_received = True
                if self._sink.listening_confirmed:
                    self._listen_deadline = None
        except _ListenTimeout:
            raise  # already reported as a failed attempt
        except websockets.WebSocketException as exc:
            self._sink.on_disconnected(exc)
            raise

    async def _recv_before_listen(self, ws: Any) -> str | bytes:
        """Until Alpaca confirms `listen`, a silent socket is a failed connection attempt:
        without this we would sit 'connected' and deaf."""
        assert self._listen_deadline is not None
        try:
            async with asyncio.timeout_at(self._listen_deadline):
                frame: str | bytes = await ws.recv()
                return frame
        except TimeoutError:
            error = TimeoutError("no listen confirmation from the trade-updates stream")
            self._sink.on_connect_failed(error)
            # a WebSocketException makes the SDK close this socket and reconnect
            raise _ListenTimeout(str(error)) from None

    async def _wait_before_reconnect(self, retries: int) -> None:
        delay = self._reconnect_delay(retries)
        log.debug("trade-updates stream: reconnect attempt %d in %.2fs", retries, delay)
        await self._clock.sleep(delay)


class AlpacaTradeUpdates:
    """The async iterator returned by `AlpacaBroker.trade_updates()`.

    The stream task starts on the first `__anext__` and is cancelled by `aclose()` (or
    `async with`). Events are queued without bound and never dropped (trade updates are few;
    blocking the socket reader would only move the backlog to the server)."""

    def __init__(
        self,
        *,
        make_stream: Callable[[AlpacaTradeUpdates], EngineTradingStream],
        tracker: StreamTracker,
        secrets: tuple[str, ...],
        on_close: Callable[[AlpacaTradeUpdates], None],
        name_order: Callable[[BrokerOrder], BrokerOrder] | None = None,
    ) -> None:
        self._make_stream = make_stream
        # Alpaca's leg ids -> ours (see alpaca_legs); applied as each update is handed out.
        self._name_order = name_order
        self._tracker = tracker
        self._secrets = secrets
        self._on_close = on_close
        self._queue: asyncio.Queue[BrokerEvent | _End] = asyncio.Queue()
        self._stream: EngineTradingStream | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.listening_confirmed = False  # for the current connection

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> AlpacaTradeUpdates:
        return self

    async def __anext__(self) -> BrokerEvent:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        if self._task is None and not self._closed:
            self._start()
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # every later call ends the same way
            raise item.error
        if isinstance(item, TradeUpdate) and self._name_order is not None:
            item = msgspec.structs.replace(item, order=self._name_order(item.order))
        return item

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _start(self) -> None:
        self._stream = self._make_stream(self)
        self._task = asyncio.get_running_loop().create_task(
            self._stream._run_forever(),  # type: ignore[no-untyped-call]
            name="alpaca-trade-updates"
        )
        self._task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if self._closed:
            return
        # _run_forever only returns or raises on a bug or an exception in its own error
        # handling: surface it rather than leave the consumer waiting forever
        error = "stopped" if task.cancelled() or task.exception() is None else describe(
            task.exception(), self._secrets  # type: ignore[arg-type]
        )
        log.error("trade-updates stream task ended unexpectedly: %s", error)
        self._tracker.state = "closed"
        self._queue.put_nowait(
            _End(BrokerUnavailableError(f"trade-updates stream ended: {error}"))
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            task, stream = self._task, self._stream
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
                if not task.cancelled():
                    task.exception()  # retrieved: nothing to report on a deliberate close
            if stream is not None:
                await stream.close()
        finally:
            self._tracker.state = "closed"
            self._queue.put_nowait(_End(StopAsyncIteration()))  # wake a pending __anext__
            self._on_close(self)

    # --- called by EngineTradingStream (on our loop); none of these raise

    def _emit(self, event: BrokerEvent) -> None:
        self._queue.put_nowait(event)

    def on_connecting(self) -> None:
        self.listening_confirmed = False
        # "connecting" until the first listen, "reconnecting" after a loss; a refusal stays
        # visible until a connection succeeds
        if self._tracker.state in ("idle", "closed"):
            self._tracker.state = "connecting" if self._tracker.connects == 0 else "reconnecting"

    def on_connect_failed(self, exc: BaseException) -> None:
        t = self._tracker
        desc = describe(exc, self._secrets)
        t.last_error = desc
        if _is_refusal(exc):
            t.refusals += 1
            t.state = "refused"
            if not t.refused_streak:
                t.refused_streak = True
                log.error(
                    "trade-updates connection REFUSED (%s). Alpaca allows one trade-updates "
                    "connection per account: is another engine or session connected with "
                    "these keys? Retrying with backoff; no fills arrive until it connects.",
                    desc,
                )
                self._emit(
                    UnparsedMessage(
                        raw=desc,
                        error=f"{REFUSED_PREFIX}trade-updates handshake refused ({desc})",
                    )
                )
            elif t.refusals % 10 == 0:
                log.error("trade-updates connection still refused (%d times): %s",
                          t.refusals, desc)
        else:
            t.failures += 1
            if t.state != "refused":
                t.state = "connecting" if t.connects == 0 else "reconnecting"
            log.warning("trade-updates connection attempt failed: %s", desc)

    def on_disconnected(self, exc: BaseException) -> None:
        t = self._tracker
        t.disconnects += 1
        t.state = "reconnecting"
        t.last_error = describe(exc, self._secrets)
        log.warning(
            "trade-updates stream lost (%s): updates until the next connection are lost "
            "at Alpaca and must be filled from REST", t.last_error
        )

    def on_frame(self, frame: str | bytes) -> bool:
        """Parse one frame and queue what it means. True when it shows the connection is
        useful (an update or the listen confirmation). Never raises."""
        text = ""
        try:
            if isinstance(frame, (bytes, bytearray, memoryview)):
                raw = bytes(frame)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = raw.decode("utf-8", errors="replace")
                    self._emit(UnparsedMessage(raw=text, error="frame is not UTF-8"))
                    return False
            else:
                text = frame
            return self._on_message(text)
        except Exception as exc:  # noqa: BLE001 - a frame must never kill the reader
            self._emit(UnparsedMessage(raw=text, error=describe(exc, self._secrets)))
            return False

    def _on_message(self, text: str) -> bool:
        try:
            msg = json.loads(text, parse_float=Decimal)
        except ValueError as exc:
            self._emit(UnparsedMessage(raw=text, error=f"not JSON: {exc}"))
            return False
        if not isinstance(msg, dict):
            self._emit(UnparsedMessage(raw=text, error="not a JSON object"))
            return False
        stream = msg.get("stream")
        data = msg.get("data")
        if stream == "trade_updates":
            try:
                update = parse_trade_update(data)
            except AlpacaParseError as exc:
                self._emit(UnparsedMessage(raw=text, error=str(exc)))
                return True
            self._tracker.saw_update(update)
            self._emit(update)
            return True
        if stream == "listening":
            streams = data.get("streams") if isinstance(data, dict) else None
            if isinstance(streams, list) and "trade_updates" in streams:
                self.listening_confirmed = True
                self._emit(self._tracker.listening())
                return True
            log.error("trade-updates listen was not confirmed: %s", text[:_MAX_DESC])
            self._emit(UnparsedMessage(raw=text, error="listen not confirmed for trade_updates"))
            return False
        self._emit(UnparsedMessage(raw=text, error=f"unexpected message on the trade stream"
                                                   f" (stream={stream!r})"))
        return False
