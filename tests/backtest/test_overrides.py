"""Interpreter-wide settings held by overlapping simulations: the first run in changes the
setting, the last one out restores it, whatever order they end in."""

from __future__ import annotations

import gc
import sys
from contextlib import ExitStack

import pytest

from replay.backtest.driver import young_collections_only
from replay.backtest.overrides import Override
from replay.backtest.stepper import HANDOFF_INTERVAL_S, quick_thread_handoffs


def test_overlapping_runs_restore_the_switch_interval_when_the_last_ends() -> None:
    before = sys.getswitchinterval()
    assert before > HANDOFF_INTERVAL_S
    a, b = ExitStack(), ExitStack()
    a.enter_context(quick_thread_handoffs())
    b.enter_context(quick_thread_handoffs())
    a.close()  # the first run ends while the second still runs: it keeps its setting
    assert sys.getswitchinterval() == pytest.approx(HANDOFF_INTERVAL_S)
    b.close()
    assert sys.getswitchinterval() == before


def test_overlapping_runs_keep_collection_off_until_the_last_ends() -> None:
    assert gc.isenabled()
    a, b = ExitStack(), ExitStack()
    a.enter_context(young_collections_only())
    b.enter_context(young_collections_only())
    a.close()
    assert not gc.isenabled()
    b.close()
    assert gc.isenabled()


def test_a_setting_off_before_the_first_run_stays_off() -> None:
    gc.disable()
    try:
        with young_collections_only():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_override_is_restored_when_its_holder_raises() -> None:
    o = Override()
    state = ["original"]

    def apply() -> object:
        state[0] = "changed"
        return lambda: state.__setitem__(0, "original")

    with pytest.raises(RuntimeError), o.hold(apply):  # type: ignore[arg-type]
        assert state == ["changed"] and o.held
        raise RuntimeError
    assert state == ["original"] and not o.held
