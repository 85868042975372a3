"""Bar files the way users have them, for the own-data tests: seeded random walks written
as exports write them (grouped by symbol, interleaved, split per symbol, Yahoo/Stooq daily
headers without a symbol column)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from projections.calendar import NEW_YORK, session_close

UTC_Z = "%Y-%m-%dT%H:%M:%SZ"


def walk(seed: int, n: int, start: Decimal = Decimal("50.00")) -> list[tuple[Decimal, ...]]:
    """n (open, high, low, close, volume) rows of a seeded random walk, cents exact."""
    rng = random.Random(seed)
    out = []
    price = start
    for _ in range(n):
        o = price
        c = max(Decimal("1.00"), o + Decimal(rng.randint(-60, 62)) / 100)
        hi = max(o, c) + Decimal(rng.randint(0, 20)) / 100
        lo = max(Decimal("0.50"), min(o, c) - Decimal(rng.randint(0, 20)) / 100)
        out.append((o, hi, lo, c, Decimal(rng.randint(20_000, 90_000))))
        price = c
    return out


def minute_rows(symbols: list[str], days: list[date], *, seed: int = 3,
                step_min: int = 1) -> list[list[str]]:
    """symbol,timestamp,open,high,low,close,volume rows: regular-hours bars of `step_min`
    minutes on each day, in (time, symbol) order."""
    per_day = 390 // step_min
    rows = []
    series = {s: walk(seed + i, per_day * len(days)) for i, s in enumerate(symbols)}
    for di, d in enumerate(days):
        open_utc = datetime.combine(d, datetime.min.time().replace(hour=9, minute=30),
                                    NEW_YORK)
        for k in range(per_day):
            ts = (open_utc + timedelta(minutes=k * step_min)).astimezone(UTC)
            for s in symbols:
                o, h, lo, c, v = series[s][di * per_day + k]
                rows.append([s, ts.strftime(UTC_Z), str(o), str(h), str(lo), str(c), str(v)])
    return rows




HEADER = "symbol,timestamp,open,high,low,close,volume"


def write_csv(path: Path, rows: list[list[str]], header: str = HEADER) -> Path:
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def grouped(rows: list[list[str]]) -> list[list[str]]:
    """All of one symbol, then all of the next (a stable sort by symbol)."""
    return sorted(rows, key=lambda r: r[0])


def shuffled(rows: list[list[str]], seed: int = 11) -> list[list[str]]:
    out = list(rows)
    random.Random(seed).shuffle(out)
    return out


def yahoo_daily(path: Path, days: list[date], *, seed: int = 5,
                newest_first: bool = False) -> Path:
    """A Yahoo-style download: Date,Open,High,Low,Close,Adj Close,Volume; no symbol column
    (the symbol comes from the file name)."""
    rows = []
    for d, (o, h, lo, c, v) in zip(days, walk(seed, len(days))):
        adj = (c * Decimal("0.98")).quantize(Decimal("0.000001"))
        rows.append([d.isoformat(), str(o), str(h), str(lo), str(c), str(adj), str(v * 100)])
    if newest_first:
        rows.reverse()
    return write_csv(path, rows, "Date,Open,High,Low,Close,Adj Close,Volume")


def close_of(d: date) -> datetime:
    return session_close(d)
