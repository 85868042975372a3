"""`explain` shows a parent with its legs and every replace; status shows each position's
protection. On a real log written by the engine slice with the simulated broker."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

from engine.cli.main import main
from events.catalogue import RiskApproved, StopLoss, TakeProfit
from events.store import LogReader
from projections.protection import describe, protection_of
from replay.forensics.explain import explain
from replay.forensics.render import render_explain
from tests.execution.simworld import mk_bar, sim_world

D = Decimal


async def _protected_log(path: Path) -> tuple[RiskApproved, str]:
    async with sim_world(path) as w:
        await w.bar(mk_bar("AAPL", 0, "100"))
        d = await w.order(qty="10", order_class="bracket", time_in_force="gtc",
                          stop_loss=StopLoss(stop_price=D(98)),
                          take_profit=TakeProfit(limit_price=D(106)))
        assert isinstance(d, RiskApproved)
        await w.bar(mk_bar("AAPL", 1, "100"))
        sl = d.legs[1].client_order_id
        p = protection_of(w.proj, "AAPL")
        assert (p.where, p.stop, p.distance, p.covered) == ("broker", D(98), D(2), D(10))
        assert describe(p) == "98.00 broker (2.00 away)"
        new = await w.execution.replace(sl, stop_price=D("99.50"))
        await w.pump()
        assert new is not None
        await w.bar(mk_bar("AAPL", 2, "100.5", h="101", lo="100"))
        assert protection_of(w.proj, "AAPL").stop == D("99.50")
        await w.log.flush()
        return d, new


async def test_explain_shows_the_family_and_every_replace(log_path: Path) -> None:
    d, new = await _protected_log(log_path)
    tp, sl = (leg.client_order_id for leg in d.legs)
    async with LogReader(log_path) as r:
        x = await explain(r, d.client_order_id)
        by_leg = await explain(r, new)  # asking about the moved stop finds the whole family
    assert {d.client_order_id, tp, sl, new} <= set(x.client_order_ids)
    assert set(by_leg.client_order_ids) == set(x.client_order_ids)
    text = render_explain(x)
    assert f"stop_loss leg {sl}" in text  # the approval names its legs
    assert f"[-sl] replace requested as {new}: stop 99.50" in text  # whose step it is
    assert "[-sl] broker has it as" in text and "[-tp] broker has it as" in text
    assert f"{new} [stop-loss leg of {d.client_order_id}]: stop accepted, stop 99.50" in text
    assert f"{sl} [stop-loss leg of {d.client_order_id}]: stop replaced" in text
    assert f"{d.client_order_id} [bracket, legs {tp}, {new}]: market filled" in text


def test_status_shows_the_stop_of_each_position(log_path: Path, capsys: object) -> None:
    asyncio.run(_protected_log(log_path))  # the CLI runs its own event loop
    assert main(["--log", str(log_path), "status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    (pos,) = out["positions"]
    assert pos["protection"]["where"] == "broker" and pos["protection"]["stop"] == "99.50"
    assert main(["--log", str(log_path), "status"]) == 0
    text = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "99.50 (1.00 away, live at the broker)" in text  # marked at 100.5
