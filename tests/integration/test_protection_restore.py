"""A position's stop removed at the broker — while the engine runs, and while it is stopped —
is found at the next reconciliation / start, recorded, and restored once through the gate at
the recorded level (policy `restore`); `alert` only records it. Real alpaca-py client, fake
Alpaca."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from events.catalogue import ProtectionMissing, RiskApproved, StopLoss, leg_client_order_id
from projections.orders import OrderStatus
from tests.fake_alpaca import FakeAlpaca
from tests.integration.alpaca_world import AlpacaWorld, alpaca_world
from tests.integration.test_alpaca_execution import RICH

D = Decimal
S = OrderStatus
RESTORE = {**RICH, "reconcile": {"missing_protection": "restore"}}



def live_stops(fake: FakeAlpaca) -> list[dict[str, Any]]:
    return [o for o in fake.orders("open") if o["type"] in ("stop", "stop_limit",
                                                            "trailing_stop")]


async def protected_long(w: AlpacaWorld, fake: FakeAlpaca) -> str:
    """Long 4 AAPL with a stop at 180 at the broker (an OTO leg); returns the leg's id."""
    d = await w.order(qty="4", order_class="oto", time_in_force="gtc",
                      stop_loss=StopLoss(stop_price=D("180")))
    assert isinstance(d, RiskApproved), d
    await w.until(lambda: w.order_of(d.client_order_id).status == S.ACCEPTED)
    fake.fill(d.client_order_id, price="190")
    await w.until(lambda: w.order_of(d.client_order_id).status == S.FILLED)
    return leg_client_order_id(d.client_order_id, "stop_loss")


def missing_records(events: list[Any]) -> list[ProtectionMissing]:
    return [e for e in events if isinstance(e, ProtectionMissing)]


async def test_stop_removed_by_hand_while_running_is_restored_once(tmp_path: Path,
                                                                   fake: FakeAlpaca) -> None:
    async with alpaca_world(tmp_path / "log.sqlite", fake, **RESTORE) as w:
        sl = await protected_long(w, fake)
        (stop,) = live_stops(fake)
        fake.cancel(stop["id"])  # someone cancels it in Alpaca's dashboard
        await w.until(lambda: w.order_of(sl).status == S.CANCELED)
        for _ in range(3):  # every reconciliation looks; only the first restores
            await w.engine.reconciler.reconcile(startup=False)
            await w.engine.check_protection("reconciliation")
        (restored,) = live_stops(fake)
        assert (restored["side"], restored["qty"], restored["stop_price"]) == ("sell", "4", "180")
        assert restored["client_order_id"] != stop["client_order_id"]
        assert restored["time_in_force"] == "gtc"
        (record,) = missing_records(await w.events())
        assert (record.action, record.restore_intent_id) == ("restore", f"restore:{sl}")
        assert w.engine.proj.positions.positions["AAPL"].qty == 4


async def test_stop_removed_while_stopped_is_restored_at_start_once(tmp_path: Path,
                                                                    fake: FakeAlpaca) -> None:
    log = tmp_path / "log.sqlite"
    async with alpaca_world(log, fake, **RESTORE) as w:
        sl = await protected_long(w, fake)
    (stop,) = live_stops(fake)
    fake.cancel(stop["id"])  # while no engine listens: the update is lost
    for _ in range(2):  # two restarts: restored at the first, left alone at the second
        async with alpaca_world(log, fake, **RESTORE) as w:
            assert w.order_of(sl).status == S.CANCELED  # the start settled it by lookup
            assert len(live_stops(fake)) == 1
    async with alpaca_world(log, fake, **RESTORE) as w:
        assert len(missing_records(await w.events())) == 1
    (restored,) = live_stops(fake)
    assert (restored["qty"], restored["stop_price"]) == ("4", "180")


async def test_alert_only_records(tmp_path: Path, fake: FakeAlpaca) -> None:
    alert = {**RICH, "reconcile": {"missing_protection": "alert"}}
    async with alpaca_world(tmp_path / "log.sqlite", fake, **alert) as w:
        sl = await protected_long(w, fake)
        (stop,) = live_stops(fake)
        fake.expire(stop["id"])  # a DAY stop that expired overnight, say
        await w.until(lambda: w.order_of(sl).status == S.EXPIRED)
        assert await w.engine.check_protection("reconciliation") == 1
        assert live_stops(fake) == []
        (record,) = missing_records(await w.events())
        assert (record.client_order_id, record.action, record.uncovered) == (sl, "alert", 4)
        assert record.stop_status == "expired" and "stop 180" in record.detail


async def test_the_record_raises_the_missing_protection_alert(tmp_path: Path,
                                                               fake: FakeAlpaca) -> None:
    from engine.notify.rules import AlertRules

    async with alpaca_world(tmp_path / "log.sqlite", fake, **RESTORE) as w:
        await protected_long(w, fake)
        (stop,) = live_stops(fake)
        fake.cancel(stop["id"])
        await w.until(lambda: not any(
            o.is_open and o.order_type == "stop" for o in w.engine.proj.orders.orders.values()))
        await w.engine.check_protection("reconciliation")
        (record,) = missing_records(await w.events())
    alerts = AlertRules().on_event(1, record)
    assert [(a.kind, a.details["symbol"]) for a in alerts] == [("missing_protection", "AAPL")]
