"""Subprocess used by the SIGKILL test: appends forever from several tasks and prints
`seq intent_id` for every append that has returned (i.e. is durable)."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from decimal import Decimal

from events.catalogue import OrderIntent
from events.store import EventLog


async def main(path: str, tasks: int) -> None:
    async with EventLog.open(path) as log:
        counter = 0

        async def worker(w: int) -> None:
            nonlocal counter
            while True:
                counter += 1
                iid = f"w{w}-{counter}"
                ev = OrderIntent(ts=datetime.now(UTC), intent_id=iid, strategy="kill",
                                 symbol="AAPL", side="buy", qty=Decimal("1.5"))
                seq = await log.append(ev)
                sys.stdout.write(f"{seq} {iid}\n")
                sys.stdout.flush()

        await asyncio.gather(*(worker(i) for i in range(tasks)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
