"""The shipped strategies protect every entry at the (simulated) broker by default, and
`protect=false` turns it off. On the shipped sample data, through the full engine."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_settings
from engine.marketdata.assets import sample_bars_path
from engine.rebuild import rebuild_from_path
from engine.strategies import SmaCrossover, VwapMeanReversion
from engine.strategies.base import Strategy
from replay.backtest.driver import run_backtest

DAY = {"start": datetime(2026, 10, 28, 13, 30, tzinfo=UTC),
           "end": datetime(2026, 10, 29, 13, 30, tzinfo=UTC)}


async def _orders(tmp_path: Path, strategy: Strategy) -> Any:
    settings = load_settings(data_dir=tmp_path)
    res = await run_backtest(settings, sample_bars_path(), tmp_path / "bt.sqlite",
                             strategies=[strategy], **DAY)
    return (await rebuild_from_path(res.log_path, use_snapshot=False)).orders


@pytest.mark.parametrize("make", [
    lambda p: VwapMeanReversion(p),
    lambda p: SmaCrossover({"fast": 5, "slow": 20, **p}),
], ids=["vwap", "sma"])
async def test_every_entry_is_protected_at_the_broker(tmp_path: Path, make: Any) -> None:
    orders = await _orders(tmp_path, make({}))
    entries = [o for o in orders.orders.values()
               if o.filled_qty > 0 and not o.reduce_only and not o.protective]
    assert entries, "the sample day must make the strategy trade"
    stops = [o for o in orders.orders.values() if o.protective and o.is_stop]
    for e in entries:
        if e.legs:  # whole shares: the stop went with the entry
            assert any(orders.orders[c].leg_role == "stop_loss" for c in e.legs)
        else:  # a fraction: a stop right after the fill was booked, unless an exit was
            # already on its way (the bar that delivered the fill also signalled the exit)
            soon = range(e.created_seq + 1, e.updated_seq + 12)
            assert any(s.symbol == e.symbol and s.created_seq in soon for s in stops) or any(
                o.symbol == e.symbol and o.reduce_only and not o.protective
                and o.created_seq in soon for o in orders.orders.values()), e
    assert orders.anomalies == []


@pytest.mark.parametrize("make", [
    lambda p: VwapMeanReversion(p),
    lambda p: SmaCrossover({"fast": 5, "slow": 20, **p}),
], ids=["vwap", "sma"])
async def test_protect_false_places_no_stops(tmp_path: Path, make: Any) -> None:
    orders = await _orders(tmp_path, make({"protect": False}))
    assert [o for o in orders.orders.values() if o.filled_qty > 0]
    assert [o for o in orders.orders.values() if o.protective] == []
