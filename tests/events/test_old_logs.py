"""Logs written before the protection schema (v1 order events) replay to the same state.

The v1 structs below are copies of the definitions as they were on main before issue 11
(same tags, same fields). A log is written with them through the real store, then read by
this build: every row decodes (through the v1 -> v2 upcasters) and the projections equal
those of the same facts written in the current format.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from events.base import Event
from events.catalogue import (
    ALL_EVENT_TYPES,
    OrderAccepted,
    OrderIntent,
    OrderReplaced,
    OrphanOrderAdopted,
    ReplaceRequested,
    RiskApproved,
)
from events.codec import Codec, default_codec
from events.store import EventLog
from projections.orders import OrderStatus
from projections.state import rebuild_from_path
from tests.factories import T0, bar, fill, later, submitted_chain

D = Decimal


class IntentV1(Event, frozen=True, tag="intent"):
    intent_id: str
    strategy: str
    symbol: str
    side: str
    order_type: str = "market"
    qty: Decimal | None = None
    notional: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str = "day"
    reduce_only: bool = False
    allow_notional: bool = False
    signal_time: datetime | None = None
    reason: str = ""


class ApprovedV1(Event, frozen=True, tag="risk_approved"):
    intent_id: str
    client_order_id: str
    strategy: str
    symbol: str
    side: str
    order_type: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    time_in_force: str
    reference_price: Decimal
    estimated_notional: Decimal
    at_risk: Decimal
    reduce_only: bool = False
    day_trade: bool = False
    converted_to_notional: bool = False


class AcceptedV1(Event, frozen=True, tag="order_accepted"):
    client_order_id: str
    broker_order_id: str
    broker_time: datetime | None = None
    symbol: str | None = None


class ReplaceRequestedV1(Event, frozen=True, tag="replace_requested"):
    client_order_id: str
    new_client_order_id: str
    qty: Decimal | None = None
    limit_price: Decimal | None = None


class ReplacedV1(Event, frozen=True, tag="order_replaced"):
    client_order_id: str
    new_client_order_id: str
    new_broker_order_id: str
    qty: Decimal | None = None
    limit_price: Decimal | None = None


class AdoptedV1(Event, frozen=True, tag="orphan_adopted"):
    client_order_id: str
    broker_order_id: str
    symbol: str
    side: str
    order_type: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    filled_qty: Decimal
    broker_status: str
    intent_id: str | None = None


V1 = {IntentV1: OrderIntent, ApprovedV1: RiskApproved, AcceptedV1: OrderAccepted,
      ReplaceRequestedV1: ReplaceRequested, ReplacedV1: OrderReplaced,
      AdoptedV1: OrphanOrderAdopted}


class V1Codec(Codec):
    """Writes v1 rows: the old structs, stored with schema version 1 (as main did)."""

    def __init__(self) -> None:
        current = [t for t in ALL_EVENT_TYPES if t not in V1.values()]
        super().__init__(types=[*current, *V1], upcasters={})
        for old in V1:
            self.versions[old.__struct_config__.tag] = 1  # type: ignore[index]


def facts(old: bool) -> list[Any]:
    """One story, in v1 structs (old=True) or the current ones: a planned-stop entry that
    fills, a limit exit replaced to a new price, and an order adopted from the broker."""
    I_, A_, Acc, RR, RP, Ad = (list(V1) if old else list(V1.values()))
    t1 = later(1)
    return [
        bar("AAPL", T0, close="100"),
        I_(ts=t1, intent_id="i-a", strategy="s", symbol="AAPL", side="buy", qty=D(10),
           stop_price=D("98")),
        A_(ts=t1, intent_id="i-a", client_order_id="a", strategy="s", symbol="AAPL",
           side="buy", order_type="market", qty=D(10), notional=None, limit_price=None,
           time_in_force="day", reference_price=D(100), estimated_notional=D(1000),
           at_risk=D("20.00")),
        *[Acc(ts=e.ts, client_order_id=e.client_order_id, broker_order_id=e.broker_order_id)
          if isinstance(e, OrderAccepted) else e
          for e in submitted_chain("a", t1)],
        fill("a", qty="10", price="100", exec_id="xa", ts=t1, done=True),
        A_(ts=later(2), intent_id="i-b", client_order_id="b", strategy="s", symbol="AAPL",
           side="sell", order_type="limit", qty=D(4), notional=None, limit_price=D(110),
           time_in_force="gtc", reference_price=D(110), estimated_notional=D(440),
           at_risk=D(0)),
        *[Acc(ts=e.ts, client_order_id=e.client_order_id, broker_order_id=e.broker_order_id)
          if isinstance(e, OrderAccepted) else e
          for e in submitted_chain("b", later(2))],
        RR(ts=later(3), client_order_id="b", new_client_order_id="b-r1", limit_price=D(111)),
        RP(ts=later(3), client_order_id="b", new_client_order_id="b-r1",
           new_broker_order_id="bb-r1", limit_price=D(111)),
        Acc(ts=later(3), client_order_id="b-r1", broker_order_id="bb-r1"),
        Ad(ts=later(4), client_order_id="manual-1", broker_order_id="bm1", symbol="MSFT",
           side="buy", order_type="limit", qty=D(1), notional=None, limit_price=D(300),
           filled_qty=D(0), broker_status="new"),
    ]


async def _write(path: Path, events: list[Any], codec: Codec) -> None:
    async with EventLog.open(path, codec=codec) as log:
        for e in events:
            await log.append(e)


async def test_v1_log_replays_to_the_same_state_as_the_current_format(tmp_path: Path) -> None:
    old_path, new_path = tmp_path / "v1.sqlite", tmp_path / "v2.sqlite"
    await _write(old_path, facts(old=True), V1Codec())
    await _write(new_path, facts(old=False), default_codec())

    import sqlite3
    versions = dict(sqlite3.connect(old_path).execute(
        "SELECT type, MAX(schema_version) FROM events GROUP BY type").fetchall())
    assert versions["risk_approved"] == 1 and versions["intent"] == 1  # really the old format

    old = await rebuild_from_path(old_path, use_snapshot=False)
    new = await rebuild_from_path(new_path, use_snapshot=False)
    assert old.fingerprint() == new.fingerprint()

    o = old.orders.orders
    assert o["a"].status == OrderStatus.FILLED and o["a"].order_class == "simple"
    assert o["a"].legs == () and o["a"].stop_price is None and not o["a"].protective
    assert o["b"].status == OrderStatus.REPLACED
    assert (o["b-r1"].status, o["b-r1"].limit_price, o["b-r1"].qty) == (
        OrderStatus.ACCEPTED, D(111), D(4))
    assert o["manual-1"].status == OrderStatus.ACCEPTED and not o["manual-1"].protective
    assert old.positions.positions["AAPL"].qty == D(10)
    assert old.risk.open_risk["AAPL"] == D("20.00")  # the planning stop still sizes it
    assert old.orders.reserved["AAPL"].sell_qty == D(4)
    assert old.orders.stops == {}
    assert old.orders.anomalies == []


def test_v1_payload_bytes_decode_with_v1_meaning() -> None:
    """Raw msgpack of a v1 intent (as stored): `stop_price` stays the planning stop of a
    market order, and every protection field takes its 'none' default."""
    raw = msgspec.msgpack.encode({
        "type": "intent", "ts": T0, "intent_id": "i", "strategy": "s", "symbol": "AAPL",
        "side": "buy", "order_type": "market", "qty": "5", "notional": None,
        "limit_price": None, "stop_price": "97.5", "time_in_force": "day",
        "reduce_only": False, "allow_notional": False, "signal_time": None, "reason": ""})
    ev = default_codec().decode("intent", 1, raw, seq=9)
    assert isinstance(ev, OrderIntent)
    assert (ev.order_type, ev.stop_price, ev.qty) == ("market", D("97.5"), D(5))
    assert (ev.order_class, ev.take_profit, ev.stop_loss, ev.trail_price,
            ev.trail_percent) == ("simple", None, None, None, None)
    raw_acc = msgspec.msgpack.encode({"type": "order_accepted", "ts": T0,
                                      "client_order_id": "c", "broker_order_id": "b"})
    acc = default_codec().decode("order_accepted", 1, raw_acc, seq=10)
    assert isinstance(acc, OrderAccepted) and acc.qty is None


def test_versions_were_bumped_so_old_builds_refuse_new_rows() -> None:
    c = default_codec()
    for tag in ("intent", "risk_approved", "order_accepted", "replace_requested",
                "order_replaced", "orphan_adopted"):
        assert c.versions[tag] == 2 and (tag, 1) in c.upcasters

