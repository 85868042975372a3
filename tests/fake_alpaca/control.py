"""Out-of-process use: an HTTP client for the control API and a subprocess launcher.

with FakeAlpacaProcess(port_file=tmp_path / "fake.json") as fake:
    client = fake.trading_client()            # alpaca-py, pointed at the fake
    fake.fill(order_id, qty=1, price=100)      # control call over HTTP
    ...kill the engine subprocess; ``fake`` keeps its state...
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

from .server import CONTROL_METHODS, FakeAlpaca, _ClientFactories

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_PREFIX = "FAKE_ALPACA_READY "


class FakeAlpacaControlError(RuntimeError):
    def __init__(self, method: str, payload: dict[str, Any]) -> None:
        super().__init__(f"{method}: {payload.get('type', 'Error')}: {payload.get('error')}")
        self.method = method
        self.payload = payload


class FakeAlpacaClient(_ClientFactories):
    """Same control methods as ``FakeAlpaca`` (``CONTROL_METHODS``), as HTTP calls to
    ``POST {control_url}/{method}`` with the keyword arguments as a JSON object."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = dict(info)
        self.control_url = info["control_url"]
        self.rest_url = info["rest_url"]
        self.data_rest_url = info["data_rest_url"]
        self.trading_stream_url = info["trading_stream_url"]
        self.data_stream_url = info["data_stream_url"]
        self.api_key = info["api_key"]
        self.api_secret = info["api_secret"]

    @classmethod
    def from_port_file(cls, path: str | os.PathLike[str]) -> FakeAlpacaClient:
        return cls(json.loads(Path(path).read_text()))

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if args:  # map positional arguments onto FakeAlpaca's signature
            target = getattr(FakeAlpaca, method, None)
            if target is None:
                raise TypeError(f"{method}() takes keyword arguments only")
            bound = inspect.signature(target).bind(None, *args, **kwargs)
            kwargs = {k: v for k, v in bound.arguments.items() if k != "self"}
            if "fields" in kwargs or "attrs" in kwargs:  # **kwargs parameters
                kwargs.update(kwargs.pop("fields", {}) or kwargs.pop("attrs", {}))
        timeout = float(kwargs.get("timeout") or 5.0) + 30.0
        req = urllib.request.Request(
            f"{self.control_url}/{method}",
            data=json.dumps(kwargs, default=str).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())["result"]
        except urllib.error.HTTPError as exc:
            raise FakeAlpacaControlError(method, json.loads(exc.read() or b"{}")) from None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name in CONTROL_METHODS:
            return functools.partial(self.call, name)
        raise AttributeError(name)

    def ping(self) -> dict[str, Any]:
        return self.call("ping")

    def shutdown(self) -> None:
        self.call("shutdown")

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 5.0, message: str = "condition"
    ) -> Any:
        """Like ``FakeAlpaca.wait_for``: re-evaluates ``predicate`` on each state change,
        using the server-side long poll ``wait_change`` (no sleeping)."""
        deadline = time.monotonic() + timeout
        while True:
            version = self.call("state_version")
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
            self.call("wait_change", since=version, timeout=min(remaining, 5.0))


class FakeAlpacaProcess:
    """Runs ``python -m tests.fake_alpaca`` as a subprocess; control calls are forwarded
    to a ``FakeAlpacaClient`` (``fake.fill(...)``, ``fake.orders()``, factories...)."""

    def __init__(
        self,
        port_file: str | os.PathLike[str],
        args: Sequence[str] = (),
        startup_timeout: float = 20.0,
        stderr: Any = None,
    ) -> None:
        self.port_file = Path(port_file)
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.stderr = stderr
        self.proc: subprocess.Popen[str] | None = None
        self.client: FakeAlpacaClient | None = None

    def start(self) -> FakeAlpacaProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fake_alpaca",
                "--port-file",
                str(self.port_file),
                *self.args,
            ],
            cwd=str(REPO_ROOT),
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], self.startup_timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith(READY_PREFIX):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"fake alpaca subprocess did not start (got {line!r})")
        self.client = FakeAlpacaClient(json.loads(line[len(READY_PREFIX) :]))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                assert self.client is not None
                self.client.shutdown()
                self.proc.wait(timeout)
            except Exception:  # noqa: BLE001 (fall back to SIGTERM)
                self.proc.terminate()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getattr__(self, name: str) -> Any:
        client = self.__dict__.get("client")
        if client is None:
            raise AttributeError(name)
        return getattr(client, name)
