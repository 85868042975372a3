"""The sort against its definition: whatever the batches, refused rows, run size and row
order, it gives the digest (the sum of each row's term), the statistics, the refused rows
first in input order, then every bar in (start, symbol) order with ties in input order."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.marketdata.ordered import OrderStats, ordered_batches
from engine.marketdata.types import BadInput, MarketItem
from events.market import Bar

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
_enc = msgspec.msgpack.Encoder()


def digest_term(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest())


def _item(i: int, spec: tuple[str, int, int] | None) -> MarketItem:
    if spec is None:
        return BadInput(reason="BAD_NUMBER" if i % 2 else "BAD_ROW", detail=f"row {i}",
                        raw=f"raw {i}", provider="t")
    sym, minute, interval = spec
    return Bar(symbol=sym, start=T0 + timedelta(minutes=minute), interval_s=interval,
               open=Decimal(1 + i), high=Decimal(1 + i), low=Decimal(1 + i),
               close=Decimal(1 + i), volume=Decimal(i), provider="t")


def _reference(items: list[MarketItem], run_rows: int
               ) -> tuple[list[MarketItem], dict[str, object]]:
    """What the sort must produce, by definition, one item at a time."""
    bad = [i for i in items if isinstance(i, BadInput)]
    bars = [i for i in items if isinstance(i, Bar)]
    acc = 0
    for i in items:
        acc += digest_term(_enc.encode((i.reason, i.raw)) if isinstance(i, BadInput)
                           else _enc.encode(i))
    keys = [(b.start, b.symbol) for b in bars]
    spills, rest = divmod(len(bars), run_rows)
    stats = {
        "bars": len(bars), "refused": Counter(b.reason for b in bad),
        "symbols": {b.symbol for b in bars}, "intervals": Counter(b.interval_s for b in bars),
        "was_sorted": keys == sorted(keys), "first_refusal": bad[0].detail if bad else None,
        "digest": f"{acc % (1 << 256):064x}"[:32],
        "runs": spills + (1 if spills and rest else 0),
        "max_run": run_rows if spills else len(bars),
    }
    return [*bad, *sorted(bars, key=lambda b: (b.start, b.symbol))], stats


@settings(max_examples=150, deadline=None)
@given(specs=st.lists(st.one_of(st.none(), st.tuples(st.sampled_from(["AAA", "BBB", "CCC"]),
                                                     st.integers(0, 30),
                                                     st.sampled_from([60, 60, 300]))),
                      max_size=90),
       cuts=st.lists(st.integers(0, 90), max_size=6),
       run_rows=st.integers(1, 40), shuffle=st.booleans(), seed=st.integers(0, 2**16))
def test_the_sort_gives_what_its_definition_gives(specs: list[tuple[str, int, int] | None],
                                                 cuts: list[int], run_rows: int,
                                                 shuffle: bool, seed: int) -> None:
    import random

    items = [_item(i, s) for i, s in enumerate(specs)]
    if shuffle:
        random.Random(seed).shuffle(items)
    else:  # mostly in order, as exports are: sorted bars with the refused rows among them
        bars = sorted((i for i in items if isinstance(i, Bar)), key=lambda b: (b.start, b.symbol))
        it = iter(bars)
        items = [i if isinstance(i, BadInput) else next(it) for i in items]
    # Any split into batches (empty ones too), over one or two sources.
    bounds = sorted({0, len(items), *(c for c in cuts if c <= len(items))})
    batches = [items[a:b] for a, b in itertools.pairwise(bounds)] or [[]]
    half = len(batches) // 2
    sources = [lambda: iter(batches[:half]), lambda: iter(batches[half:])]
    stats = OrderStats()
    got = [x for batch in ordered_batches(sources, stats, run_rows=run_rows) for x in batch]
    want, ref = _reference(items, run_rows)
    assert got == want  # every row differs (its prices), so ties are checked in order too
    assert {k: getattr(stats, k) for k in ref if k != "digest"} == {
        k: v for k, v in ref.items() if k != "digest"}
    assert stats.digest == ref["digest"] and stats.complete
    # the interval counts in the order they were first met (a tie in `most_common` keeps it)
    assert list(stats.intervals) == list(Counter(b.interval_s for b in items if isinstance(b, Bar)))
