"""The dashboard's own fold, directly (pure): which fills stand behind a position."""

from __future__ import annotations

from engine.dashboard.fold import DashboardFold
from projections.state import Projections
from tests.factories import approved, fill, later


def fold(events: list[object]) -> tuple[Projections, DashboardFold]:
    proj, f = Projections(), DashboardFold()
    for seq, e in enumerate(events, 1):
        proj.apply(seq, e)
        f.apply(seq, e, proj)  # type: ignore[arg-type]
    return proj, f


def test_fills_behind_a_position_start_again_when_it_goes_flat_or_flips() -> None:
    evs: list[object] = [
        approved("a", qty="10"), fill("a", "4", "100"), fill("a", "6", "101", done=True),  # 2, 3
        approved("b", side="sell", qty="10", ts=later(1)),
        fill("b", "10", "102", side="sell", done=True, ts=later(1)),  # 5: flat
        approved("c", qty="3", ts=later(2)), fill("c", "3", "103", done=True, ts=later(2)),  # 7
    ]
    proj, f = fold(evs)
    assert [r.seq for r in f.position_fills["AAPL"]] == [7]
    evs += [approved("d", side="sell", qty="5", ts=later(3)),
            fill("d", "5", "104", side="sell", done=True, ts=later(3))]  # 9: 3 long -> 2 short
    proj, f = fold(evs)
    assert proj.positions.positions["AAPL"].qty == -2
    assert [r.seq for r in f.position_fills["AAPL"]] == [9]
