"""Who may see and who may act: bind address rules and the control token.

- The dashboard binds to loopback unless `allow_remote` says otherwise; bound elsewhere,
  every API request needs the token (the read-only view is open only on loopback).
- Control actions (halt, flatten, resume) always need the token, sent in a header. A
  cross-site form can not set headers (nor a JSON content type without a CORS preflight the
  server never grants), so a forged page can not halt or resume.
- The token is created at first start in the data directory with mode 0600 and printed once;
  afterwards only its path is shown.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

TOKEN_HEADER = "X-MQD-Token"
TOKEN_FILE = "dashboard.token"


class BindError(ValueError):
    """A bind address that is malformed, or not loopback without the explicit flag."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_bind(bind: str, *, allow_remote: bool) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) -> (host, port), refusing non-loopback hosts unless
    `allow_remote`."""
    host, sep, port_text = bind.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise BindError(f"dashboard bind {bind!r}: use HOST:PORT, e.g. 127.0.0.1:8765")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise BindError(f"dashboard bind {bind!r}: port must be 0..65535")
    host = host.strip("[]")
    if not is_loopback(host) and not allow_remote:
        raise BindError(f"dashboard bind {bind!r} is not loopback: set dashboard.allow_remote="
                        "true (--allow-remote) to expose it; every request then needs the token")
    return host, port


@dataclass(frozen=True)
class Token:
    value: str
    path: Path
    created: bool  # made just now: the one time it is shown

    def matches(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.value.encode())


def load_or_create_token(data_dir: Path) -> Token:
    """The control token in `data_dir`, created (mode 0600, never group/world readable) if
    missing. A token file others can read is refused rather than trusted."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{path} is readable by others (mode {mode:o}): "
                                  "chmod 600 it or delete it to make a new token") from None
        value = path.read_text().strip()
        if len(value) < 32:
            raise PermissionError(f"{path} holds no usable token: delete it to make a new one")
        return Token(value, path, created=False)
    value = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return Token(value, path, created=True)
