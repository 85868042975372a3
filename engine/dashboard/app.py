"""The dashboard's HTTP API and page (Starlette on anyio).

Read-only JSON views of the followed log, an SSE stream of batched updates, server-rendered
SVG, the forensics chain of any order, and halt/flatten/resume through the service's control
socket. Errors are JSON `{"error": ...}` with a 4xx status (5xx only for our own faults, never
with a traceback); nothing secret is in any answer: events hold none and settings are not
served.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from engine.dashboard import views
from engine.dashboard.control import ACTOR, ControlUnavailable, send_command, service_running
from engine.dashboard.follow import LogFollower
from engine.dashboard.security import TOKEN_HEADER, Token, is_loopback
from engine.dashboard.svg import equity_svg
from engine.risk.limits import RiskLimits
from events.store import LogReader
from replay.forensics.explain import explain
from replay.forensics.queries import NotFoundError, to_json

log = logging.getLogger(__name__)

STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
MAX_REASON = 500
# everything from this origin, nothing inline, never framed
_CSP = (b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
        b"frame-ancestors 'none'")


@dataclass
class DashboardConfig:
    log_path: Path
    socket_path: Path
    limits: RiskLimits
    token: Token
    read_needs_token: bool  # bound beyond loopback: every API request needs the token
    now: Callable[[LogFollower], datetime]
    push_interval_s: float = 0.25
    keepalive_s: float = 15.0
    check_host: bool = True  # loopback: refuse other Host names (DNS rebinding)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _int(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise views.BadQuery(f"{name} must be an integer, got {raw[:40]!r}") from None
    if value < 0:
        raise views.BadQuery(f"{name} must be >= 0")
    return value


def make_app(follower: LogFollower, cfg: DashboardConfig) -> Starlette:
    static_dir = resources.files("engine.dashboard") / "static"

    def context() -> views.ViewContext:
        return views.ViewContext(
            limits=cfg.limits, now=cfg.now(follower),
            control_available=service_running(cfg.log_path, cfg.socket_path),
            read_needs_token=cfg.read_needs_token, log_name=str(cfg.log_path),
            caught_up=follower.caught_up)

    async def index(request: Request) -> Response:
        return await static(request, "index.html")

    async def static(request: Request, name: str | None = None) -> Response:
        name = name or request.path_params["name"]
        if name not in STATIC:
            return _error(404, f"no such asset {name[:60]!r}")
        body = (static_dir / name).read_bytes()
        return Response(body, media_type=STATIC[name],
                        headers={"Cache-Control": "no-cache"})

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    async def overview(request: Request) -> Response:
        return JSONResponse(views.overview(follower.proj, follower.fold, context()))

    async def positions(request: Request) -> Response:
        return JSONResponse({"last_seq": follower.last_seq,
                             "positions": views.positions_view(follower.proj, follower.fold)})

    async def fills(request: Request) -> Response:
        sym = request.path_params["symbol"]
        if sym not in follower.proj.positions.positions:
            return _error(404, f"no position in {sym[:20]!r}")
        return JSONResponse({"symbol": sym, "fills": views.fills_view(follower.fold, sym)})

    async def orders(request: Request) -> Response:
        which = request.query_params.get("status", "open")
        if which not in ("open", "all"):
            raise views.BadQuery("status must be 'open' or 'all'")
        limit = _int(request, "limit", 200) or 0
        if not 1 <= limit <= 10_000:
            raise views.BadQuery("limit must be between 1 and 10000")
        p = follower.proj
        if which == "open":
            picked = [p.orders.orders[c] for c in p.orders.open_ids]
        else:
            picked = list(p.orders.orders.values())
        picked.sort(key=lambda o: o.created_seq)
        return JSONResponse({"last_seq": follower.last_seq,
                             "orders": [views.order_json(o, p) for o in picked[-limit:]]})

    async def chain(request: Request) -> Response:
        query = request.path_params["id"]
        if not query or len(query) > 200:
            raise views.BadQuery("an order or intent id is 1..200 characters")
        # its own connection: the follower's is busy following
        async with LogReader(cfg.log_path) as reader:
            try:
                expl = await explain(reader, query, proj=follower.proj)
            except NotFoundError as e:
                return _error(404, str(e))
        return Response(to_json(expl), media_type="application/json")

    async def timeline(request: Request) -> Response:
        types_raw = request.query_params.get("types", "")
        types = {t.strip() for t in types_raw.split(",") if t.strip()} or None
        known = set(follower.reader.codec.types)
        if types and not types <= known:
            bad = sorted(types - known)[:3]
            raise views.BadQuery(f"unknown event type(s) {bad}; known: {sorted(known)}")
        return JSONResponse(views.timeline_view(
            follower.fold, types=types, symbol=request.query_params.get("symbol") or None,
            order=request.query_params.get("order") or None,
            after_seq=_int(request, "after_seq", 0) or 0,
            before_seq=_int(request, "before_seq", None),
            limit=_int(request, "limit", 200) or 0) | {"last_seq": follower.last_seq})

    async def equity_chart(request: Request) -> Response:
        scope = request.query_params.get("scope", "run")
        if scope == "run":
            pts = views.run_points(follower.fold)
        elif scope == "session":
            pts = views.session_points(follower.fold, cfg.now(follower))
        else:
            raise views.BadQuery("scope must be 'run' or 'session'")
        return Response(equity_svg(pts, title=f"equity ({scope})"), media_type="image/svg+xml")

    async def stream(request: Request) -> Response:
        after = _int(request, "after_seq", 0) or 0

        async def events() -> AsyncIterator[str]:
            sent = after
            first = True  # the first update goes out at once, even for an empty log
            while not follower.closing:
                if not first and follower.last_seq == sent:
                    with anyio.move_on_after(cfg.keepalive_s) as idle:
                        await follower.changed()
                    if follower.closing:
                        return
                    if idle.cancelled_caught:
                        yield ": keepalive\n\n"
                        continue
                tl = views.timeline_view(follower.fold, after_seq=sent, limit=1000)
                payload = {"overview": views.overview(follower.proj, follower.fold, context()),
                           "timeline": tl["entries"]}
                sent = follower.last_seq
                first = False
                yield f"event: update\ndata: {json.dumps(payload)}\n\n"
                # one push per interval at most: everything folded meanwhile goes together
                await anyio.sleep(cfg.push_interval_s)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def control(request: Request) -> Response:
        cmd = request.path_params["cmd"]
        if cmd not in ("halt", "flatten", "resume"):
            return _error(404, f"unknown control {cmd[:20]!r}: halt, flatten or resume")
        if not cfg.token.matches(request.headers.get(TOKEN_HEADER)):
            return _error(401, f"control actions need the token in the {TOKEN_HEADER} header "
                               f"(it is in {cfg.token.path.name} in the data directory)")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(415, "send the command as application/json")
        try:
            body = json.loads(await request.body() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            return _error(400, "a reason is required")
        if len(reason) > MAX_REASON:
            return _error(400, f"the reason is longer than {MAX_REASON} characters")
        if not service_running(cfg.log_path, cfg.socket_path):
            return _error(409, "no service is running this log: halt/resume are offered only "
                               "while one runs (offline: python -m engine halt)")
        req: dict[str, Any] = {"cmd": "resume" if cmd == "resume" else "halt",
                               "actor": ACTOR, "reason": reason.strip()}
        if cmd != "resume":
            req["flatten"] = cmd == "flatten"
        try:
            answer = await send_command(cfg.socket_path, req)
        except ControlUnavailable as e:
            return _error(502, str(e))
        return JSONResponse(answer, status_code=200 if answer.get("ok") else 409)

    async def not_found(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    async def bad_query(request: Request, exc: Exception) -> Response:
        return _error(400, str(exc))

    async def crashed(request: Request, exc: Exception) -> Response:
        # never a traceback (or anything from the exception's text) to the client
        log.error("dashboard: %s on %s: %s", type(exc).__name__, request.url.path, exc)
        return _error(500, "internal error (the dashboard's log has the details)")

    routes = [
        Route("/", index), Route("/static/{name}", static), Route("/favicon.ico", favicon),
        Route("/api/overview", overview), Route("/api/positions", positions),
        Route("/api/positions/{symbol}/fills", fills), Route("/api/orders", orders),
        Route("/api/chain/{id:path}", chain), Route("/api/timeline", timeline),
        Route("/api/equity.svg", equity_chart), Route("/api/stream", stream),
        Route("/api/control/{cmd}", control, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={
        HTTPException: not_found, views.BadQuery: bad_query, Exception: crashed})
    app.add_middleware(_Guard, cfg=cfg)
    return app


class _Guard:
    """Host check (loopback binds answer only loopback names: no DNS rebinding) and, when
    bound beyond loopback, the token on every API request; plus headers that keep the page
    out of frames and other origins."""

    def __init__(self, app: Callable[..., Awaitable[None]], cfg: DashboardConfig) -> None:
        self.app = app
        self.cfg = cfg

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
        path: str = scope.get("path", "")
        if self.cfg.check_host and not self.cfg.read_needs_token and not is_loopback(name):
            await _send(send, _error(421, "this dashboard answers only on loopback names"),
                        scope, receive)
            return
        if (self.cfg.read_needs_token and path.startswith("/api/")
                and not path.startswith("/api/control/")
                and not self.cfg.token.matches(headers.get(TOKEN_HEADER.lower()))):
            await _send(send, _error(401, f"this dashboard is exposed beyond loopback: send "
                                          f"the token in the {TOKEN_HEADER} header"),
                        scope, receive)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
                         (b"referrer-policy", b"no-referrer"),
                         (b"content-security-policy", _CSP)]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _send(send: Any, response: Response, scope: Any, receive: Any) -> None:
    await response(scope, receive, send)
