"""Durable appends/s with 1, 10 and 100 concurrent appenders, and single-append latency.

Each appender awaits every `append` (i.e. waits for its commit) before the next, so this is
throughput of *acknowledged* events. Medians of --repeat runs on a fresh log each time.

    python -m bench.append [--events 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import emit, event_mix, median, percentile
from events.store import EventLog


async def run_once(path: Path, concurrency: int, n: int) -> tuple[float, list[float]]:
    events = list(event_mix(n))
    per = n // concurrency
    latencies: list[float] = []
    async with EventLog.open(path) as log:

        async def appender(w: int) -> None:
            mine = events[w * per:(w + 1) * per]
            for e in mine:
                t = time.perf_counter()
                await log.append(e)
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(appender(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - start
    return per * concurrency / elapsed, latencies


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--single-events", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for conc in (1, 10, 100):
            n = args.single_events if conc == 1 else args.events
            rates, p50s, p99s = [], [], []
            for r in range(args.repeat):
                rate, lat = await run_once(Path(tmp) / f"append-{conc}-{r}.sqlite", conc, n)
                rates.append(rate)
                p50s.append(percentile(lat, 0.50) * 1e3)
                p99s.append(percentile(lat, 0.99) * 1e3)
            figures[f"c{conc}_events_per_s"] = round(median(rates))
            figures[f"c{conc}_p50_ms"] = round(median(p50s), 3)
            figures[f"c{conc}_p99_ms"] = round(median(p99s), 3)
    figures["repeat"] = args.repeat
    figures["targets"] = {"c100_events_per_s": 100_000, "c1_p99_ms": 2.0}
    emit("append", figures)


if __name__ == "__main__":
    asyncio.run(main())
