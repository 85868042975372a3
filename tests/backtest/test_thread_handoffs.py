"""A simulation shortens the GIL switch interval while it runs (so the log's writer thread
keeps pace with the loop) and always restores it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar

import pytest

from engine.config import load_settings
from engine.marketdata.assets import sample_bars_path
from engine.strategies.base import Strategy, StrategyParams
from engine.strategies.context import StrategyContext
from events.catalogue import OrderIntent
from events.market import Bar
from replay.backtest.driver import run_backtest
from replay.backtest.stepper import (
    HANDOFF_INTERVAL_S,
    quick_thread_handoffs,
    with_quick_thread_handoffs,
)


def test_the_interval_is_short_inside_and_restored_after_even_on_error() -> None:
    before = sys.getswitchinterval()
    assert before > HANDOFF_INTERVAL_S  # the interpreter's default (5 ms)
    with pytest.raises(RuntimeError), quick_thread_handoffs():
        assert sys.getswitchinterval() == pytest.approx(HANDOFF_INTERVAL_S)
        with quick_thread_handoffs(0.01):  # never lengthened by a nested use
            assert sys.getswitchinterval() == pytest.approx(HANDOFF_INTERVAL_S)
        assert sys.getswitchinterval() == pytest.approx(HANDOFF_INTERVAL_S)
        raise RuntimeError("boom")
    assert sys.getswitchinterval() == before


async def test_a_decorated_coroutine_runs_inside() -> None:
    before = sys.getswitchinterval()
    seen: list[float] = []

    @with_quick_thread_handoffs
    async def run(x: int) -> int:
        seen.append(sys.getswitchinterval())
        return x + 1

    assert await run(1) == 2
    assert seen == [pytest.approx(HANDOFF_INTERVAL_S)]
    assert sys.getswitchinterval() == before



class _Probe(Strategy):
    """Notes the switch interval in force at each bar."""

    name = "probe"
    Params = StrategyParams
    seen: ClassVar[list[float]] = []

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent] | None:
        self.seen.append(sys.getswitchinterval())
        return None


async def test_run_backtest_runs_with_quick_handoffs(tmp_path: Path) -> None:
    before = sys.getswitchinterval()
    _Probe.seen.clear()
    result = await run_backtest(load_settings(data_dir=tmp_path), sample_bars_path(),
                                tmp_path / "bt.sqlite", strategies=[_Probe()])
    assert len(_Probe.seen) == result.bars > 0
    assert set(_Probe.seen) == {HANDOFF_INTERVAL_S}
    assert sys.getswitchinterval() == before
