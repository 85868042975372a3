"""Fault rules for the fake Alpaca REST server.

A fault matches a route name (see ``server.ROUTES``) or ``"*"`` and fires for the next
``remaining`` matching requests (``None`` = until removed). Phases:

* ``before``: applied before the request is handled (the order is NOT created);
* ``after``: applied after a successful (2xx) handling (the order IS created).

Kinds:

* ``error``: answer ``status`` with an Alpaca-style body (or ``body`` verbatim);
* ``delay``: sleep ``delay`` seconds, then continue (composable with others);
* ``hang``: never answer; the connection is closed when ``release_hung_requests()``
  is called or the fake stops;
* ``close``: close the TCP connection without any answer.

Rules are evaluated in creation order; within one phase every matching ``delay``
applies and the first ``error``/``hang``/``close`` ends the request.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

KINDS = ("error", "delay", "hang", "close")
PHASES = ("before", "after")
TERMINAL = ("error", "hang", "close")

DEFAULT_ERRORS: dict[int, tuple[int, str]] = {
    400: (40010000, "bad request"),
    401: (40110000, "request is not authorized"),
    403: (40310000, "forbidden"),
    404: (40410000, "not found"),
    422: (42210000, "unprocessable entity"),
    429: (42910000, "rate limit exceeded"),
    500: (50010000, "internal server error occurred"),
    502: (50210000, "bad gateway"),
    503: (50310000, "service unavailable"),
}

# Alpaca's edge answers gateway timeouts with an HTML page, not JSON (so
# APIError.code raises on it). Tests can pass body= to override.
HTML_504 = (
    "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    "<center><h1>504 Gateway Time-out</h1></center>\r\n</body>\r\n</html>\r\n"
)

_ids = itertools.count(1)


@dataclass
class Fault:
    route: str
    kind: str
    phase: str = "before"
    remaining: int | None = 1
    status: int | None = None
    code: int | None = None
    message: str | None = None
    body: Any = None
    delay: float = 0.0
    id: int = field(default_factory=lambda: next(_ids))
    hits: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}")
        if self.kind == "error" and self.status is None:
            raise ValueError("an error fault needs a status")
        if self.remaining is not None and self.remaining < 1:
            raise ValueError("remaining must be >= 1 or None")

    @property
    def active(self) -> bool:
        return self.remaining is None or self.remaining > 0

    def matches(self, route: str) -> bool:
        return self.active and (self.route == "*" or self.route == route)

    def consume(self) -> None:
        self.hits += 1
        if self.remaining is not None:
            self.remaining -= 1

    def response(self) -> tuple[int, Any, str]:
        """(status, body, content type) for an error fault."""
        assert self.status is not None
        if self.body is not None:
            if isinstance(self.body, (dict, list)):
                return self.status, self.body, "application/json; charset=UTF-8"
            return self.status, str(self.body), "text/plain; charset=UTF-8"
        if self.status == 504 and self.code is None and self.message is None:
            return 504, HTML_504, "text/html"
        code, message = DEFAULT_ERRORS.get(self.status, (self.status * 100000, "error"))
        return (
            self.status,
            {
                "code": self.code if self.code is not None else code,
                "message": self.message if self.message is not None else message,
            },
            "application/json; charset=UTF-8",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "route": self.route,
            "kind": self.kind,
            "phase": self.phase,
            "remaining": self.remaining,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "delay": self.delay,
            "hits": self.hits,
        }
