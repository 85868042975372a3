"""A position whose stop the broker can not hold (fractional, engine-side allowed): status
says "engine-side", and the engine closes it when a bar reaches the stop."""

from __future__ import annotations

from decimal import Decimal

from engine.protection_watch import engine_side_exits
from projections.protection import describe, protection_of
from projections.state import Projections
from tests.factories import T0, approved, bar, fill, later, submitted_chain

D = Decimal


def test_engine_side_stop_is_reported_and_acted_on_once() -> None:
    p = Projections()
    events = [bar("AAPL", T0, close="100"),
              approved("frac", qty="0.5", engine_side=True, risk_stop=D(98)),
              *submitted_chain("frac"), fill("frac", qty="0.5", exec_id="x1", done=True)]
    for i, e in enumerate(events, start=1):
        p.apply(i, e)
    prot = protection_of(p, "AAPL")
    assert (prot.where, prot.stop, prot.covered) == ("engine-side", D(98), D("0.5"))
    assert describe(prot) == "98.00 engine-side (2.00 away)"
    above = bar("AAPL", later(1), close="99", low="98.5").bar
    assert engine_side_exits(p, above, later(2)) == []
    crossed = bar("AAPL", later(2), close="98.2", low="97.9").bar
    (exit_,) = engine_side_exits(p, crossed, later(3))
    assert (exit_.side, exit_.qty, exit_.reduce_only, exit_.strategy) == (
        "sell", D("0.5"), True, "engine-stop")
    assert "engine-side stop 98" in exit_.reason
    # Once the exit is on its way, the next bar does not ask again.
    p.apply(20, approved("exit", side="sell", qty="0.5", reduce_only=True))
    assert engine_side_exits(p, crossed, later(3)) == []


def test_broker_held_positions_are_not_watched_by_the_engine() -> None:
    p = Projections()
    for i, e in enumerate([bar("AAPL", T0, close="100"), approved("whole", qty="1"),
                           *submitted_chain("whole"),
                           fill("whole", qty="1", exec_id="x", done=True)], start=1):
        p.apply(i, e)
    assert protection_of(p, "AAPL").where == "none"
    assert engine_side_exits(p, bar("AAPL", later(1), close="50").bar, later(2)) == []
