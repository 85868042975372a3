"""Does the dashboard keep up with a log growing by 1,000 events/s? A writer process appends
the live event mix at the target rate; the dashboard (in this process) follows the log and
pushes batched updates over SSE to a client thread. Lag = when the client received an update
minus when the newest event in it was committed (CLOCK_MONOTONIC is system-wide on Linux).

    python -m bench.dashboard [--rate 1000] [--seconds 10] [--repeat 3]

One JSON line: the achieved write rate, pushes/s, events per push, lag p50/p99/max and the
catch-up after the writer stops (medians of the repeats).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import anyio

from bench.common import emit, event_mix, median


async def write(path: Path, rate: int, seconds: float, out: Path) -> None:
    from events.store import EventLog

    marks: list[tuple[int, float]] = []
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    events = event_mix(int(rate * seconds) + per_tick)
    async with EventLog.open(path) as log:
        start = time.monotonic()
        n = 0
        while n < rate * seconds:
            for _ in range(per_tick):
                log.append_nowait(next(events))
            n += per_tick
            await log.flush()
            marks.append((log.last_seq, time.monotonic()))
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        elapsed = time.monotonic() - start
    out.write_text(json.dumps({"marks": marks, "elapsed": elapsed, "events": n}))


def one_run(rate: int, seconds: float) -> dict[str, float]:
    from engine.dashboard.app import DashboardConfig
    from engine.dashboard.security import load_or_create_token
    from engine.dashboard.server import run_dashboard
    from engine.risk.limits import RiskLimits
    from events.store import EventLog

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.sqlite"
        marks_file = Path(tmp) / "marks.json"

        async def create() -> None:
            async with EventLog.open(path):
                pass
        asyncio.run(create())
        received: list[tuple[int, float]] = []
        done = threading.Event()

        async def serve() -> None:
            cfg = DashboardConfig(log_path=path, socket_path=Path(tmp) / "none.sock",
                                  limits=RiskLimits(), token=load_or_create_token(Path(tmp)),
                                  read_needs_token=False,
                                  now=lambda f: datetime.now(UTC))
            async with anyio.create_task_group() as tg:
                served = await tg.start(run_dashboard, cfg, "127.0.0.1", 0)

                def client() -> None:
                    with urllib.request.urlopen(served.url + "api/stream", timeout=60) as r:
                        for raw in r:
                            if raw.startswith(b"data: "):
                                seq = json.loads(raw[6:])["overview"]["last_seq"]
                                received.append((seq, time.monotonic()))
                            if done.is_set():
                                return

                writer = await anyio.open_process(
                    [sys.executable, "-m", "bench.dashboard", "--write", str(path),
                     "--rate", str(rate), "--seconds", str(seconds), "--marks", str(marks_file)])
                tg.start_soon(anyio.to_thread.run_sync, client)
                await writer.wait()
                final = json.loads(marks_file.read_text())["marks"][-1][0]
                with anyio.fail_after(60):
                    while not received or received[-1][0] < final:
                        await anyio.sleep(0.01)
                done.set()
                tg.cancel_scope.cancel()

        asyncio.run(serve())
        w = json.loads(marks_file.read_text())
        seqs = [s for s, _ in w["marks"]]
        times = [t for _, t in w["marks"]]
        lags = []
        for seq, at in received:
            i = bisect.bisect_left(seqs, seq)
            if 0 < seq and i < len(seqs):
                lags.append((at - times[i]) * 1000)
        lags.sort()
        pushes = [b[0] - a[0] for a, b in itertools.pairwise(received) if b[0] > a[0]]
        final_seq, final_at = w["marks"][-1]
        caught = next(t for s, t in received if s >= final_seq)
        return {"write_rate": w["events"] / w["elapsed"],
                "pushes_per_s": len(received) / w["elapsed"],
                "events_per_push": median([float(p) for p in pushes]) if pushes else 0.0,
                "lag_p50_ms": lags[len(lags) // 2], "lag_p99_ms": lags[int(len(lags) * .99)],
                "lag_max_ms": lags[-1], "catch_up_ms": (caught - final_at) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", help=argparse.SUPPRESS)
    ap.add_argument("--marks", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write:
        asyncio.run(write(Path(args.write), args.rate, args.seconds, Path(args.marks)))
        return
    runs = [one_run(args.rate, args.seconds) for _ in range(args.repeat)]
    emit("dashboard", {"target_events_per_s": args.rate, "seconds": args.seconds,
                       "repeats": args.repeat} | {
        k: round(median([r[k] for r in runs]), 1) for k in runs[0]})


if __name__ == "__main__":
    main()
