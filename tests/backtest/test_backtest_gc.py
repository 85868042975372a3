"""A backtest runs with automatic garbage collection off (its full passes over a growing heap
are pure cost) and collects the young generations itself: the state is restored after the
run, and cycles a strategy drops are still freed while the run goes on."""

from __future__ import annotations

import gc
import weakref
from datetime import date
from pathlib import Path

import pytest

from engine.config import load_settings
from engine.strategies.base import Strategy
from engine.strategies.context import StrategyContext
from events.catalogue import OrderIntent
from events.market import Bar
from projections.calendar import business_days_from
from replay.backtest import driver
from replay.backtest.driver import run_backtest
from tests.owndata import minute_rows, write_csv


class _Cycles(Strategy):
    """Drops one reference cycle per bar and notes, per bar, how many were freed so far."""

    name = "cycles"

    def __init__(self) -> None:
        super().__init__()
        self.freed = 0
        self.made = 0
        self.gc_enabled: set[bool] = set()
        self.freed_by_bar: list[int] = []

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent] | None:
        node: dict[str, object] = {}
        node["self"] = node  # garbage only a collection can free
        holder = _Holder(node)
        weakref.finalize(holder, self._freed)
        holder.me = holder
        self.made += 1
        self.gc_enabled.add(gc.isenabled())
        self.freed_by_bar.append(self.freed)
        return None

    def _freed(self) -> None:
        self.freed += 1


class _Holder:
    def __init__(self, node: object) -> None:
        self.node = node
        self.me: object = None


@pytest.mark.parametrize("enabled_before", [True, False])
async def test_collection_is_off_during_a_run_and_restored_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enabled_before: bool) -> None:
    monkeypatch.setattr(driver, "YOUNG_GC_EVERY", 100)
    rows = minute_rows(["AAA"], business_days_from(date(2026, 3, 2), 1))
    path = write_csv(tmp_path / "a.csv", rows)
    settings = load_settings(data_dir=tmp_path, sim={"cash": "100000"})
    strategy = _Cycles()
    was = gc.isenabled()
    (gc.enable if enabled_before else gc.disable)()
    try:
        res = await run_backtest(settings, path, tmp_path / "g.sqlite", strategies=[strategy])
        assert gc.isenabled() is enabled_before
    finally:
        (gc.enable if was else gc.disable)()
    assert res.bars == len(rows) == strategy.made == 390
    assert strategy.gc_enabled == {False}
    # Freed in the run, by the driver's young collection before every 100th bar: nothing
    # before it (no automatic pass), then every cycle made until then.
    by_bar = strategy.freed_by_bar
    assert (by_bar[98], by_bar[99], by_bar[199], by_bar[-1]) == (0, 99, 199, 299)


class _FreezeSeen(Strategy):
    """Notes how many objects were frozen when each bar reached it."""

    name = "freeze_seen"

    def __init__(self) -> None:
        super().__init__()
        self.frozen: list[int] = []

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent] | None:
        self.frozen.append(gc.get_freeze_count())
        return None


async def test_the_setup_is_frozen_for_the_run_and_thawed_after(tmp_path: Path) -> None:
    rows = minute_rows(["AAA"], business_days_from(date(2026, 3, 2), 1))
    path = write_csv(tmp_path / "a.csv", rows)
    settings = load_settings(data_dir=tmp_path, sim={"cash": "100000"})
    strategy = _FreezeSeen()
    assert gc.get_freeze_count() == 0
    res = await run_backtest(settings, path, tmp_path / "f.sqlite", strategies=[strategy])
    assert res.bars == 390
    # Frozen from the first bar on (the sorted input, among much else), thawed at the end.
    assert min(strategy.frozen) > 0
    assert gc.get_freeze_count() == 0


async def test_a_process_that_froze_objects_itself_is_left_as_it_was(tmp_path: Path) -> None:
    rows = minute_rows(["AAA"], business_days_from(date(2026, 3, 2), 1))
    path = write_csv(tmp_path / "a.csv", rows)
    settings = load_settings(data_dir=tmp_path, sim={"cash": "100000"})
    strategy = _FreezeSeen()
    gc.freeze()
    try:
        mine = gc.get_freeze_count()
        await run_backtest(settings, path, tmp_path / "f.sqlite", strategies=[strategy])
        # Nothing more frozen during the run (its setup stayed collectable; the count only
        # drops as frozen objects die), and nothing thawed after it.
        assert strategy.frozen and max(strategy.frozen) <= mine
        assert mine // 2 < gc.get_freeze_count() <= mine
    finally:
        gc.unfreeze()


async def test_a_run_that_never_reached_its_first_bar_thaws_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The run held GC off but froze nothing (no bar): what another party froze while it ran
    # (here: as the run words its error) must stay frozen when collection comes back.
    path = tmp_path / "empty.csv"
    path.write_text("symbol,timestamp,open,high,low,close,volume\n")
    settings = load_settings(data_dir=tmp_path, sim={"cash": "100000"})
    words = driver.no_bars_message

    def freezing(*args: object, **kwargs: object) -> str:
        gc.freeze()
        return words(*args, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(driver, "no_bars_message", freezing)
    assert gc.get_freeze_count() == 0
    try:
        with pytest.raises(driver.NoBarsError):
            await run_backtest(settings, path, tmp_path / "n.sqlite")
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
