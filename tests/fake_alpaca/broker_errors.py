"""The error the fake answers REST requests with (its own module: `advanced` needs it too)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered to the REST client as ``{"code": ..., "message": ...}``."""

    def __init__(self, status: int, code: int, message: str, **extra: Any) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.extra}
