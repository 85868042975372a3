"""FakeAlpaca: REST + trade-updates websocket + market-data websocket on 127.0.0.1.

The servers run on their own event loop in a background thread. Every public control
method is a plain synchronous, thread-safe call: it is executed on the fake's loop and
its result returned to the caller (see ``_call``). Waiting helpers (``wait_for*``)
block the *calling* thread only; from async tests use the ``async_wait_for*`` variants
so that your own loop keeps running.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import itertools
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

import msgpack
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from .broker import ApiError, Broker, Order, dec, iso, parse_dt
from .faults import Fault

log = logging.getLogger("fake_alpaca")

DEFAULT_SYMBOLS = ("AAPL", "MSFT", "SPY", "QQQ", "TSLA", "AMD", "NVDA", "F")
DEFAULT_KEY = "FAKEKEY0000000000000"
DEFAULT_SECRET = "FAKESECRET00000000000000000000000000000000"

#: (method, path regex, route name). The route name is what faults and the request log use.
ROUTES: list[tuple[str, str, str]] = [
    ("GET", r"/v2/account", "account"),
    ("GET", r"/v2/account/configurations", "account_configurations"),
    ("PATCH", r"/v2/account/configurations", "update_account_configurations"),
    ("GET", r"/v2/account/activities", "activities"),
    ("GET", r"/v2/account/activities/(?P<activity_type>[A-Za-z_,]+)", "activities"),
    ("POST", r"/v2/orders", "submit_order"),
    ("GET", r"/v2/orders", "list_orders"),
    ("DELETE", r"/v2/orders", "cancel_all_orders"),
    ("GET", r"/v2/orders:by_client_order_id", "get_order_by_client_id"),
    ("GET", r"/v2/orders/(?P<order_id>[^/]+)", "get_order"),
    ("PATCH", r"/v2/orders/(?P<order_id>[^/]+)", "replace_order"),
    ("DELETE", r"/v2/orders/(?P<order_id>[^/]+)", "cancel_order"),
    ("GET", r"/v2/positions", "list_positions"),
    ("DELETE", r"/v2/positions", "close_all_positions"),
    ("GET", r"/v2/positions/(?P<symbol>[^/]+)", "get_position"),
    ("DELETE", r"/v2/positions/(?P<symbol>[^/]+)", "close_position"),
    ("GET", r"/v2/assets", "list_assets"),
    ("GET", r"/v2/assets/(?P<symbol>[^/]+)", "get_asset"),
    ("GET", r"/v2/clock", "clock"),
    ("GET", r"/v2/calendar", "calendar"),
    ("GET", r"/v2/stocks/bars", "bars"),
    ("GET", r"/v2/stocks/bars/latest", "latest_bars"),
    ("GET", r"/v2/stocks/(?P<symbol>[^/]+)/bars", "symbol_bars"),
]
_COMPILED = [(m, re.compile(p), name) for m, p, name in ROUTES]
ROUTE_NAMES = sorted({name for _, _, name in ROUTES})

#: name -> "call" (runs on the fake's loop) | "wait" (blocks the caller) — the control API.
CONTROL_METHODS: dict[str, str] = {}

_DROP = object()  # a handler outcome: close the connection without answering
UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


def control(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Expose a method on the control API and run it on the fake's loop thread."""
    CONTROL_METHODS[fn.__name__] = "call"

    @functools.wraps(fn)
    def wrapper(self: FakeAlpaca, *args: Any, **kwargs: Any) -> Any:
        return self._call(fn, self, *args, **kwargs)

    return wrapper


def waiter(fn: Callable[..., Any]) -> Callable[..., Any]:
    CONTROL_METHODS[fn.__name__] = "wait"
    return fn


# --------------------------------------------------------------------------- records


@dataclass
class _HttpRequest:
    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            raise ApiError(400, 40010000, "request body format is invalid") from None


@dataclass
class _WsConn:
    kind: str  # "trade" | "data"
    id: int
    ws: ServerConnection
    record: dict[str, Any]
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    open: bool = True
    authenticated: bool = False
    listening: bool = False
    codec: str = "msgpack"  # data stream: codec the client used
    subs: dict[str, set[str]] = field(default_factory=dict)


DATA_CHANNELS = (
    "trades",
    "quotes",
    "bars",
    "updatedBars",
    "dailyBars",
    "statuses",
    "lulds",
    "corrections",
    "cancelErrors",
    "orderbooks",
    "news",
)


class _ClientFactories:
    """alpaca-py client constructors pointed at the fake (shared with the control client)."""

    api_key: str
    api_secret: str
    rest_url: str
    data_rest_url: str
    trading_stream_url: str
    data_stream_url: str

    def trading_client(
        self, *, retry_wait: float = 0.05, retry_attempts: int = 3, raw_data: bool = False
    ) -> Any:
        """A real ``TradingClient``. Its constructor takes no retry settings, so the
        private ``_retry_wait``/``_retry`` are set here (defaults: 3 s, 3 retries)."""
        from alpaca.trading.client import TradingClient

        client = TradingClient(
            self.api_key, self.api_secret, paper=True, url_override=self.rest_url, raw_data=raw_data
        )
        client._retry_wait = retry_wait
        client._retry = retry_attempts
        return client

    def historical_client(self, *, retry_wait: float = 0.05) -> Any:
        from alpaca.data.historical.stock import StockHistoricalDataClient

        client = StockHistoricalDataClient(
            self.api_key, self.api_secret, url_override=self.data_rest_url
        )
        client._retry_wait = retry_wait
        return client

    def trading_stream(
        self,
        *,
        reconnect_backoff: float = 0.05,
        raw_data: bool = False,
        websocket_params: dict | None = None,
    ) -> Any:
        from alpaca.trading.stream import TradingStream

        stream = TradingStream(
            self.api_key,
            self.api_secret,
            paper=True,
            raw_data=raw_data,
            url_override=self.trading_stream_url,
            websocket_params=websocket_params,
        )
        stream._reconnect_min_backoff = reconnect_backoff
        stream._reconnect_max_backoff = max(reconnect_backoff * 4, reconnect_backoff)
        return stream

    def data_stream(
        self,
        *,
        data_timeout: float | None = None,
        reconnect_backoff: float = 0.05,
        raw_data: bool = False,
    ) -> Any:
        from alpaca.data.live.stock import StockDataStream

        stream = StockDataStream(
            self.api_key,
            self.api_secret,
            raw_data=raw_data,
            url_override=self.data_stream_url,
            data_timeout=data_timeout,
        )
        stream._reconnect_min_backoff = reconnect_backoff
        stream._reconnect_max_backoff = max(reconnect_backoff * 4, reconnect_backoff)
        return stream


# --------------------------------------------------------------------------- the fake


class FakeAlpaca(_ClientFactories):
    """A fake Alpaca (Trading API v2 + market data) for alpaca-py 0.44 tests.

    Use as a context manager (``with FakeAlpaca() as fake:``) or ``start()``/``stop()``.
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_KEY,
        api_secret: str = DEFAULT_SECRET,
        host: str = "127.0.0.1",
        rest_port: int = 0,
        trade_stream_port: int = 0,
        data_stream_port: int = 0,
        cash: Any = "100000",
        multiplier: Any = "1",
        shorting_enabled: bool = False,
        pdt_fields: bool = False,
        symbols: Iterable[str] = DEFAULT_SYMBOLS,
        prices: dict[str, Any] | None = None,
        auto_accept: bool = True,
        auto_fill: bool = False,
        trade_stream_binary: bool = True,
        trade_stream_limit: str = "http429",
        data_feed_path: str = "/v2/iex",
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.host = host
        self._ports = (rest_port, trade_stream_port, data_stream_port)
        self.broker = Broker(
            cash=cash,
            multiplier=multiplier,
            shorting_enabled=shorting_enabled,
            pdt_fields=pdt_fields,
            symbols=symbols,
            prices=prices,
            auto_accept=auto_accept,
            auto_fill=auto_fill,
            on_update=self._publish_update,
        )
        self.trade_stream_binary = trade_stream_binary
        self._check_limit_mode(trade_stream_limit)
        self.trade_stream_limit = trade_stream_limit
        self.data_feed_path = data_feed_path

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._cond = threading.Condition()
        self._version = 0
        self._stopped = False

        # REST
        self._faults: list[Fault] = []
        self._requests: list[dict[str, Any]] = []
        self._req_seq = itertools.count(1)
        self._http_writers: set[asyncio.StreamWriter] = set()
        self._http_opened = 0
        self._hung: asyncio.Event | None = None

        # streams
        self._conn_seq = itertools.count(1)
        self._conns: dict[int, _WsConn] = {}
        self._conn_by_ws: dict[Any, _WsConn] = {}
        self._conn_records: list[dict[str, Any]] = []
        self._update_log: list[dict[str, Any]] = []
        self._update_seq = itertools.count(1)
        self._suppress_updates = False
        self._dup_remaining = 0
        self._reorder_armed = 0
        self._held: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self._drop_after_remaining = 0
        self._trade_block: int | None = None
        self._data_block: int | None = None
        self._data_mute: str | None = None
        self._data_log: list[dict[str, Any]] = []
        self._bars: dict[str, list[tuple[datetime, str | None, dict[str, Any]]]] = {}
        self._bars_page_size = 10000

        self.rest_url = self.data_rest_url = ""
        self.trading_stream_url = self.data_stream_url = ""
        self.control_url = ""

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> FakeAlpaca:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._thread_main, name="fake-alpaca", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("fake alpaca did not start in time")
        if self._startup_error is not None:
            raise RuntimeError("fake alpaca failed to start") from self._startup_error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._stopped:
            return
        self._stopped = True
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
        except Exception:  # pragma: no cover - best effort
            log.exception("fake alpaca shutdown failed")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _startup(self) -> None:
        loop = asyncio.get_running_loop()
        self._hung = asyncio.Event()
        self.broker.schedule = lambda delay, fn: loop.call_later(delay, self._run_and_notify, fn)
        rest_port, trade_port, data_port = self._ports
        self._http_server = await asyncio.start_server(self._http_connection, self.host, rest_port)
        self._trade_server = await ws_serve(
            self._trade_handler,
            self.host,
            trade_port,
            process_request=self._trade_process_request,
            close_timeout=1,
            ping_interval=None,
        )
        self._data_server = await ws_serve(
            self._data_handler,
            self.host,
            data_port,
            process_request=self._data_process_request,
            close_timeout=1,
            ping_interval=None,
        )
        rp = self._http_server.sockets[0].getsockname()[1]
        tp = next(iter(self._trade_server.sockets)).getsockname()[1]
        dp = next(iter(self._data_server.sockets)).getsockname()[1]
        self.rest_url = f"http://{self.host}:{rp}"
        self.data_rest_url = self.rest_url  # /v2/stocks/* does not collide with trading paths
        self.control_url = f"{self.rest_url}/_control"
        self.trading_stream_url = f"ws://{self.host}:{tp}/stream"
        self.data_stream_url = f"ws://{self.host}:{dp}{self.data_feed_path}"

    async def _shutdown(self) -> None:
        self._release_hung()
        self._http_server.close()
        for writer in list(self._http_writers):
            writer.transport.abort()
        self._trade_server.close()
        self._data_server.close()
        for server in (self._trade_server, self._data_server):
            try:
                await asyncio.wait_for(server.wait_closed(), 3)
            except TimeoutError:  # pragma: no cover
                pass

    def urls(self) -> dict[str, str]:
        return {
            "rest_url": self.rest_url,
            "data_rest_url": self.data_rest_url,
            "trading_stream_url": self.trading_stream_url,
            "data_stream_url": self.data_stream_url,
            "control_url": self.control_url,
            "api_key": self.api_key,
            "api_secret": self.api_secret,
        }

    # ------------------------------------------------------------------ threading helpers

    def _in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._loop is None:
            raise RuntimeError("FakeAlpaca is not started")
        if self._in_loop_thread():
            result = fn(*args, **kwargs)
            self._changed()
            return result
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 (re-raised in the caller)
                fut.set_exception(exc)
            finally:
                self._changed()

        self._loop.call_soon_threadsafe(run)
        return fut.result(timeout=30)

    def _run_and_notify(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        finally:
            self._changed()

    def _changed(self) -> None:
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    # ------------------------------------------------------------------ waiting

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 5.0, message: str = "condition"
    ) -> Any:
        """Block the calling thread until ``predicate()`` is truthy (re-checked on every
        state change of the fake). Returns the truthy value; raises TimeoutError."""
        if self._in_loop_thread():
            raise RuntimeError("wait_for cannot be called from the fake's own loop")
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                version = self._version
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
            with self._cond:
                if self._version == version:
                    self._cond.wait(min(remaining, 0.25))

    @waiter
    def state_version(self) -> int:
        """A counter bumped on every state change (for polling-free waits over HTTP)."""
        with self._cond:
            return self._version

    @waiter
    def wait_change(self, since: int, timeout: float = 5.0) -> int:
        """Block until the state version differs from ``since`` (or timeout); returns it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._version == since:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._version

    async def async_wait_for(
        self, predicate: Callable[[], Any], timeout: float = 5.0, message: str = "condition"
    ) -> Any:
        return await asyncio.to_thread(self.wait_for, predicate, timeout, message)

    @waiter
    def wait_for_trade_listeners(self, n: int = 1, timeout: float = 5.0) -> int:
        """Wait until at least ``n`` trade-updates connections are authenticated and listening."""
        return self.wait_for(
            lambda: self.trade_listener_count() >= n and self.trade_listener_count(),
            timeout,
            f"{n} trade_updates listener(s)",
        )

    async def async_wait_for_trade_listeners(self, n: int = 1, timeout: float = 5.0) -> int:
        return await asyncio.to_thread(self.wait_for_trade_listeners, n, timeout)

    @waiter
    def wait_for_data_subscription(
        self, symbol: str, channel: str = "bars", timeout: float = 5.0
    ) -> bool:
        return self.wait_for(
            lambda: self.data_subscribed(symbol, channel),
            timeout,
            f"data subscription {channel}:{symbol}",
        )

    async def async_wait_for_data_subscription(
        self, symbol: str, channel: str = "bars", timeout: float = 5.0
    ) -> bool:
        return await asyncio.to_thread(self.wait_for_data_subscription, symbol, channel, timeout)

    @waiter
    def wait_for_requests(
        self, route: str, n: int = 1, timeout: float = 5.0, answered: bool = False
    ) -> int:
        """Wait until ``n`` requests to ``route`` arrived (``answered``: and got a status)."""

        def count() -> int:
            return len(
                [
                    r
                    for r in self.requests_log(route=route)
                    if not answered or r["status"] is not None
                ]
            )

        return self.wait_for(lambda: count() >= n and count(), timeout, f"{n} {route} request(s)")

    @waiter
    def wait_for_order_status(self, order: str, status: str, timeout: float = 5.0) -> dict:
        return self.wait_for(
            lambda: (o := self.order(order))["status"] == status and o,
            timeout,
            f"order {order} to be {status}",
        )

    @waiter
    def wait_for_stream_connections(
        self, kind: str, n: int, state: str | None = None, timeout: float = 5.0
    ) -> int:
        """Wait until ``n`` connection records of ``kind`` ("trade"/"data") exist
        (optionally in ``state``: open/closed/refused)."""

        def count() -> int:
            return len(self.stream_connections(kind=kind, state=state))

        return self.wait_for(
            lambda: count() >= n and count(), timeout, f"{n} {kind} connection(s) in state {state}"
        )

    # ------------------------------------------------------------------ control: config

    @control
    def set_account(self, **fields: Any) -> dict:
        """cash, buying_power (pinned; None = computed), multiplier, status, trading_blocked,
        account_blocked, transfers_blocked, trade_suspended_by_user, shorting_enabled,
        pdt_fields, pattern_day_trader, daytrade_count, last_equity."""
        b = self.broker
        for key, value in fields.items():
            if key == "cash":
                b.cash = dec(value)
            elif key == "buying_power":
                b.buying_power_override = None if value is None else dec(value)
            elif key == "multiplier":
                b.multiplier = dec(value)
            elif key == "last_equity":
                b.last_equity = None if value is None else dec(value)
            elif key in (
                "status",
                "trading_blocked",
                "account_blocked",
                "transfers_blocked",
                "trade_suspended_by_user",
                "shorting_enabled",
                "pdt_fields",
                "pattern_day_trader",
                "daytrade_count",
            ):
                setattr(b, key, value)
            else:
                raise ValueError(f"unknown account field {key!r}")
        return b.account_json()

    @control
    def add_asset(self, symbol: str, **attrs: Any) -> dict:
        """Create or update an asset: tradable, fractionable, shortable, easy_to_borrow,
        marginable, status ("active"/"inactive"), exchange, name."""
        return self.broker.upsert_asset(symbol, **attrs).to_json()

    @control
    def set_price(self, symbol: str, price: Any) -> None:
        self.broker.set_price(symbol, price)

    @control
    def set_prices(self, prices: dict[str, Any]) -> None:
        for symbol, price in prices.items():
            self.broker.set_price(symbol, price)

    @control
    def set_auto_fill(self, enabled: bool = True, prices: dict[str, Any] | None = None) -> None:
        """Market (and marketable limit) orders fill in full right after acceptance at the
        symbol's price (``set_price``). Notional orders get qty = notional/price floored to
        9 decimals."""
        self.broker.auto_fill = enabled
        for symbol, price in (prices or {}).items():
            self.broker.set_price(symbol, price)

    @control
    def set_auto_accept(self, enabled: bool = True) -> None:
        """When off, new orders stay ``pending_new`` until ``accept(order)``."""
        self.broker.auto_accept = enabled

    @control
    def set_clock(
        self, is_open: bool | None = None, next_open: Any = None, next_close: Any = None
    ) -> dict:
        b = self.broker
        if is_open is not None:
            b.clock_is_open = is_open
        if next_open is not None:
            b.clock_next_open = parse_dt(next_open)
        if next_close is not None:
            b.clock_next_close = parse_dt(next_close)
        return b.clock_json()

    @control
    def set_now(self, now: Any = None) -> None:
        """Freeze the fake's clock at ``now`` (None: back to real UTC time)."""
        self.broker.frozen_now = None if now is None else parse_dt(now)

    @control
    def advance_time(self, seconds: float) -> str:
        b = self.broker
        b.frozen_now = b.now() + timedelta(seconds=seconds)
        return iso(b.frozen_now)  # type: ignore[return-value]

    @control
    def set_trade_stream_limit(self, mode: str) -> None:
        """What a second concurrent trade-updates connection gets: "http429" (default:
        handshake refused with HTTP 429), "auth_error" (handshake accepted, the
        authenticate reply is ``unauthorized`` and the socket is closed), "kick_old"
        (the new one wins, the old one is closed) or "allow"."""
        self._check_limit_mode(mode)
        self.trade_stream_limit = mode

    @staticmethod
    def _check_limit_mode(mode: str) -> None:
        if mode not in ("http429", "auth_error", "kick_old", "allow"):
            raise ValueError(f"bad trade stream limit mode {mode!r}")

    # ------------------------------------------------------------------ control: broker actions

    @control
    def fill(self, order: str, qty: Any = None, price: Any = None) -> dict:
        """Execute ``qty`` (None = all that remains) of an order (id or client_order_id) at
        ``price`` (None = the symbol's price). Updates order, position, cash, FILL activity,
        and pushes ``partial_fill``/``fill`` with a new ``execution_id``."""
        return self.broker.fill(self.broker.resolve(order), qty, price)

    @control
    def tick(self, symbol: str, price: Any) -> list[str]:
        """The market trades ``symbol`` at ``price``: trailing stops ratchet, stops and
        stop-limits trigger, working limits (take-profits) that are marketable fill, and a
        leg's fill cancels its sibling. Returns the ids of the orders that filled."""
        return self.broker.tick(symbol, price)

    @control
    def accept(self, order: str) -> dict:
        o = self.broker.resolve(order)
        self.broker.accept(o)
        self.broker.after_create(o)
        return o.to_json()

    @control
    def cancel(self, order: str) -> dict:
        """Broker-side cancel (no REST request): status canceled + ``canceled`` update."""
        o = self.broker.resolve(order)
        self.broker.broker_cancel(o)
        return o.to_json()

    @control
    def expire(self, order: str) -> dict:
        o = self.broker.resolve(order)
        self.broker.expire(o)
        return o.to_json()

    @control
    def reject(self, order: str) -> dict:
        o = self.broker.resolve(order)
        self.broker.reject(o)
        return o.to_json()

    @control
    def set_position(self, symbol: str, qty: Any, avg_price: Any = None) -> None:
        """Positions changed behind the engine's back (no trade update, cash untouched)."""
        if avg_price is None:
            avg_price = self.broker.price_of(symbol.upper()) or 0
        self.broker.set_position(symbol, qty, avg_price)

    @control
    def place_external_order(
        self,
        symbol: str,
        side: str,
        qty: Any = None,
        notional: Any = None,
        type: str = "limit",
        limit_price: Any = None,
        time_in_force: str = "day",
        client_order_id: str | None = None,
        notify: bool = True,
        validate: bool = True,
    ) -> dict:
        """An order at the broker that the engine did not send (dashboard, other bot).
        Pushes its ``new`` update unless ``notify=False``. ``validate=False`` skips the
        buying-power/qty checks."""
        body = {
            "symbol": symbol,
            "side": side,
            "type": type,
            "time_in_force": time_in_force,
            "qty": qty,
            "notional": notional,
            "limit_price": limit_price,
            "client_order_id": client_order_id,
        }
        b = self.broker
        saved = (b.buying_power_override, b.shorting_enabled)
        if not validate:
            b.buying_power_override, b.shorting_enabled = dec("1e12"), True
        try:
            order = b.validate_and_create(
                {k: v for k, v in body.items() if v is not None}, external=True
            )
        except ApiError as exc:
            raise ValueError(f"external order refused: {exc.status} {exc.message}") from None
        finally:
            b.buying_power_override, b.shorting_enabled = saved
        b.after_create(order, notify=notify)
        return order.to_json()

    @control
    def complete_pending_cancels(self) -> int:
        """Finish every cancel left ``pending_cancel`` by ``slow_cancels``."""
        return self.broker.complete_pending_cancels()

    # ------------------------------------------------------------------ control: inspection

    @control
    def account(self) -> dict:
        return self.broker.account_json()

    @control
    def orders(self, status: str = "all") -> list[dict]:
        """All orders, oldest first (``status``: all|open|closed)."""
        out = sorted(self.broker.orders.values(), key=lambda o: o.seq)
        if status == "open":
            out = [o for o in out if o.is_open]
        elif status == "closed":
            out = [o for o in out if not o.is_open]
        return [o.to_json() for o in out]

    @control
    def order(self, order: str) -> dict:
        return self.broker.order_json(self.broker.resolve(order))

    @control
    def legs(self, order: str) -> list[dict]:
        """A parent's legs (current ids: a replaced leg's replacement takes its place)."""
        return [leg.to_json() for leg in self.broker.legs_of(self.broker.resolve(order))]

    @control
    def positions(self) -> list[dict]:
        return [self.broker.position_json(p) for _, p in sorted(self.broker.positions.items())]

    @control
    def activities(self) -> list[dict]:
        return [a.to_json(self.broker.account_id) for a in self.broker.activities]

    @control
    def order_count_by_client_id(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.broker.orders.values():
            counts[o.client_order_id] = counts.get(o.client_order_id, 0) + 1
        return counts

    @control
    def submit_attempts_by_client_id(self) -> dict[str, int]:
        """How many POST /v2/orders carried each client_order_id (retries included)."""
        counts: dict[str, int] = {}
        for r in self._requests:
            if r["route"] == "submit_order" and isinstance(r["body"], dict):
                cid = r["body"].get("client_order_id")
                if cid:
                    counts[cid] = counts.get(cid, 0) + 1
        return counts

    @control
    def requests_log(
        self, route: str | None = None, method: str | None = None, path: str | None = None
    ) -> list[dict]:
        """Every REST request: seq, time, method, path, route, query, body, status (None if
        never answered), outcome (answered|closed|hung|pending), faults (ids applied)."""
        out = []
        for r in self._requests:
            if route and r["route"] != route:
                continue
            if method and r["method"] != method.upper():
                continue
            if path and r["path"] != path:
                continue
            out.append(dict(r))
        return out

    @control
    def request_count(self, route: str | None = None, method: str | None = None) -> int:
        return len(self.requests_log(route=route, method=method))

    @control
    def http_connections(self) -> dict[str, int]:
        """TCP connections to the REST port: ever ``opened`` and currently ``open``
        (requests.Session keeps connections alive, so opened << requests)."""
        return {"opened": self._http_opened, "open": len(self._http_writers)}

    @control
    def clear_requests_log(self) -> None:
        self._requests.clear()

    @control
    def stream_connections(self, kind: str | None = None, state: str | None = None) -> list[dict]:
        """Every websocket connection attempt: id, kind (trade|data), path, state
        (open|closed|refused), refused_reason, authenticated, listening (trade),
        subscriptions (data), opened_at, closed_at, close_reason."""
        out = []
        for rec in self._conn_records:
            if kind and rec["kind"] != kind:
                continue
            if state and rec["state"] != state:
                continue
            copy = dict(rec)
            copy["subscriptions"] = {k: sorted(v) for k, v in rec.get("subscriptions", {}).items()}
            out.append(copy)
        return out

    @control
    def trade_listener_count(self) -> int:
        return len(self._listening_trade_conns())

    @control
    def data_subscribed(self, symbol: str, channel: str = "bars") -> bool:
        return any(
            c.open
            and c.authenticated
            and (symbol in c.subs.get(channel, ()) or "*" in c.subs.get(channel, ()))
            for c in self._conns.values()
            if c.kind == "data"
        )

    @control
    def trade_updates_log(self) -> list[dict]:
        """Every trade update produced: seq, event, order_id, client_order_id, execution_id,
        delivered_to (connection ids, one entry per copy sent), suppressed, held."""
        return [dict(r) for r in self._update_log]

    @control
    def data_messages_log(self) -> list[dict]:
        return [dict(r) for r in self._data_log]

    # ------------------------------------------------------------------ control: REST faults

    @control
    def add_fault(
        self,
        route: str,
        kind: str,
        phase: str = "before",
        n: int | None = 1,
        status: int | None = None,
        code: int | None = None,
        message: str | None = None,
        body: Any = None,
        delay: float = 0.0,
    ) -> int:
        """Generic fault rule (see faults.py). ``route`` is a route name or "*";
        ``n=None`` keeps it active until removed. Returns the fault id."""
        if route != "*" and route not in ROUTE_NAMES:
            raise ValueError(f"unknown route {route!r}; one of {ROUTE_NAMES}")
        fault = Fault(
            route=route,
            kind=kind,
            phase=phase,
            remaining=n,
            status=status,
            code=code,
            message=message,
            body=body,
            delay=delay,
        )
        self._faults.append(fault)
        return fault.id

    def fail_next(
        self,
        route: str = "submit_order",
        status: int = 500,
        n: int | None = 1,
        after_handling: bool = False,
        code: int | None = None,
        message: str | None = None,
        body: Any = None,
    ) -> int:
        """Answer the next ``n`` requests to ``route`` with ``status``. ``after_handling``
        False: nothing happens at the broker (order NOT created); True: the request is
        processed (order IS created) and then the error is answered (ambiguous outcome)."""
        return self.add_fault(
            route, "error", "after" if after_handling else "before", n, status, code, message, body
        )

    def rate_limit_next(self, route: str = "*", n: int | None = 1) -> int:
        """HTTP 429 on the next ``n`` requests (alpaca-py retries 429 itself)."""
        return self.add_fault(route, "error", "before", n, 429)

    def reject_next_submit(
        self,
        status: int = 403,
        message: str = "insufficient buying power",
        code: int | None = None,
        n: int | None = 1,
    ) -> int:
        """The next ``n`` POST /v2/orders are refused (no order; the client id stays free)."""
        if code is None:
            code = 40310000 if status == 403 else 42210000 if status == 422 else status * 100000
        return self.add_fault("submit_order", "error", "before", n, status, code, message)

    def gateway_timeout_after_create(self, n: int = 1) -> int:
        """The order is created, then 504 is answered; alpaca-py retries the POST, which
        then hits ``client_order_id must be unique`` (422, code 40010001)."""
        return self.add_fault("submit_order", "error", "after", n, 504)

    def delay_next(
        self,
        route: str = "submit_order",
        seconds: float = 1.0,
        n: int | None = 1,
        before_handling: bool = False,
    ) -> int:
        """Delay the answer (the order IS created at once; ``before_handling=True``: the
        request is only processed after the delay)."""
        return self.add_fault(
            route, "delay", "before" if before_handling else "after", n, delay=seconds
        )

    def hang_next(
        self, route: str = "submit_order", n: int | None = 1, before_handling: bool = False
    ) -> int:
        """Process the request (order created) and never answer, until
        ``release_hung_requests()`` or stop (then the connection is closed)."""
        return self.add_fault(route, "hang", "before" if before_handling else "after", n)

    def close_next(
        self, route: str = "submit_order", n: int | None = 1, after_handling: bool = True
    ) -> int:
        """Close the connection without an answer (default: after creating the order)."""
        return self.add_fault(route, "close", "after" if after_handling else "before", n)

    for _name in (
        "fail_next",
        "rate_limit_next",
        "reject_next_submit",
        "gateway_timeout_after_create",
        "delay_next",
        "hang_next",
        "close_next",
    ):
        CONTROL_METHODS[_name] = "wait"  # composite: calls add_fault (thread-safe) itself
    del _name

    @control
    def remove_fault(self, fault_id: int) -> bool:
        before = len(self._faults)
        self._faults = [f for f in self._faults if f.id != fault_id]
        return len(self._faults) != before

    @control
    def clear_faults(self) -> None:
        """Remove every REST fault rule and reset every stream/cancel switch."""
        self._faults.clear()
        self._suppress_updates = False
        self._dup_remaining = 0
        self._reorder_armed = 0
        self._drop_after_remaining = 0
        self._trade_block = None
        self._data_block = None
        self._data_mute = None
        self.broker.slow_cancel = False
        self.broker.slow_cancel_delay = None
        self.broker.cancel_rejects.clear()
        self._flush_held()

    @control
    def faults(self, active_only: bool = False) -> list[dict]:
        """Fault rules in creation order with their ``hits`` (used-up ones included)."""
        return [f.to_json() for f in self._faults if f.active or not active_only]

    @control
    def release_hung_requests(self) -> int:
        """Close every connection held by a ``hang`` fault (no answer is ever sent)."""
        return self._release_hung()

    def _release_hung(self) -> int:
        n = sum(1 for r in self._requests if r["outcome"] == "hung")
        if self._hung is not None:
            self._hung.set()
            self._hung = asyncio.Event()
        return n

    # ------------------------------------------------------------------ control: cancel faults

    @control
    def slow_cancels(self, enabled: bool = True, delay: float | None = None) -> None:
        """DELETE /v2/orders/{id} answers 204 but the order only goes ``pending_cancel``
        (update pushed); it becomes ``canceled`` after ``delay`` seconds, or on
        ``complete_pending_cancels()`` when delay is None. Fills may still arrive meanwhile."""
        self.broker.slow_cancel = enabled
        self.broker.slow_cancel_delay = delay

    @control
    def reject_next_cancel(self, n: int = 1, mode: str = "422") -> None:
        """The next ``n`` cancel requests fail: mode "422" answers 422 "order is not
        cancelable"; mode "ignore" answers 204 but the order stays open and an
        ``order_cancel_rejected`` update is pushed."""
        if mode not in ("422", "ignore"):
            raise ValueError("mode must be '422' or 'ignore'")
        self.broker.cancel_rejects.extend([mode] * n)

    # ------------------------------------------------------------------ control: trade stream faults

    @control
    def duplicate_next_updates(self, n: int = 1) -> None:
        """Each of the next ``n`` trade updates is sent twice (same execution_id)."""
        self._dup_remaining += n

    @control
    def reorder_next_update(self) -> None:
        """Hold the next trade update and send it right after the one that follows it
        (``flush_held_updates()`` sends it if nothing follows)."""
        self._reorder_armed += 1

    @control
    def flush_held_updates(self) -> int:
        return self._flush_held()

    @control
    def drop_stream_after_next_update(self, n: int = 1) -> None:
        """After the next update has been sent, close every trade-updates connection
        (TCP close without a websocket close frame, like a network drop)."""
        self._drop_after_remaining += n

    @control
    def drop_trade_streams(self, graceful: bool = False) -> int:
        """Close every trade-updates connection now. Updates produced while no connection
        listens are lost for good (Alpaca does not replay)."""
        return self._drop_conns("trade", graceful)

    @control
    def suppress_updates(self, enabled: bool = True) -> None:
        """While on, trade updates are produced (orders, activities change) but never
        delivered, not even later: the stream stays up but silent."""
        self._suppress_updates = enabled

    @control
    def block_trade_stream(self, enabled: bool = True, status: int = 503) -> None:
        """Refuse new trade-updates handshakes with HTTP ``status`` (stream 'down')."""
        self._trade_block = status if enabled else None

    # ------------------------------------------------------------------ control: data stream

    @control
    def mute_data_stream(self, enabled: bool = True, handshake: bool = True) -> None:
        """Connected but mute: sockets stay open (pings answered) and nothing is sent.
        ``handshake=True``: connected/auth/subscription replies are still sent, only
        market data is swallowed; ``handshake=False``: nothing at all is sent (alpaca-py
        then waits forever for the 'connected' message; it has no timeout there)."""
        self._data_mute = None if not enabled else ("data" if handshake else "all")

    @control
    def drop_data_streams(self, graceful: bool = False) -> int:
        return self._drop_conns("data", graceful)

    @control
    def block_data_stream(self, enabled: bool = True, status: int = 503) -> None:
        self._data_block = status if enabled else None

    @control
    def push_bar(
        self,
        symbol: str,
        ts: Any,
        o: Any,
        h: Any,
        l: Any,
        c: Any,
        v: Any,
        n: int = 1,
        vw: Any = None,
        kind: str = "b",
    ) -> int:
        """Send a bar (``kind``: b bar, u updated bar, d daily bar) to every data connection
        subscribed to it. Returns how many connections got it."""
        msg = {
            "T": kind,
            "S": symbol.upper(),
            "o": float(o),
            "h": float(h),
            "l": float(l),
            "c": float(c),
            "v": int(v) if float(v).is_integer() else float(v),
            "t": parse_dt(ts),
            "n": int(n),
            "vw": float(vw if vw is not None else c),
        }
        channel = {"b": "bars", "u": "updatedBars", "d": "dailyBars"}[kind]
        return self._push_data(msg, channel)

    @control
    def push_data(self, message: dict) -> int:
        """Send any market-data message (``T`` and ``S`` set; ``t`` may be a datetime/ISO
        string and is sent as a msgpack Timestamp)."""
        msg = dict(message)
        if "t" in msg:
            msg["t"] = parse_dt(msg["t"])
        channel = {
            "t": "trades",
            "q": "quotes",
            "b": "bars",
            "u": "updatedBars",
            "d": "dailyBars",
            "s": "statuses",
            "l": "lulds",
        }.get(msg.get("T"), "bars")
        return self._push_data(msg, channel)

    @control
    def load_bars(self, symbol: str, bars: list, timeframe: str | None = None) -> int:
        """Historical bars for GET /v2/stocks/bars. Each bar: dict with t,o,h,l,c,v[,n,vw]
        or a tuple (t,o,h,l,c,v[,n[,vw]]). ``timeframe`` (e.g. "1Min", "1Day"): only
        served for that timeframe; None: served for any."""
        symbol = symbol.upper()
        rows = self._bars.setdefault(symbol, [])
        for bar in bars:
            if not isinstance(bar, dict):
                keys = ("t", "o", "h", "l", "c", "v", "n", "vw")
                bar = dict(zip(keys, bar))
            t = parse_dt(bar["t"])
            rec = {
                "t": t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "o": float(bar["o"]),
                "h": float(bar["h"]),
                "l": float(bar["l"]),
                "c": float(bar["c"]),
                "v": float(bar["v"]) if not float(bar["v"]).is_integer() else int(bar["v"]),
                "n": int(bar.get("n", 1)),
                "vw": float(bar.get("vw", bar["c"])),
            }
            rows.append((t, timeframe, rec))
        rows.sort(key=lambda r: r[0])
        return len(rows)

    @control
    def clear_bars(self) -> None:
        self._bars.clear()

    @control
    def set_bars_page_size(self, n: int = 10000) -> None:
        """Cap bars per page (Alpaca: 10000) so tests can exercise next_page_token."""
        self._bars_page_size = int(n)

    # ================================================================== REST server

    async def _http_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._http_writers.add(writer)
        self._http_opened += 1
        try:
            while True:
                req = await self._read_request(reader)
                if req is None:
                    break
                keep_alive = req.headers.get("connection", "").lower() != "close"
                if req.path.startswith("/_control"):
                    status, body, ctype = await self._control_http(req)
                else:
                    outcome = await self._handle_api(req)
                    if outcome is _DROP:
                        writer.close()
                        break
                    status, body, ctype = outcome
                writer.write(self._encode_response(status, body, ctype, keep_alive))
                await writer.drain()
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass
        finally:
            self._http_writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> _HttpRequest | None:
        line = await reader.readline()
        if not line:
            return None
        parts = line.decode("latin-1").strip().split(" ")
        if len(parts) != 3:
            raise ValueError("bad request line")
        method, target, _version = parts
        headers: dict[str, str] = {}
        while True:
            raw = await reader.readline()
            if not raw:
                raise ConnectionError("eof in headers")
            if raw in (b"\r\n", b"\n"):
                break
            key, _, value = raw.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        body = b""
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readline()
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readline()
            body = b"".join(chunks)
        split = urlsplit(target)
        query = {k: v for k, v in parse_qsl(split.query, keep_blank_values=True)}
        return _HttpRequest(method.upper(), target, unquote(split.path), query, headers, body)

    @staticmethod
    def _encode_response(status: int, body: Any, ctype: str, keep_alive: bool) -> bytes:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        headers = [
            f"HTTP/1.1 {status} {reason}",
            f"Date: {formatdate(usegmt=True)}",
            "Server: fake-alpaca",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
            f"X-Request-ID: {uuid.uuid4().hex}",
            "X-Ratelimit-Limit: 200",
        ]
        payload = b""
        if status != 204 and body is not None:
            if isinstance(body, bytes):
                payload = body
            elif isinstance(body, str):
                payload = body.encode()
            else:
                payload = json.dumps(body, separators=(",", ":"), default=str).encode()
            headers.append(f"Content-Type: {ctype}")
        if status != 204:
            headers.append(f"Content-Length: {len(payload)}")
        return ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + payload

    def _match(self, method: str, path: str) -> tuple[str | None, dict[str, str], bool]:
        path_known = False
        for m, rx, name in _COMPILED:
            mt = rx.fullmatch(path)
            if mt:
                path_known = True
                if m == method:
                    return name, mt.groupdict(), True
        return None, {}, path_known

    def _authorized(self, headers: dict[str, str]) -> bool:
        return (
            headers.get("apca-api-key-id") == self.api_key
            and headers.get("apca-api-secret-key") == self.api_secret
        )

    async def _handle_api(self, req: _HttpRequest) -> Any:
        route, params, path_known = self._match(req.method, req.path)
        try:
            body_json = json.loads(req.body) if req.body else None
        except ValueError:
            body_json = req.body.decode("utf-8", "replace")
        entry: dict[str, Any] = {
            "seq": next(self._req_seq),
            "time": iso(self.broker.now()),
            "method": req.method,
            "path": req.path,
            "route": route,
            "query": dict(req.query),
            "body": body_json,
            "status": None,
            "outcome": "pending",
            "faults": [],
        }
        self._requests.append(entry)
        self._changed()

        def answer(status: int, body: Any, ctype: str = "application/json; charset=UTF-8") -> Any:
            entry["status"] = status
            entry["outcome"] = "answered"
            self._changed()
            return status, body, ctype

        if route is None:
            if path_known:
                return answer(405, {"code": 40510000, "message": "method not allowed"})
            return answer(404, {"code": 40410000, "message": "endpoint not found"})
        if not self._authorized(req.headers):
            return answer(401, {"code": 40110000, "message": "request is not authorized"})

        early = await self._apply_faults(route, "before", entry)
        if early is not None:
            return early if early is _DROP else answer(*early)
        try:
            status, body = getattr(self, "_h_" + route)(req, params)
        except ApiError as exc:
            status, body = exc.status, exc.body()
        except Exception as exc:
            log.exception("fake alpaca handler %s failed", route)
            status = 500
            body = {
                "code": 50010000,
                "message": f"internal server error occurred (fake: {type(exc).__name__}: {exc})",
            }
        self._changed()
        if 200 <= status < 300:
            late = await self._apply_faults(route, "after", entry)
            if late is not None:
                return late if late is _DROP else answer(*late)
        return answer(status, body)

    async def _apply_faults(self, route: str, phase: str, entry: dict[str, Any]) -> Any:
        for fault in list(self._faults):
            if fault.phase != phase or not fault.matches(route):
                continue
            fault.consume()
            entry["faults"].append(fault.id)
            if fault.kind == "delay":
                await asyncio.sleep(fault.delay)
            elif fault.kind == "error":
                return fault.response()
            elif fault.kind == "close":
                entry["outcome"] = "closed"
                self._changed()
                return _DROP
            elif fault.kind == "hang":
                entry["outcome"] = "hung"
                self._changed()
                assert self._hung is not None
                await self._hung.wait()
                return _DROP
        return None

    # ------------------------------------------------------------------ REST handlers

    def _order_or_404(self, order_id: str) -> Order:
        if not UUID_RE.match(order_id):
            raise ApiError(422, 40010001, "order_id must be a valid UUID")
        order = self.broker.orders.get(order_id)
        if order is None:
            raise ApiError(404, 40410000, f"order not found for {order_id}")
        return order

    def _h_account(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        return 200, self.broker.account_json()

    def _h_account_configurations(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        return 200, self.broker.account_configurations_json()

    def _h_update_account_configurations(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        body = req.json() or {}
        if "no_shorting" in body and body["no_shorting"] is not None:
            self.broker.shorting_enabled = not body["no_shorting"]
        if body.get("suspend_trade") is not None:
            self.broker.trade_suspended_by_user = bool(body["suspend_trade"])
        return 200, self.broker.account_configurations_json()

    def _h_activities(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        types_text = p.get("activity_type") or req.query.get("activity_types")
        types = {t.strip().upper() for t in types_text.split(",")} if types_text else None
        known = {
            "FILL",
            "TRANS",
            "MISC",
            "ACATC",
            "ACATS",
            "CSD",
            "CSW",
            "DIV",
            "DIVCGL",
            "DIVCGS",
            "DIVFEE",
            "DIVFT",
            "DIVNRA",
            "DIVROC",
            "DIVTW",
            "DIVTXEX",
            "INT",
            "INTNRA",
            "INTTW",
            "JNL",
            "JNLC",
            "JNLS",
            "MA",
            "NC",
            "OPASN",
            "OPEXP",
            "OPXRC",
            "PTC",
            "PTR",
            "REORG",
            "SC",
            "SSO",
            "SSP",
            "CFEE",
            "FEE",
        }
        if types is not None and not types <= known:
            bad = min(types - known)
            raise ApiError(422, 40010001, f"invalid activity type: {bad}")
        try:
            return 200, self.broker.list_activities(req.query, types)
        except ValueError as exc:
            raise ApiError(422, 40010001, str(exc)) from None

    def _h_submit_order(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        order = self.broker.validate_and_create(req.json())
        snapshot = self.broker.order_json(order)  # answered as created (pending_new)
        self.broker.after_create(order)
        return 200, snapshot

    def _h_list_orders(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        try:
            orders = self.broker.list_orders(req.query)
        except ValueError as exc:
            raise ApiError(422, 40010001, str(exc)) from None
        nested = (req.query.get("nested") or "").lower() == "true"
        return 200, [self.broker.order_json(o, nested=nested) for o in orders]

    def _h_get_order(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        nested = (req.query.get("nested") or "").lower() == "true"
        return 200, self.broker.order_json(self._order_or_404(p["order_id"]), nested=nested)

    def _h_get_order_by_client_id(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        cid = req.query.get("client_order_id")
        if not cid:
            raise ApiError(422, 40010001, "client_order_id is required")
        order = self.broker.orders_by_cid.get(cid)
        if order is None:
            raise ApiError(404, 40410000, "order not found")
        return 200, self.broker.order_json(order)

    def _h_cancel_order(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        order = self._order_or_404(p["order_id"])
        self.broker.request_cancel(order)
        return 204, None

    def _h_cancel_all_orders(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        out = []
        for order in sorted(self.broker.orders.values(), key=lambda o: o.seq):
            if not order.is_open or order.status == "pending_cancel":
                continue
            try:
                self.broker.request_cancel(order)
                out.append({"id": order.id, "status": 200})
            except ApiError as exc:
                out.append({"id": order.id, "status": exc.status, "body": exc.body()})
        return 207, out

    def _h_replace_order(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        order = self._order_or_404(p["order_id"])
        return 200, self.broker.order_json(self.broker.replace(order, req.json() or {}))

    def _h_list_positions(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        b = self.broker
        return 200, [b.position_json(pos) for _, pos in sorted(b.positions.items())]

    def _find_position(self, symbol_or_id: str) -> Any:
        b = self.broker
        pos = b.positions.get(symbol_or_id.upper())
        if pos is None:
            pos = next((x for x in b.positions.values() if x.asset_id == symbol_or_id), None)
        if pos is None:
            raise ApiError(404, 40410000, "position does not exist")
        return pos

    def _h_get_position(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        return 200, self.broker.position_json(self._find_position(p["symbol"]))

    def _close_order_for(self, pos: Any, qty: Any = None, percentage: Any = None) -> Order:
        amount = abs(pos.qty)
        if qty is not None:
            amount = dec(qty)
        elif percentage is not None:
            amount = (abs(pos.qty) * dec(percentage) / 100).quantize(dec("1e-9"))
        body = {
            "symbol": pos.symbol,
            "side": "sell" if pos.qty > 0 else "buy",
            "type": "market",
            "time_in_force": "day",
            "qty": str(amount),
        }
        b = self.broker
        saved = b.buying_power_override
        if pos.qty < 0:  # buying to cover is always allowed
            b.buying_power_override = dec("1e12")
        try:
            order = b.validate_and_create(body)
        finally:
            b.buying_power_override = saved
        b.after_create(order)
        return order

    def _h_close_position(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        pos = self._find_position(p["symbol"])
        order = self._close_order_for(pos, req.query.get("qty"), req.query.get("percentage"))
        return 200, order.to_json()

    def _h_close_all_positions(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        if req.query.get("cancel_orders", "").lower() == "true":
            for order in list(self.broker.orders.values()):
                if order.is_open and order.status != "pending_cancel":
                    try:
                        self.broker.request_cancel(order)
                    except ApiError:
                        pass
        out = []
        for symbol, pos in sorted(self.broker.positions.items()):
            try:
                order = self._close_order_for(pos)
                out.append({"symbol": symbol, "status": 200, "body": order.to_json()})
            except ApiError as exc:
                out.append({"symbol": symbol, "status": exc.status, "body": exc.body()})
        return 207, out

    def _h_list_assets(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        q = req.query
        out = []
        for asset in sorted(self.broker.assets.values(), key=lambda a: a.symbol):
            if q.get("status") and asset.status != q["status"]:
                continue
            if q.get("asset_class") and asset.asset_class != q["asset_class"]:
                continue
            if q.get("exchange") and asset.exchange != q["exchange"]:
                continue
            out.append(asset.to_json())
        return 200, out

    def _h_get_asset(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        asset = self.broker.find_asset(p["symbol"])
        if asset is None:
            raise ApiError(404, 40410000, f"asset not found for {p['symbol']}")
        return 200, asset.to_json()

    def _h_clock(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        return 200, self.broker.clock_json()

    def _h_calendar(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        return 200, self.broker.calendar_json(req.query.get("start"), req.query.get("end"))

    # --- market data REST

    def _select_bars(self, symbols: list[str], q: dict[str, str]) -> list[tuple[str, dict]]:
        timeframe = q.get("timeframe")
        if not timeframe:
            raise ApiError(422, 42210000, "timeframe is required")
        start = parse_dt(q["start"]) if q.get("start") else None
        end = parse_dt(q["end"]) if q.get("end") else None
        desc = (q.get("sort") or "asc").lower() == "desc"
        items: list[tuple[str, dict]] = []
        for sym in sorted(set(symbols)):
            rows = [
                r
                for r in self._bars.get(sym, [])
                if (r[1] is None or r[1] == timeframe)
                and (start is None or r[0] >= start)
                and (end is None or r[0] <= end)
            ]
            if desc:
                rows.reverse()
            items.extend((sym, r[2]) for r in rows)
        return items

    def _page(self, items: list, q: dict[str, str]) -> tuple[list, str | None]:
        try:
            limit = int(q.get("limit") or 1000)
        except ValueError:
            raise ApiError(422, 42210000, "invalid limit") from None
        if limit < 1 or limit > 10000:
            raise ApiError(422, 42210000, "invalid limit: must be between 1 and 10000")
        limit = min(limit, self._bars_page_size)
        offset = 0
        if q.get("page_token"):
            try:
                offset = int(base64.urlsafe_b64decode(q["page_token"].encode()).decode())
            except ValueError:
                raise ApiError(422, 42210000, "invalid page token") from None
        page = items[offset : offset + limit]
        nxt = offset + limit
        token = base64.urlsafe_b64encode(str(nxt).encode()).decode() if nxt < len(items) else None
        return page, token

    def _h_bars(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        if not req.query.get("symbols"):
            raise ApiError(400, 40010000, "missing symbols")
        symbols = [s.strip().upper() for s in req.query["symbols"].split(",") if s.strip()]
        page, token = self._page(self._select_bars(symbols, req.query), req.query)
        out: dict[str, list] = {}
        for sym, bar in page:
            out.setdefault(sym, []).append(bar)
        return 200, {"bars": out, "next_page_token": token}

    def _h_symbol_bars(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        sym = p["symbol"].upper()
        page, token = self._page(self._select_bars([sym], req.query), req.query)
        return 200, {"bars": [b for _, b in page], "symbol": sym, "next_page_token": token}

    def _h_latest_bars(self, req: _HttpRequest, p: dict) -> tuple[int, Any]:
        symbols = [s.strip().upper() for s in req.query.get("symbols", "").split(",") if s.strip()]
        out = {s: self._bars[s][-1][2] for s in symbols if self._bars.get(s)}
        return 200, {"bars": out}

    # ------------------------------------------------------------------ control over HTTP

    async def _control_http(self, req: _HttpRequest) -> tuple[int, Any, str]:
        ctype = "application/json; charset=UTF-8"
        name = req.path[len("/_control") :].strip("/")
        if name in ("", "ping"):
            return 200, {"result": self.urls()}, ctype
        if name not in CONTROL_METHODS and name not in ("shutdown",):
            return (
                404,
                {"error": f"unknown control method {name!r}", "methods": sorted(CONTROL_METHODS)},
                ctype,
            )
        if name == "shutdown":
            cb = getattr(self, "_on_shutdown_request", None)
            if cb is not None:
                cb()
            return 200, {"result": True}, ctype
        try:
            kwargs = json.loads(req.body) if req.body else {}
            if not isinstance(kwargs, dict):
                raise TypeError("control body must be a JSON object of keyword arguments")
            result = await asyncio.to_thread(getattr(self, name), **kwargs)
            return 200, {"result": result}, ctype
        except Exception as exc:  # noqa: BLE001 (reported to the control client)
            return 400, {"error": str(exc), "type": type(exc).__name__}, ctype

    # ================================================================== trade-updates websocket

    def _new_record(self, kind: str, path: str) -> dict[str, Any]:
        rec = {
            "id": next(self._conn_seq),
            "kind": kind,
            "path": path,
            "state": "open",
            "refused_reason": None,
            "authenticated": False,
            "listening": False,
            "opened_at": iso(self.broker.now()),
            "closed_at": None,
            "close_reason": None,
        }
        if kind == "data":
            rec["subscriptions"] = {}
        self._conn_records.append(rec)
        self._changed()
        return rec

    def _refuse(self, rec: dict[str, Any], reason: str) -> None:
        rec["state"] = "refused"
        rec["refused_reason"] = reason
        rec["closed_at"] = iso(self.broker.now())
        self._changed()

    def _open_conns(self, kind: str) -> list[_WsConn]:
        return [c for c in self._conns.values() if c.kind == kind and c.open]

    def _listening_trade_conns(self) -> list[_WsConn]:
        return [c for c in self._open_conns("trade") if c.authenticated and c.listening]

    async def _trade_process_request(self, connection: ServerConnection, request: Any) -> Any:
        rec = self._new_record("trade", request.path)
        if self._trade_block is not None:
            self._refuse(rec, f"stream blocked (HTTP {self._trade_block})")
            return connection.respond(self._trade_block, "service unavailable\n")
        active = self._open_conns("trade")
        if active and self.trade_stream_limit == "http429":
            self._refuse(rec, "connection limit exceeded (HTTP 429)")
            return connection.respond(429, "connection limit exceeded\n")
        if active and self.trade_stream_limit == "kick_old":
            for old in active:
                self._close_conn(old, "replaced by a newer connection", graceful=True)
        conn = _WsConn("trade", rec["id"], connection, rec)
        self._conns[conn.id] = conn
        self._conn_by_ws[connection] = conn
        return None

    def _encode_trade(self, obj: dict[str, Any]) -> bytes | str:
        text = json.dumps(obj, separators=(",", ":"))
        return text.encode() if self.trade_stream_binary else text

    async def _sender(self, conn: _WsConn) -> None:
        ws = conn.ws
        try:
            while True:
                item = await conn.queue.get()
                if item[0] == "msg":
                    await ws.send(item[1])
                elif item[0] == "close":
                    _, graceful, code, reason = item
                    if graceful:
                        await ws.close(code, reason)
                    else:
                        ws.transport.close()  # flushes what was sent, then FIN: no close frame
                    return
        except (ConnectionClosed, ConnectionError):
            pass

    def _close_conn(
        self, conn: _WsConn, reason: str, graceful: bool = False, code: int = 1000
    ) -> None:
        if not conn.open:
            return
        conn.open = False
        conn.listening = False
        conn.record["state"] = "closed"
        conn.record["closed_at"] = iso(self.broker.now())
        conn.record["close_reason"] = reason
        conn.queue.put_nowait(("close", graceful, code, reason))
        self._changed()

    def _drop_conns(self, kind: str, graceful: bool) -> int:
        conns = self._open_conns(kind)
        for conn in conns:
            self._close_conn(conn, "dropped by test", graceful=graceful, code=1001)
        return len(conns)

    def _finish_conn(self, conn: _WsConn, reason: str) -> None:
        if conn.open:
            conn.open = False
            conn.listening = False
            conn.record["state"] = "closed"
            conn.record["closed_at"] = iso(self.broker.now())
            conn.record["close_reason"] = reason
        self._conns.pop(conn.id, None)
        self._conn_by_ws.pop(conn.ws, None)
        self._changed()

    async def _trade_handler(self, ws: ServerConnection) -> None:
        conn = self._conn_by_ws.get(ws)
        if conn is None:  # pragma: no cover
            return
        sender = asyncio.create_task(self._sender(conn))
        reason = "client closed"
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(msg, dict) or not conn.open:
                    continue
                action = msg.get("action")
                data = msg.get("data") or {}
                if action in ("authenticate", "auth"):
                    self._trade_auth(conn, data)
                elif action == "listen":
                    if not conn.authenticated:
                        self._send_trade(
                            conn,
                            {
                                "stream": "authorization",
                                "data": {"action": "listen", "status": "unauthorized"},
                            },
                        )
                        continue
                    streams = [s for s in (data.get("streams") or []) if s == "trade_updates"]
                    conn.listening = bool(streams)
                    conn.record["listening"] = conn.listening
                    self._send_trade(conn, {"stream": "listening", "data": {"streams": streams}})
                    self._changed()
        except ConnectionClosed:
            reason = "connection lost"
        finally:
            self._finish_conn(conn, reason)
            conn.queue.put_nowait(("close", True, 1000, ""))  # let the sender flush and end
            try:
                await asyncio.wait_for(sender, 2)
            except (TimeoutError, asyncio.CancelledError):
                sender.cancel()

    def _send_trade(self, conn: _WsConn, obj: dict[str, Any]) -> None:
        conn.queue.put_nowait(("msg", self._encode_trade(obj)))

    def _trade_auth(self, conn: _WsConn, data: dict[str, Any]) -> None:
        ok = data.get("key_id") == self.api_key and data.get("secret_key") == self.api_secret
        if ok and self.trade_stream_limit == "auth_error":
            others = [c for c in self._open_conns("trade") if c is not conn and c.authenticated]
            if others:
                self._send_trade(
                    conn,
                    {
                        "stream": "authorization",
                        "data": {
                            "action": "authenticate",
                            "status": "unauthorized",
                            "message": "connection limit exceeded",
                        },
                    },
                )
                self._close_conn(conn, "connection limit exceeded", graceful=True, code=1008)
                conn.record["state"] = "refused"
                conn.record["refused_reason"] = "connection limit exceeded (auth reply)"
                return
        if not ok:
            self._send_trade(
                conn,
                {
                    "stream": "authorization",
                    "data": {
                        "action": "authenticate",
                        "status": "unauthorized",
                        "message": "access key verification failed",
                    },
                },
            )
            self._close_conn(conn, "authentication failed", graceful=True, code=1008)
            return
        conn.authenticated = True
        conn.record["authenticated"] = True
        self._send_trade(
            conn,
            {"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}},
        )
        self._changed()

    # --- publishing trade updates (loop thread; called by the broker)

    def _publish_update(self, update: dict[str, Any]) -> None:
        order = update.get("order") or {}
        rec = {
            "seq": next(self._update_seq),
            "event": update["event"],
            "order_id": order.get("id"),
            "client_order_id": order.get("client_order_id"),
            "execution_id": update.get("execution_id"),
            "timestamp": update.get("timestamp"),
            "qty": update.get("qty"),
            "price": update.get("price"),
            "delivered_to": [],
            "suppressed": False,
            "held": False,
        }
        self._update_log.append(rec)
        if self._suppress_updates:
            rec["suppressed"] = True
            self._changed()
            return
        if self._reorder_armed > 0:
            self._reorder_armed -= 1
            rec["held"] = True
            self._held.append((update, rec))
            self._changed()
            return
        copies = 1
        if self._dup_remaining > 0:
            self._dup_remaining -= 1
            copies = 2
        self._deliver(update, rec, copies)
        self._flush_held()
        if self._drop_after_remaining > 0:
            self._drop_after_remaining -= 1
            for conn in self._open_conns("trade"):
                self._close_conn(conn, "dropped after update", graceful=False)
        self._changed()

    def _deliver(self, update: dict[str, Any], rec: dict[str, Any], copies: int) -> None:
        payload = self._encode_trade({"stream": "trade_updates", "data": update})
        for conn in self._listening_trade_conns():
            for _ in range(copies):
                conn.queue.put_nowait(("msg", payload))
                rec["delivered_to"].append(conn.id)

    def _flush_held(self) -> int:
        held, self._held = self._held, []
        for update, rec in held:
            self._deliver(update, rec, 1)
        return len(held)

    # ================================================================== market-data websocket

    async def _data_process_request(self, connection: ServerConnection, request: Any) -> Any:
        rec = self._new_record("data", request.path)
        if self._data_block is not None:
            self._refuse(rec, f"stream blocked (HTTP {self._data_block})")
            return connection.respond(self._data_block, "service unavailable\n")
        conn = _WsConn("data", rec["id"], connection, rec)
        conn.subs = {ch: set() for ch in DATA_CHANNELS}
        rec["subscriptions"] = conn.subs
        self._conns[conn.id] = conn
        self._conn_by_ws[connection] = conn
        return None

    def _send_data(
        self, conn: _WsConn, msgs: list[dict[str, Any]], control_msg: bool = True
    ) -> None:
        if self._data_mute == "all" or (self._data_mute == "data" and not control_msg):
            return
        if conn.codec == "json":

            def conv(v: Any) -> Any:
                return iso(v) if isinstance(v, datetime) else v

            payload: Any = json.dumps([{k: conv(v) for k, v in m.items()} for m in msgs])
        else:

            def conv_mp(v: Any) -> Any:
                return msgpack.Timestamp.from_datetime(v) if isinstance(v, datetime) else v

            payload = msgpack.packb([{k: conv_mp(v) for k, v in m.items()} for m in msgs])
        conn.queue.put_nowait(("msg", payload))

    def _subscription_msg(self, conn: _WsConn) -> dict[str, Any]:
        msg: dict[str, Any] = {"T": "subscription"}
        for ch in (
            "trades",
            "quotes",
            "bars",
            "updatedBars",
            "dailyBars",
            "statuses",
            "lulds",
            "corrections",
            "cancelErrors",
        ):
            msg[ch] = sorted(conn.subs.get(ch, ()))
        return msg

    async def _data_handler(self, ws: ServerConnection) -> None:
        conn = self._conn_by_ws.get(ws)
        if conn is None:  # pragma: no cover
            return
        sender = asyncio.create_task(self._sender(conn))
        reason = "client closed"
        self._send_data(conn, [{"T": "success", "msg": "connected"}])
        try:
            async for raw in ws:
                try:
                    if isinstance(raw, bytes):
                        conn.codec = "msgpack"
                        msg = msgpack.unpackb(raw)
                    else:
                        conn.codec = "json"
                        msg = json.loads(raw)
                except ValueError:  # msgpack's unpack errors are ValueErrors too
                    self._send_data(conn, [{"T": "error", "code": 400, "msg": "invalid syntax"}])
                    continue
                if not isinstance(msg, dict) or not conn.open:
                    continue
                action = msg.get("action")
                if action == "auth":
                    self._data_auth(conn, msg)
                elif action in ("subscribe", "unsubscribe"):
                    if not conn.authenticated:
                        self._send_data(
                            conn, [{"T": "error", "code": 401, "msg": "not authenticated"}]
                        )
                        continue
                    for ch in DATA_CHANNELS:
                        symbols = msg.get(ch) or []
                        if action == "subscribe":
                            conn.subs[ch].update(symbols)
                        else:
                            conn.subs[ch].difference_update(symbols)
                    self._send_data(conn, [self._subscription_msg(conn)])
                    self._changed()
                else:
                    self._send_data(conn, [{"T": "error", "code": 400, "msg": "invalid syntax"}])
        except ConnectionClosed:
            reason = "connection lost"
        finally:
            self._finish_conn(conn, reason)
            conn.queue.put_nowait(("close", True, 1000, ""))  # let the sender flush and end
            try:
                await asyncio.wait_for(sender, 2)
            except (TimeoutError, asyncio.CancelledError):
                sender.cancel()

    def _data_auth(self, conn: _WsConn, msg: dict[str, Any]) -> None:
        if conn.authenticated:
            self._send_data(conn, [{"T": "error", "code": 403, "msg": "already authenticated"}])
            return
        if msg.get("key") != self.api_key or msg.get("secret") != self.api_secret:
            self._send_data(conn, [{"T": "error", "code": 402, "msg": "auth failed"}])
            self._close_conn(conn, "auth failed", graceful=True, code=1008)
            return
        others = [c for c in self._open_conns("data") if c is not conn and c.authenticated]
        if others:
            self._send_data(conn, [{"T": "error", "code": 406, "msg": "connection limit exceeded"}])
            self._close_conn(conn, "connection limit exceeded", graceful=True, code=1008)
            conn.record["state"] = "refused"
            conn.record["refused_reason"] = "connection limit exceeded (406)"
            return
        conn.authenticated = True
        conn.record["authenticated"] = True
        self._send_data(conn, [{"T": "success", "msg": "authenticated"}])
        self._changed()

    def _push_data(self, msg: dict[str, Any], channel: str) -> int:
        symbol = msg.get("S")
        rec = {
            "seq": len(self._data_log) + 1,
            "T": msg.get("T"),
            "S": symbol,
            "t": iso(msg["t"]) if isinstance(msg.get("t"), datetime) else msg.get("t"),
            "delivered_to": [],
            "muted": self._data_mute is not None,
        }
        self._data_log.append(rec)
        if self._data_mute is not None:
            return 0
        for conn in self._open_conns("data"):
            subs = conn.subs.get(channel, set())
            if conn.authenticated and (symbol in subs or "*" in subs):
                self._send_data(conn, [msg], control_msg=False)
                rec["delivered_to"].append(conn.id)
        return len(rec["delivered_to"])
