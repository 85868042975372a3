"""`AlpacaBroker`: the `Broker` interface over alpaca-py 0.44 (REST in worker threads, trade
updates from the websocket), following the rule that **an ambiguous outcome is not a
rejection**.

alpaca-py 0.44 behaviours this module is built around (read from its source, exercised
against `tests/fake_alpaca`):

1. `TradingClient` is synchronous `requests` with **no HTTP timeout** and one shared
   `Session`. Every call runs via `anyio.to_thread.run_sync` (own capacity limiter) on a
   client checked out of a small pool, so no `Session` is used by two threads at once, and
   each session binds `timeout=(T, T)`; an outer deadline (2T + 1 s) abandons a
   thread that a trickling server keeps busy, and `aclose()` waits for such stragglers.
2. It **retries 429 and 504 three times with blocking 3 s sleeps, `POST /v2/orders`
   included**. A 504 after the order was created then turns into Alpaca's 422 40010001
   "client_order_id must be unique", hiding the real outcome, and the sleeps hold a thread
   outside any timeout or clock. We set `client._retry = 0`: a submit gets exactly one POST
   and its real answer; idempotent GETs are retried by us (429/5xx/timeout/disconnect,
   exponential backoff on the injected clock); a cancel is retried only after 429 (not
   processed), since a repeated DELETE would read "already canceled" as a refusal.
3. Its request models take `float` for qty/notional/limit_price. We POST/PATCH the JSON body
   ourselves through the client (`client.post("/orders", ...)`) with Decimal strings, use
   `raw_data=True` everywhere, and decode responses with `parse_float=Decimal`.
4. `APIError.code`/`.message` `json.loads` the body and raise on the edge's HTML 504: we read
   `.status_code` and parse the body defensively. Foreign exceptions are never chained
   (`from None`): a requests exception holds the request, whose headers hold the secret.
5. `cancel_order_by_id` returns nothing; the outcome arrives on the stream (or a GET).
6. There is no account-activities method: `fills_since` pages
   `GET /v2/account/activities/FILL` with the client's generic `get` and `page_token`.
7. `TradeAccount`'s PDT fields are optional and were removed by Alpaca on 2026-07-06:
   missing `pattern_day_trader`/`daytrade_count` become None.
8. `TradingStream.run()` is `asyncio.run`, `stop()` can take 5 s, the SDK reconnects forever
   with no replay and no "reconnected" signal, a refused second connection (one per account)
   is only logged, a bad update or a raising handler loses that update, and websockets logs
   the authenticate frame at DEBUG. See `alpaca_stream` for how each is handled: every
   (re)connection yields `StreamConnected`, unparsable frames become `UnparsedMessage`,
   refusals are visible in `stream_health` and as `UnparsedMessage("stream_refused: ...")`.

Gap filling (`orders_since`): Alpaca's `after` filters on `submitted_at`, so an older order
that changed during a disconnect would be missed. `orders_since(after)` therefore returns the
union of (a) orders submitted after `after`, (b) every currently open order, and (c) every
order with a FILL activity after `after` (fetched by id). Not covered: an order submitted
before `after` that was canceled/expired/rejected without a fill during the gap; the
execution service resolves its own in-flight orders missing from the result by client id.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

import anyio
import anyio.to_thread
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
from alpaca.trading.requests import (
    LimitOrderRequest,
    MarketOrderRequest,
    StopLimitOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
    TrailingStopOrderRequest,
)
from alpaca.trading.requests import (
    OrderRequest as OrderRequestBase,
)
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from engine.clock import Clock
from events.vocabulary import SIDES, is_positive, qty_notional_problem

from .alpaca_legs import LegNames, parent_of_leg_id
from .alpaca_parse import (
    AlpacaParseError,
    format_dec,
    format_ts,
    parse_account,
    parse_asset,
    parse_error_body,
    parse_fill_activity,
    parse_order,
    parse_position,
    step_back,
)
from .alpaca_stream import (
    AlpacaTradeUpdates,
    EngineTradingStream,
    StreamHealth,
    StreamTracker,
    describe,
    redact,
)
from .base import (
    AmbiguousSubmitError,
    BrokerAccount,
    BrokerAsset,
    BrokerFill,
    BrokerOrder,
    BrokerPosition,
    BrokerUnavailableError,
    CancelRejectedError,
    OrderNotFoundError,
    OrderRejectedError,
    OrderRequest,
)

__all__ = ["AlpacaBroker", "AlpacaConfig", "AlpacaTradeUpdates", "StreamHealth"]

log = logging.getLogger("engine.brokers.alpaca")

T = TypeVar("T")
MAX_CLIENT_ORDER_ID: Final = 48
ORDERS_PAGE: Final = 500  # Alpaca's maximum `limit` for GET /v2/orders
ACTIVITIES_PAGE: Final = 100  # Alpaca's maximum `page_size` without `date`
_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_DUPLICATE_ID_CODE: Final = 40010001


class AlpacaConfig(BaseModel):
    """Connection settings. Live trading (`paper=False`) must be opted into by the caller's
    settings; this class only selects endpoints."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: SecretStr
    secret_key: SecretStr
    paper: bool = True
    rest_url: str | None = None  # None: Alpaca's paper/live endpoint chosen by `paper`
    stream_url: str | None = None
    request_timeout_s: float = Field(10.0, gt=0)  # connect and read timeout of one request
    read_retries: int = Field(2, ge=0)  # extra attempts for idempotent reads
    retry_backoff_s: float = Field(0.5, ge=0)  # first read-retry delay, doubled each time
    max_concurrent_requests: int = Field(4, ge=1)
    reconnect_min_backoff_s: float = Field(1.0, gt=0)
    reconnect_max_backoff_s: float = Field(30.0, gt=0)
    handshake_timeout_s: float = Field(10.0, gt=0)  # websocket connect + auth + listen
    ping_interval_s: float = Field(10.0, gt=0)
    ping_timeout_s: float = Field(20.0, gt=0)  # the SDK's 180 s leaves a dead socket too long

    @model_validator(mode="after")
    def _backoff_order(self) -> Self:
        if self.reconnect_max_backoff_s < self.reconnect_min_backoff_s:
            raise ValueError("reconnect_max_backoff_s must be >= reconnect_min_backoff_s")
        return self


FailureKind = Literal["status", "timeout", "disconnect", "unparsable", "unknown"]


class _CallFailed(Exception):
    """One REST attempt failed; holds only credential-free facts, never the foreign
    exception (whose request carries the secret header)."""

    def __init__(
        self,
        kind: FailureKind,
        detail: str,
        *,
        status: int | None = None,
        code: int | None = None,
        message: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status
        self.code = code
        self.message = message


def _classify(exc: Exception, secrets: tuple[str, ...]) -> _CallFailed:
    if isinstance(exc, APIError):
        status = exc.status_code
        code, message = parse_error_body(str(exc))
        detail = f"HTTP {status}"
        if code is not None:
            detail += f" code {code}"
        detail += f": {message}" if message is not None else " (no Alpaca error body)"
        return _CallFailed(
            "status", redact(detail, secrets), status=status, code=code,
            message=None if message is None else redact(message, secrets),
        )
    if isinstance(exc, (requests.exceptions.Timeout, TimeoutError)):
        return _CallFailed("timeout", f"no answer in time ({describe(exc, secrets)})")
    if isinstance(exc, requests.exceptions.InvalidJSONError) or (
        # a 2xx body that is not JSON (requests.InvalidURL & co. are ValueErrors too)
        isinstance(exc, ValueError) and not isinstance(exc, requests.exceptions.RequestException)
    ):
        return _CallFailed("unparsable", f"unparsable answer ({describe(exc, secrets)})")
    if isinstance(exc, requests.exceptions.RequestException):
        return _CallFailed("disconnect", f"connection failed ({describe(exc, secrets)})")
    return _CallFailed("unknown", f"unexpected error ({describe(exc, secrets)})")


class _TimeoutSession(requests.Session):
    """The session alpaca-py uses, with the timeout it never passes and Decimal JSON."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._timeout = (timeout_s, timeout_s)

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["timeout"] = self._timeout
        response = super().request(method, url, *args, **kwargs)
        # alpaca-py calls response.json(); numbers must never become floats
        setattr(  # noqa: B010 - assigning to a method attribute is what we mean
            response, "json",
            functools.partial(requests.Response.json, response, parse_float=Decimal),
        )
        return response


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


class _NotFound:
    """Result of a read answered with a genuine HTTP 404."""


_NOT_FOUND: Final = _NotFound()


class AlpacaBroker:
    """Alpaca over alpaca-py. Use as `async with AlpacaBroker(config, clock=clock) as b:`
    or call `aclose()`; closing ends the trade-updates stream and waits for REST threads."""

    name = "alpaca"
    external = True  # orders live at Alpaca: submit records are made durable first

    def __init__(self, config: AlpacaConfig, *, clock: Clock) -> None:
        self._cfg = config
        self._clock = clock
        self._secrets = (config.secret_key.get_secret_value(),)
        # a pool rather than thread-locals: anyio retires idle worker threads, which would
        # strand a client (and its keep-alive sockets) per retired thread
        self._clients: list[TradingClient] = []  # every client made, closed by aclose()
        self._idle_clients: list[TradingClient] = []
        self._clients_lock = threading.Lock()
        self._inflight = 0
        self._idle = threading.Condition()
        self._limiter: anyio.CapacityLimiter | None = None
        self._deadline_s = 2 * config.request_timeout_s + 1.0
        self._tracker = StreamTracker(clock)
        self._legs = LegNames()
        self._updates: AlpacaTradeUpdates | None = None
        self._closed = False
        if not config.paper:
            log.warning("AlpacaBroker uses Alpaca's LIVE endpoints: orders move real money")

    def __repr__(self) -> str:
        return (
            f"AlpacaBroker(paper={self._cfg.paper}, rest_url={self._cfg.rest_url!r}, "
            f"stream_url={self._cfg.stream_url!r}, closed={self._closed})"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def stream_health(self) -> StreamHealth:
        return self._tracker.health()

    @property
    def inflight_requests(self) -> int:
        """REST calls currently running in worker threads (0 after `aclose()`)."""
        with self._idle:
            return self._inflight

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._updates is not None:
            await self._updates.aclose()
        # threads abandoned by the outer deadline end within their socket timeout
        await anyio.to_thread.run_sync(self._wait_idle, self._deadline_s)
        with self._clients_lock:
            clients, self._clients, self._idle_clients = self._clients, [], []
        for client in clients:
            client._session.close()

    # ------------------------------------------------------------------ REST plumbing

    def _new_client(self) -> TradingClient:
        cfg = self._cfg
        client = TradingClient(
            cfg.key_id.get_secret_value(),
            cfg.secret_key.get_secret_value(),
            paper=cfg.paper,
            raw_data=True,
            url_override=cfg.rest_url,
        )
        client._retry = 0  # see point 2 of the module docstring
        client._session.close()
        client._session = _TimeoutSession(cfg.request_timeout_s)
        return client

    @contextmanager
    def _checkout(self) -> Iterator[TradingClient]:
        """A client for this thread alone; counted in flight until it is back."""
        with self._idle:
            self._inflight += 1
        client: TradingClient | None = None
        try:
            with self._clients_lock:
                if self._closed:
                    raise BrokerUnavailableError("AlpacaBroker is closed")
                if self._idle_clients:
                    client = self._idle_clients.pop()
            if client is None:
                client = self._new_client()
                with self._clients_lock:
                    self._clients.append(client)
            yield client
        finally:
            if client is not None:
                with self._clients_lock:
                    if self._closed:
                        client._session.close()
                    else:
                        self._idle_clients.append(client)
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def _wait_idle(self, timeout_s: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout_s)

    async def _attempt(self, op: str, fn: Callable[[TradingClient], T]) -> T:
        """One REST call in a worker thread, bounded by our timeouts."""
        if self._closed:
            raise BrokerUnavailableError(f"{op}: AlpacaBroker is closed")
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._cfg.max_concurrent_requests)

        def work() -> T:
            with self._checkout() as client:
                return fn(client)

        try:
            with anyio.fail_after(self._deadline_s):
                return await anyio.to_thread.run_sync(
                    work, abandon_on_cancel=True, limiter=self._limiter
                )
        except BrokerUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none lost
            failure = _classify(exc, self._secrets)
        raise failure  # outside the except block: no implicit chaining to the foreign error

    async def _read(self, op: str, fn: Callable[[TradingClient], Any], *,
                    not_found_ok: bool = False) -> Any:
        """An idempotent read, retried on 429/5xx/timeout/disconnect with backoff."""
        attempts = 1 + self._cfg.read_retries
        for attempt in range(attempts):
            try:
                return await self._attempt(op, fn)
            except _CallFailed as failure:
                if not_found_ok and failure.status == 404:
                    return _NOT_FOUND
                retryable = failure.kind in ("timeout", "disconnect") or (
                    failure.status in _RETRY_STATUSES
                )
                if not retryable or attempt + 1 >= attempts:
                    raise BrokerUnavailableError(f"{op}: {failure.detail}") from None
                delay = self._cfg.retry_backoff_s * (2**attempt)
                log.warning("%s failed (%s); retry %d/%d in %.2fs", op, failure.detail,
                            attempt + 1, attempts - 1, delay)
            await self._clock.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _parse_list(raw: Any, parse: Callable[[Any], T], op: str) -> list[T]:
        if not isinstance(raw, list):
            raise BrokerUnavailableError(f"{op}: expected a list, got {type(raw).__name__}")
        try:
            return [parse(item) for item in raw]
        except AlpacaParseError as exc:
            raise BrokerUnavailableError(f"{op}: unparsable answer: {exc}") from None

    @staticmethod
    def _parse_one(raw: Any, parse: Callable[[Any], T], op: str) -> T:
        try:
            return parse(raw)
        except AlpacaParseError as exc:
            raise BrokerUnavailableError(f"{op}: unparsable answer: {exc}") from None

    # ------------------------------------------------------------------ orders

    @staticmethod
    def _check_client_order_id(cid: str) -> None:
        if not cid or len(cid) > MAX_CLIENT_ORDER_ID:
            raise OrderRejectedError(
                f"not sent: client_order_id must be 1..{MAX_CLIENT_ORDER_ID} characters "
                f"(got {len(cid)})"
            )

    @classmethod
    def _order_body(cls, r: OrderRequest) -> dict[str, Any]:
        """The POST /v2/orders body, shaped by alpaca-py's own request type for the order
        (Market/Limit/Stop/StopLimit/TrailingStopOrderRequest, with `order_class` and
        TakeProfitRequest/StopLossRequest legs), so its validation and field names are the
        SDK's; the amounts are then sent as our exact Decimal strings, never its floats.
        Refusing locally what Alpaca would refuse is a certain rejection (nothing was sent)."""
        cls._check_client_order_id(r.client_order_id)
        if r.side not in SIDES:
            raise OrderRejectedError(f"not sent: bad side {r.side!r}")
        if qty_notional_problem(r.qty, r.notional):
            raise OrderRejectedError("not sent: exactly one of qty and notional is required")
        amount = r.qty if r.qty is not None else r.notional
        assert amount is not None
        exact: dict[str, Decimal | None] = {
            "qty": r.qty, "notional": r.notional, "limit_price": r.limit_price,
            "stop_price": r.stop_price, "trail_price": r.trail_price,
            "trail_percent": r.trail_percent}
        for name, value in exact.items():
            if value is not None and not is_positive(value):
                raise OrderRejectedError(f"not sent: {name} must be > 0 (got {value})")
        if r.order_type == "market" and r.limit_price is not None:
            raise OrderRejectedError("not sent: a market order has no limit_price")
        if r.order_class != "simple" and r.take_profit is None and r.stop_loss is None:
            raise OrderRejectedError(f"not sent: a {r.order_class} order needs its legs")
        if r.order_class == "simple" and (r.take_profit or r.stop_loss or r.legs):
            raise OrderRejectedError("not sent: legs need order_class bracket, oco or oto")
        try:
            request = sdk_request(r)
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise OrderRejectedError(f"not sent: {_first_line(exc)}") from None
        body: dict[str, Any] = {}
        for key, value in request.to_request_fields().items():
            if key in exact:
                value = exact[key]
                body[key] = format_dec(value) if value is not None else None
            elif key == "take_profit":
                assert r.take_profit is not None
                body[key] = {"limit_price": format_dec(r.take_profit.limit_price)}
            elif key == "stop_loss":
                assert r.stop_loss is not None
                leg = {"stop_price": format_dec(r.stop_loss.stop_price)}
                if r.stop_loss.limit_price is not None:
                    leg["limit_price"] = format_dec(r.stop_loss.limit_price)
                body[key] = leg
            else:
                body[key] = getattr(value, "value", value)  # enums as Alpaca's strings
        body["client_order_id"] = r.client_order_id
        return {k: v for k, v in body.items() if v is not None}

    @staticmethod
    def _submit_failure(f: _CallFailed, what: str) -> Exception:
        """Only an answer that proves the order was not accepted is a rejection."""
        if f.kind == "status":
            status = f.status or 0
            if status == 422 and f.code == _DUPLICATE_ID_CODE and f.message is not None and (
                "client_order_id" in f.message and "unique" in f.message.lower()
            ):
                return AmbiguousSubmitError(
                    "duplicate_id", f"{what}: {f.detail} (an order with this id may exist)"
                )
            if status == 422 and f.code is None and f.message is None:
                # cannot tell whether this is the duplicate-id answer
                return AmbiguousSubmitError("unparsable", f"{what}: {f.detail}")
            if status in (400, 401, 403, 422):
                return OrderRejectedError(f"{what} rejected: {f.detail}", status=status,
                                          code=f.code)
            if status == 429:
                return AmbiguousSubmitError("rate_limited", f"{what}: {f.detail}")
            return AmbiguousSubmitError("server_error", f"{what}: {f.detail}")
        kind = {"timeout": "timeout", "disconnect": "disconnect",
                "unparsable": "unparsable"}.get(f.kind, "unknown")
        return AmbiguousSubmitError(kind, f"{what}: {f.detail}")

    async def submit(self, request: OrderRequest) -> BrokerOrder:
        body = self._order_body(request)
        what = f"submit {request.client_order_id}"
        try:
            raw = await self._attempt("submit_order", lambda c: c.post("/orders", body))
        except _CallFailed as failure:
            error = self._submit_failure(failure, what)
        else:
            try:
                order = self._legs.name(parse_order(raw))
            except AlpacaParseError as exc:
                error = AmbiguousSubmitError("unparsable", f"{what}: unparsable answer: {exc}")
            else:
                if order.client_order_id == request.client_order_id:
                    return order
                error = AmbiguousSubmitError(
                    "unparsable", f"{what}: answer is for client_order_id "
                    f"{order.client_order_id!r}"
                )
        raise error

    async def cancel(self, broker_order_id: str) -> None:
        """Request a cancel; the result arrives as a `canceled` (or `order_cancel_rejected`)
        update. Raises CancelRejectedError when refused, OrderNotFoundError for an unknown
        id, BrokerUnavailableError when the outcome is unknown."""
        if not _is_uuid(broker_order_id):
            raise OrderNotFoundError(f"cancel: {broker_order_id!r} is not an Alpaca order id")
        what = f"cancel {broker_order_id}"
        attempts = 1 + self._cfg.read_retries
        for attempt in range(attempts):
            try:
                await self._attempt(
                    "cancel_order", lambda c: c.cancel_order_by_id(broker_order_id)
                )
                return
            except _CallFailed as failure:
                f = failure
            if f.status == 404:
                raise OrderNotFoundError(f"{what}: {f.detail}")
            if f.status in (400, 401, 403, 422):
                raise CancelRejectedError(f"{what} refused: {f.detail}")
            if f.status != 429 or attempt + 1 >= attempts:
                raise BrokerUnavailableError(
                    f"{what}: outcome unknown ({f.detail}); the stream or a lookup will tell"
                )
            # 429 means the request was not processed: retrying cannot double anything
            await self._clock.sleep(self._cfg.retry_backoff_s * (2**attempt))

    async def replace(
        self,
        broker_order_id: str,
        *,
        qty: Decimal | None = None,
        limit_price: Decimal | None = None,
        client_order_id: str | None = None,
        stop_price: Decimal | None = None,
        trail: Decimal | None = None,
    ) -> BrokerOrder:
        """PATCH an order; returns the new order (Alpaca replaces by creating one). Errors
        follow `submit`'s rules: the new order may exist unless the answer proves not.
        `stop_price` / `trail` move a stop (Alpaca's PATCH fields of the same names)."""
        if not _is_uuid(broker_order_id):
            raise OrderNotFoundError(f"replace: {broker_order_id!r} is not an Alpaca order id")
        body: dict[str, str] = {}
        if qty is not None:
            if not is_positive(qty):
                raise OrderRejectedError(f"not sent: qty must be > 0 (got {qty})")
            body["qty"] = format_dec(qty)
        if limit_price is not None:
            if not is_positive(limit_price):
                raise OrderRejectedError(f"not sent: limit_price must be > 0 (got {limit_price})")
            body["limit_price"] = format_dec(limit_price)
        for name, value in (("stop_price", stop_price), ("trail", trail)):
            if value is not None:
                if not is_positive(value):
                    raise OrderRejectedError(f"not sent: {name} must be > 0 (got {value})")
                body[name] = format_dec(value)
        if client_order_id is not None:
            self._check_client_order_id(client_order_id)
            body["client_order_id"] = client_order_id
        if not body:
            raise OrderRejectedError("not sent: replace needs qty, limit_price or client_order_id")
        what = f"replace {broker_order_id}"
        try:
            raw = await self._attempt(
                "replace_order", lambda c: c.patch(f"/orders/{broker_order_id}", body)
            )
        except _CallFailed as failure:
            if failure.status == 404:
                error: Exception = OrderNotFoundError(f"{what}: {failure.detail}")
            else:
                error = self._submit_failure(failure, what)
        else:
            try:
                return self._legs.name(parse_order(raw))
            except AlpacaParseError as exc:
                error = AmbiguousSubmitError("unparsable", f"{what}: unparsable answer: {exc}")
        raise error

    async def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        """The order (with its legs) by our client id. A leg of ours is not known to Alpaca
        by that id (Alpaca names legs itself): it is found by its broker id once seen, else
        through its parent."""
        broker_id = self._legs.broker_id_of(client_order_id)
        if broker_id is not None:
            return await self._get_order(broker_id)
        raw = await self._read(
            "get_order_by_client_id",
            lambda c: c.get_order_by_client_id(client_order_id),
            not_found_ok=True,
        )
        if raw is not _NOT_FOUND:
            found = self._legs.name(self._parse_one(raw, parse_order, "get_order_by_client_id"))
            if found.order_class != "simple" and not found.legs:
                found = await self._get_order(found.broker_order_id)  # its legs, nested
            return found
        parent_id = parent_of_leg_id(client_order_id)
        if parent_id is None:
            return None
        parent = await self.get_order_by_client_id(parent_id)
        if parent is None:
            return None
        return next((leg for leg in parent.with_legs()
                     if leg.client_order_id == client_order_id), None)

    async def get_order(self, broker_order_id: str) -> BrokerOrder | None:
        """An order by Alpaca's id (legs nested), or None when Alpaca has no such order."""
        if not _is_uuid(broker_order_id):
            return None
        raw = await self._read("get_order", lambda c: c.get(f"/orders/{broker_order_id}",
                                                            {"nested": "true"}),
                               not_found_ok=True)
        if raw is _NOT_FOUND:
            return None
        return self._legs.name(self._parse_one(raw, parse_order, "get_order"))

    async def _get_order(self, broker_order_id: str) -> BrokerOrder:
        raw = await self._read("get_order", lambda c: c.get(f"/orders/{broker_order_id}",
                                                            {"nested": "true"}))
        return self._legs.name(self._parse_one(raw, parse_order, "get_order"))

    async def _list_orders(self, status: str, after: datetime | None) -> dict[str, BrokerOrder]:
        """GET /v2/orders, all pages, ascending by submitted_at. Alpaca's `after` is
        exclusive, so each next page starts 1 µs before the last one's timestamp and
        orders are deduplicated by id (ties at a page boundary are not lost)."""
        out: dict[str, BrokerOrder] = {}
        cursor = after
        while True:
            params: dict[str, str | int] = {"status": status, "direction": "asc",
                                            "limit": ORDERS_PAGE, "nested": "true"}
            if cursor is not None:
                params["after"] = format_ts(cursor)
            raw = await self._read("list_orders", functools.partial(_get, "/orders", params))
            page = [self._legs.name(o)
                    for o in self._parse_list(raw, parse_order, "list_orders")]
            fresh = [o for o in page if o.broker_order_id not in out]
            out.update((o.broker_order_id, o) for o in page)
            if len(page) < ORDERS_PAGE:
                return out
            last = max((o.submitted_at for o in page if o.submitted_at is not None),
                       default=None)
            if not fresh or last is None:
                raise BrokerUnavailableError(
                    f"list_orders: cannot page past {len(page)} orders with one timestamp"
                )
            cursor = step_back(last)

    async def open_orders(self) -> list[BrokerOrder]:
        """Every open order, legs included as orders of their own (under our leg ids; each
        still nested in its parent too). Listed `nested=true`, so legs come with parents."""
        return [o for o in _flat(await self._list_orders("open", None)) if o.is_open]

    async def orders_since(self, after: datetime) -> list[BrokerOrder]:
        """Orders submitted after `after`, plus every open order, plus every order with a
        fill after `after` (see the module docstring for what this does not cover)."""
        orders = await self._list_orders("all", after)
        orders.update(await self._list_orders("open", None))
        known = {x.broker_order_id for x in _flat(orders)}
        for fill in await self.fills_since(after):
            if fill.broker_order_id not in known:
                orders[fill.broker_order_id] = await self._get_order(fill.broker_order_id)
        return _flat(orders)

    async def fills_since(self, after: datetime) -> list[BrokerFill]:
        """FILL activities with transaction_time after `after`, oldest first. Note: an
        activity id is not the stream's execution_id; match them by (order, cum_qty)."""
        fills: list[BrokerFill] = []
        seen: set[str] = set()
        token: str | None = None
        while True:
            params: dict[str, str | int] = {"after": format_ts(after), "direction": "asc",
                                            "page_size": ACTIVITIES_PAGE}
            if token is not None:
                params["page_token"] = token
            raw = await self._read(
                "fill_activities", functools.partial(_get, "/account/activities/FILL", params)
            )
            page = self._parse_list(raw, parse_fill_activity, "fill_activities")
            for fill in page:
                if fill.activity_id not in seen:
                    seen.add(fill.activity_id)
                    fills.append(fill)
            if len(page) < ACTIVITIES_PAGE:
                return fills
            token = page[-1].activity_id

    # ------------------------------------------------------------------ account

    async def positions(self) -> list[BrokerPosition]:
        raw = await self._read("positions", lambda c: c.get_all_positions())
        return self._parse_list(raw, parse_position, "positions")

    async def account(self) -> BrokerAccount:
        raw = await self._read("account", lambda c: c.get_account())
        return self._parse_one(raw, parse_account, "account")

    async def asset(self, symbol: str) -> BrokerAsset | None:
        raw = await self._read("asset", lambda c: c.get_asset(symbol), not_found_ok=True)
        if raw is _NOT_FOUND:
            return None
        return self._parse_one(raw, parse_asset, "asset")

    # ------------------------------------------------------------------ stream

    def trade_updates(self) -> AlpacaTradeUpdates:
        """The trade-updates stream: `StreamConnected` on every (re)connection, then
        `TradeUpdate`s as they arrive (duplicates and out-of-order ones included), and
        `UnparsedMessage` for anything else. One open iterator at a time (Alpaca allows
        one trade-updates connection per account); close it with `aclose()`."""
        if self._closed:
            raise BrokerUnavailableError("AlpacaBroker is closed")
        if self._updates is not None and not self._updates.closed:
            raise RuntimeError(
                "a trade_updates() iterator is already open; Alpaca allows one "
                "trade-updates connection per account"
            )
        self._updates = AlpacaTradeUpdates(
            make_stream=self._make_stream,
            tracker=self._tracker,
            secrets=self._secrets,
            on_close=self._updates_closed,
            name_order=self._legs.name,
        )
        return self._updates

    def _make_stream(self, sink: AlpacaTradeUpdates) -> EngineTradingStream:
        cfg = self._cfg
        return EngineTradingStream(
            key_id=cfg.key_id.get_secret_value(),
            secret_key=cfg.secret_key.get_secret_value(),
            paper=cfg.paper,
            url=cfg.stream_url,
            sink=sink,
            clock=self._clock,
            min_backoff_s=cfg.reconnect_min_backoff_s,
            max_backoff_s=cfg.reconnect_max_backoff_s,
            handshake_timeout_s=cfg.handshake_timeout_s,
            ping_interval_s=cfg.ping_interval_s,
            ping_timeout_s=cfg.ping_timeout_s,
        )

    def _updates_closed(self, updates: AlpacaTradeUpdates) -> None:
        if self._updates is updates:
            self._updates = None


def _get(path: str, params: dict[str, str | int], client: TradingClient) -> Any:
    return client.get(path, params)


def _flat(orders: dict[str, BrokerOrder]) -> list[BrokerOrder]:
    """Parents first, each followed by its legs, in submission order; one entry per id."""
    seen: set[str] = set()
    out = []
    for parent in _by_submission(orders):
        for o in parent.with_legs():
            if o.broker_order_id not in seen:
                seen.add(o.broker_order_id)
                out.append(o)
    return out


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:3])[:300] or type(exc).__name__


def sdk_request(r: OrderRequest) -> OrderRequestBase:
    """The alpaca-py request type for `r` (validated by the SDK; floats only inside it)."""
    common: dict[str, Any] = {
        "symbol": r.symbol, "side": OrderSide(r.side), "time_in_force": TimeInForce(r.time_in_force),
        "client_order_id": r.client_order_id,
        "qty": float(r.qty) if r.qty is not None else None,
        "notional": float(r.notional) if r.notional is not None else None}
    if r.order_class != "simple":
        common["order_class"] = OrderClass(r.order_class)
        if r.take_profit is not None:
            common["take_profit"] = TakeProfitRequest(limit_price=float(r.take_profit.limit_price))
        if r.stop_loss is not None:
            common["stop_loss"] = StopLossRequest(
                stop_price=float(r.stop_loss.stop_price),
                limit_price=(float(r.stop_loss.limit_price)
                             if r.stop_loss.limit_price is not None else None))

    def f(v: Decimal | None) -> float | None:
        return float(v) if v is not None else None

    if r.order_type == "market":
        return MarketOrderRequest(**common)
    if r.order_type == "limit":
        return LimitOrderRequest(limit_price=f(r.limit_price), **common)
    if r.order_type == "stop":
        return StopOrderRequest(stop_price=f(r.stop_price), **common)
    if r.order_type == "stop_limit":
        return StopLimitOrderRequest(stop_price=f(r.stop_price), limit_price=f(r.limit_price),
                                     **common)
    if r.order_type == "trailing_stop":
        return TrailingStopOrderRequest(trail_price=f(r.trail_price),
                                        trail_percent=f(r.trail_percent), **common)
    raise ValueError(f"unsupported order type {r.order_type!r}")


def _by_submission(orders: dict[str, BrokerOrder]) -> list[BrokerOrder]:
    floor = datetime.min.replace(tzinfo=UTC)
    return sorted(orders.values(), key=lambda o: (o.submitted_at or floor, o.broker_order_id))
