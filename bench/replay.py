"""Events/s to rebuild every projection from a 1,000,000-event log (the live mix: 2/3 bars,
1/3 order lifecycle), plus the raw read+decode rate of the same log for comparison.

    python -m bench.replay [--events 1000000] [--repeat 3] [--log PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import emit, event_mix, median
from engine.rebuild import rebuild
from events.store import EventLog, LogReader


async def build_log(path: Path, n: int, bars_per_order: int) -> None:
    async with EventLog.open(path) as log:
        for i, e in enumerate(event_mix(n, bars_per_order=bars_per_order)):
            log.append_nowait(e)
            if i % 20_000 == 0:
                await log.flush()
        await log.flush()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--log", type=Path, default=None, help="reuse/keep the log at this path")
    ap.add_argument("--bars-per-order", type=int, default=14,
                    help="mix: bars between two orders' 7 lifecycle events (14 = 2/3 bars)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.log or Path(tmp) / "replay.sqlite"
        if not path.exists():
            await build_log(path, args.events, args.bars_per_order)
        rebuild_rates, raw_rates = [], []
        for _ in range(args.repeat):
            async with LogReader(path) as r:
                n = await r.last_seq()
                t = time.perf_counter()
                proj = await rebuild(r)
                rebuild_rates.append(n / (time.perf_counter() - t))
                t = time.perf_counter()
                decode = r.codec.decode
                async for batch in r.rows(batch_size=20_000):
                    for row in batch:
                        decode(row[2], row[3], row[7], row[0])
                raw_rates.append(n / (time.perf_counter() - t))
        emit("replay", {
            "events": n,
            "bars_per_order": args.bars_per_order,
            "rebuild_events_per_s": round(median(rebuild_rates)),
            "full_decode_events_per_s": round(median(raw_rates)),
            "open_orders": len(proj.orders.open_ids),
            "repeat": args.repeat,
            "target_events_per_s": 400_000,
        })


if __name__ == "__main__":
    asyncio.run(main())
