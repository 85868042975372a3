"""Running the real service as a subprocess, waiting on what it prints (never on time)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class Service:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        assert proc.stderr is not None
        self._t = threading.Thread(target=self._pump, args=(proc.stderr,), daemon=True)
        self._t.start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._q.put(line)
        self._q.put(None)

    def wait_for(self, needle: str, timeout: float = 60) -> str:
        """Block until a stderr line contains `needle` (or the process ends, or `timeout`
        seconds pass in all: a chatty process must not extend the wait forever)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise TimeoutError(f"no {needle!r} within {timeout}s; saw:\n" + "".join(self.lines[-30:])) from None
            if line is None:
                raise AssertionError(f"service exited ({self.proc.poll()}) before {needle!r}:\n"
                                     + "".join(self.lines[-40:]))
            self.lines.append(line)
            if needle in line:
                return line

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        while True:
            try:
                line = self._q.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return rc


def engine_env(tmp: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQD_")}
    env.update({"MQD_DATA_DIR": str(tmp / "data"), "PYTHONPATH": str(REPO),
                "MQD_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


@contextmanager
def service(tmp: Path, extra: Mapping[str, str] | None = None,
            args: tuple[str, ...] = ("run",)) -> Iterator[Service]:
    proc = subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=tmp,
                            env=engine_env(tmp, extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    svc = Service(proc)
    try:
        yield svc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def cli(tmp: Path, *args: str, extra: Mapping[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], check=False, cwd=tmp,
                          env=engine_env(tmp, extra), capture_output=True, text=True,
                          timeout=timeout)
