"""A real HTTP server on 127.0.0.1 that plays a webhook: scripted statuses, recorded bodies,
and a switch that makes it hang (accepts, never answers) until released."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Hook:
    def __init__(self) -> None:
        self.statuses: list[int] = []  # answered in order; then 200
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self.hold = threading.Event()  # set: hang every request until `release`
        self.released = threading.Event()
        self.arrived = threading.Condition()
        self.url = ""

    def wait_for(self, n: int, timeout: float = 30) -> None:
        with self.arrived:
            if not self.arrived.wait_for(lambda: self.attempts >= n, timeout):
                raise TimeoutError(f"{self.attempts} requests, wanted {n}")


@contextmanager
def webhook() -> Iterator[Hook]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with hook.arrived:
                hook.attempts += 1
                hook.arrived.notify_all()
            if hook.hold.is_set():
                hook.released.wait(60)
            status = hook.statuses.pop(0) if hook.statuses else 200
            if status == 200:
                hook.received.append(json.loads(body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/s3cr3t-path"
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield hook
    finally:
        hook.released.set()
        server.shutdown()
        server.server_close()
