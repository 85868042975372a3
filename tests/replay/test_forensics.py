"""Forensics on a log written by the real engine slice (tests/replay/session.py)."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from events.base import Event, tag_of
from events.catalogue import BarReceived, FillReceived, OrderIntent, RiskRejected
from events.store import LogReader, correlation_of
from projections.calendar import trading_day
from projections.risk import realized_on
from projections.state import Projections
from replay.forensics.explain import explain
from replay.forensics.queries import (
    ForensicsError,
    NotFoundError,
    TimelineFilter,
    rebuild_at,
    state_at,
    timeline,
)
from replay.forensics.render import render_explain, render_state
from replay.forensics.verify import diff_broker, parse_broker_snapshot, verify_log
from tests.execution.simworld import T0
from tests.replay.session import Session

D = Decimal


async def all_events(path: Path) -> list[tuple[int, Any]]:
    async with LogReader(path) as r:
        return [x async for x in r.read()]


async def fold(path: Path, to_seq: int) -> Projections:
    """An independent fold: full decode of every row, applied one by one (not `rebuild`)."""
    proj = Projections()
    for seq, e in await all_events(path):
        if seq > to_seq:
            break
        proj.apply(seq, e)
    return proj


def corr(e: Any) -> tuple[str | None, str | None, str | None]:
    cls: type[Event] = type(e)
    return correlation_of(cls)(e)


# --- state ---------------------------------------------------------------------------------


async def test_state_at_seq_equals_the_live_engine_at_that_seq(session: Session) -> None:
    fps = session.fingerprints
    assert len(set(fps.values())) >= 10  # the states differ, so a wrong prefix is caught
    async with LogReader(session.path) as r:
        for seq, fp in fps.items():
            proj = await rebuild_at(r, at_seq=seq)
            assert proj.last_seq == seq
            assert proj.fingerprint() == fp, seq
            view = await state_at(r, at_seq=seq)
            qty = {p.symbol: p.qty for p in view.positions}.get("AAPL", D(0))
            assert qty == session.aapl_qty[seq]


async def test_state_at_seq_equals_an_independent_fold_of_the_prefix(session: Session) -> None:
    async with LogReader(session.path) as r:
        for seq in (1, 7, 15, 24, 31, 38, session.last_seq):
            assert (await rebuild_at(r, at_seq=seq)).fingerprint() == \
                (await fold(session.path, seq)).fingerprint()


async def test_state_view_reports_what_the_prefix_holds(session: Session) -> None:
    assert session.limit is not None
    events = await all_events(session.path)
    accepted = next(s for s, e in events if tag_of(type(e)) == "order_accepted"
                    and e.client_order_id == session.limit.client_order_id)
    async with LogReader(session.path) as r:
        mid = await state_at(r, at_seq=accepted)
        end = await state_at(r)
    # Mid-session: 10 AAPL bought at 103 (next bar's open), the limit order still open.
    assert [(p.symbol, p.qty, p.avg_cost) for p in mid.positions] == [("AAPL", D(10), D(103))]
    assert [o.client_order_id for o in mid.open_orders] == [session.limit.client_order_id]
    assert mid.trading_state == "active" and mid.kill_switch == "off"
    assert mid.account.cash_now == D(10000) - D(1030) - D("0.52")
    # At the end: 10 @ 103 + 3 @ 99 sold as 13 @ 101, then 4 bought at 106; fees 5 bps.
    assert end.as_of_seq == session.last_seq
    assert [(p.symbol, p.qty, p.avg_cost) for p in end.positions] == [("AAPL", D(4), D(106))]
    fees = D("0.52") + D("0.15") + D("0.66") + D("0.21")
    expected = D(13 * 101) - D(1030) - D(297) - fees
    assert end.realized_total.quantize(D("0.01")) == expected
    assert end.realized_today.quantize(D("0.01")) == expected  # all on Monday 2026-11-23
    assert end.trading_day is not None and end.trading_day.isoformat() == "2026-11-23"
    assert end.open_orders == [] and end.orders_total == 6  # the replacement counts
    assert [(b.symbol, b.close) for b in end.last_bars] == [("AAPL", D(106)), ("WHOLE", D(50))]
    text = render_state(end)
    assert "AAPL" in text and "active" in text and f"seq {session.last_seq}" in text


async def test_state_at_time_is_the_prefix_recorded_by_then(session: Session) -> None:
    at = T0 + timedelta(minutes=5, seconds=30)
    events = await all_events(session.path)
    want = max(s for s, e in events if e.ts <= at)
    async with LogReader(session.path) as r:
        view = await state_at(r, at=at)
        proj = await rebuild_at(r, at=at)
        before = await state_at(r, at=T0 - timedelta(days=1))
        with pytest.raises(ForensicsError, match="past the end"):
            await state_at(r, at_seq=session.last_seq + 1)
    assert view.as_of_seq == want and view.as_of_ts == at
    assert proj.fingerprint() == (await fold(session.path, want)).fingerprint()
    assert before.as_of_seq == 0 and before.positions == []


# --- explain -------------------------------------------------------------------------------


async def test_explain_shows_bar_intent_decision_submit_fill(session: Session) -> None:
    assert session.buy is not None
    coid = session.buy.client_order_id
    events = await all_events(session.path)
    intent_seq = next(s for s, e in events
                      if isinstance(e, OrderIntent) and e.intent_id == "buy-1")
    seen_bar = max(s for s, e in events if isinstance(e, BarReceived) and s < intent_seq
                   and e.bar.symbol == "AAPL")
    fill_seq, fill = next((s, e) for s, e in events
                          if isinstance(e, FillReceived) and e.client_order_id == coid)
    async with LogReader(session.path) as r:
        by_coid = await explain(r, coid)
        by_intent = await explain(r, "buy-1")
    assert by_coid.steps == by_intent.steps
    x = by_coid
    assert x.matched == "client_order_id" and x.intent_id == "buy-1" and x.symbol == "AAPL"
    assert [(s.role, s.type) for s in x.steps] == [
        ("bar", "bar"), ("intent", "intent"), ("decision", "risk_approved"),
        ("order", "order_submit_requested"), ("order", "order_submitted"),
        ("order", "order_accepted"), ("fill_bar", "bar"), ("fill", "fill")]
    assert x.steps[0].seq == seen_bar
    assert x.steps[7].seq == fill_seq
    # the bar that priced the fill is recorded just before it (its symbol's preceding bar)
    assert x.steps[6].seq == max(s for s, e in events if isinstance(e, BarReceived)
                                 and s < fill_seq and e.bar.symbol == "AAPL")
    priced = x.steps[6].event
    assert isinstance(priced, BarReceived) and priced.bar.start == fill.broker_time
    assert fill.price == priced.bar.open  # a market order fills at the next bar's open
    assert x.decision == "approved" and x.reasons == []
    assert [(o.client_order_id, o.status, o.filled_qty) for o in x.orders] == \
        [(coid, "filled", D(10))]
    text = render_explain(x)
    for word in ("bar seen", "intent", "risk_approved", "order_submitted", "fill", "103"):
        assert word in text


async def test_explain_rejected_intent_lists_every_reason(session: Session) -> None:
    assert session.rejected is not None
    events = await all_events(session.path)
    logged = next(e for _, e in events if isinstance(e, RiskRejected))
    async with LogReader(session.path) as r:
        x = await explain(r, "too-big")
    assert x.decision == "rejected" and x.client_order_ids == [] and x.orders == []
    assert len(x.reasons) >= 2
    assert x.reasons == list(logged.reasons)
    assert [s.role for s in x.steps] == ["bar", "intent", "decision"]
    text = render_explain(x)
    for reason in logged.reasons:
        assert reason.code in text and reason.message in text


async def test_explain_follows_a_replacement(session: Session) -> None:
    assert session.limit is not None and session.replacement is not None
    old, new = session.limit.client_order_id, session.replacement
    async with LogReader(session.path) as r:
        x = await explain(r, "lim-1")
        via_new = await explain(r, new)
        proj = await rebuild_at(r)
    assert x.client_order_ids == [old, new]
    assert via_new.steps == x.steps
    types = [s.type for s in x.steps]
    assert types.index("order_replaced") < types.index("fill")
    fills = [s.event for s in x.steps if isinstance(s.event, FillReceived)]
    assert [(f.client_order_id, f.qty) for f in fills] == [(new, D(3))]
    assert [(o.client_order_id, o.status) for o in x.orders] == [(old, "replaced"),
                                                                 (new, "filled")]
    assert x.anomalies == [a for a in proj.orders.anomalies
                           if a.client_order_id in (old, new)]


async def test_explain_unknown_id(session: Session) -> None:
    async with LogReader(session.path) as r:
        with pytest.raises(NotFoundError, match="no order or intent 'nope'"):
            await explain(r, "nope")


# --- timeline ------------------------------------------------------------------------------


async def seqs(path: Path, **kw: Any) -> list[int]:
    async with LogReader(path) as r:
        return [e.seq for e in await timeline(r, TimelineFilter(**kw))]


async def test_timeline_filters_match_a_brute_force_scan(session: Session) -> None:
    assert session.limit is not None and session.canceled is not None
    events = await all_events(session.path)
    p = session.path

    def coids_where(pred: Any) -> set[str]:
        return {c for _, e in events if pred(e) and (c := corr(e)[1]) is not None}

    whole = coids_where(lambda e: corr(e)[2] == "WHOLE")
    want = [s for s, e in events if corr(e)[2] == "WHOLE" or corr(e)[1] in whole]
    got = await seqs(p, symbol="WHOLE")
    assert got == want
    canceled = [s for s, e in events if tag_of(type(e)) == "order_canceled"]
    assert set(canceled) <= set(got)  # order events without a symbol column still match

    lim = {session.limit.client_order_id, session.replacement}
    want = [s for s, e in events if corr(e)[0] == "lim-1" or corr(e)[1] in lim]
    assert await seqs(p, intent="lim-1") == want
    assert len(want) >= 8  # intent, decision, submit, ack, replace chain, the new order...

    coid = session.canceled.client_order_id
    assert await seqs(p, order=coid) == [s for s, e in events if corr(e)[1] == coid]

    want = [s for s, e in events if tag_of(type(e)) in ("fill", "risk_rejected")]
    assert await seqs(p, types=("fill", "RiskRejected")) == want and len(want) == 5

    assert await seqs(p, from_seq=10, to_seq=20) == list(range(10, 21))

    lo, hi = T0 + timedelta(minutes=3), T0 + timedelta(minutes=4)
    assert await seqs(p, since=lo, until=hi) == [s for s, e in events if lo <= e.ts <= hi]

    aapl_fills = [s for s, e in events if isinstance(e, FillReceived) and e.symbol == "AAPL"]
    assert await seqs(p, symbol="AAPL", types=("fill",), limit=2) == aapl_fills[:2]
    assert await seqs(p, limit=0) == []

    with pytest.raises(ForensicsError, match="unknown event type 'fil'"):
        await seqs(p, types=("fil",))


# --- verify --------------------------------------------------------------------------------


def flip_byte_in_payload(path: Path, seq: int, needle: bytes = b"AAPL") -> None:
    """Tamper below SQL (triggers refuse UPDATE): edit the file where `seq`'s payload is."""
    con = sqlite3.connect(path)
    payload = con.execute("SELECT payload FROM events WHERE seq = ?", (seq,)).fetchone()[0]
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(path.read_bytes())
    at = data.find(payload)
    assert at >= 0 and data.find(payload, at + 1) < 0
    data[at + payload.find(needle)] ^= 0x01  # 'A' -> '@'
    path.write_bytes(bytes(data))


async def test_verify_finds_a_flipped_byte(session_copy: Path) -> None:
    ok = await verify_log(session_copy)
    assert ok.ok and ok.rows_checked == ok.last_good_seq > 50
    events = await all_events(session_copy)
    target = next(s for s, e in events if isinstance(e, FillReceived))
    flip_byte_in_payload(session_copy, target)
    bad = await verify_log(session_copy)
    assert not bad.ok and bad.first_bad_seq == target and bad.rows_checked == target - 1
    assert "hash mismatch" in bad.reason


async def test_verify_log_agrees_with_the_store(session_copy: Path) -> None:
    """Same verdicts as `LogReader.verify` (which it reports on), good and bad."""
    async def both() -> tuple[tuple[object, ...], tuple[object, ...]]:
        ours = await verify_log(session_copy)
        async with LogReader(session_copy) as r:
            theirs = await r.verify()
        return ((ours.ok, ours.rows_checked, ours.last_good_seq, ours.first_bad_seq,
                 ours.reason),
                (theirs.ok, theirs.rows_checked, theirs.last_seq, theirs.first_bad_seq,
                 theirs.reason))

    ours, theirs = await both()
    assert ours == theirs and ours[0] is True
    con = sqlite3.connect(session_copy)
    con.execute("DROP TRIGGER events_no_update")
    con.execute("UPDATE events SET client_order_id = 'forged' WHERE seq = 12")
    con.commit()
    con.close()
    ours, theirs = await both()
    assert ours == theirs and ours[3] == 12 and "index columns" in str(ours[4])


async def test_verify_reports_a_truncated_file(session_copy: Path) -> None:
    con = sqlite3.connect(session_copy)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = session_copy.read_bytes()
    session_copy.write_bytes(data[: len(data) // 2])
    bad = await verify_log(session_copy)
    assert not bad.ok and "truncated" in bad.reason


# --- diff-broker ---------------------------------------------------------------------------


async def test_diff_broker(session: Session) -> None:
    async with LogReader(session.path) as r:
        same = await diff_broker(r, parse_broker_snapshot(
            {"positions": [{"symbol": "AAPL", "qty": "4", "avg_entry_price": "106"}],
             "taken_at": "2026-11-23T15:00:00Z"}))
        assert same.ok and same.matches == ["AAPL"] and same.as_of_seq == session.last_seq
        assert same.taken_at is not None and same.taken_at.hour == 15
        # Alpaca's own /v2/positions list: unsigned qty with side, numbers as strings.
        alpaca = json.loads('[{"symbol": "AAPL", "qty": "5", "side": "long", '
                            '"avg_entry_price": "106", "market_value": "530"}, '
                            '{"symbol": "MSFT", "qty": "2", "side": "short", '
                            '"avg_entry_price": "300.5"}]', parse_float=Decimal)
        diff = await diff_broker(r, parse_broker_snapshot(alpaca))
        assert not diff.ok
        assert [(d.symbol, d.kind, d.ours_qty, d.broker_qty) for d in diff.differences] == [
            ("AAPL", "qty", D(4), D(5)), ("MSFT", "missing_in_log", D(0), D(-2))]
        price = await diff_broker(r, parse_broker_snapshot(
            [{"symbol": "AAPL", "qty": 4, "avg_entry_price": Decimal("106.5")}]))
        assert [d.kind for d in price.differences] == ["avg_price"]
        # As of an earlier seq the log held 10 AAPL and the broker snapshot then says 10.
        seq = min(s for s, q in session.aapl_qty.items() if q == 10)
        earlier = await diff_broker(r, parse_broker_snapshot(
            [{"symbol": "AAPL", "qty": "10", "avg_entry_price": "103"}]), at_seq=seq)
        assert earlier.ok
        flat = await diff_broker(r, parse_broker_snapshot({"positions": []}))
        assert [(d.symbol, d.kind) for d in flat.differences] == [("AAPL", "missing_at_broker")]
    with pytest.raises(ForensicsError, match=r"positions\[0\].*qty"):
        parse_broker_snapshot({"positions": [{"symbol": "AAPL", "avg_entry_price": "1"}]})
    with pytest.raises(ForensicsError, match="listed twice"):
        parse_broker_snapshot([{"symbol": "A", "qty": "1", "avg_entry_price": "1"}] * 2)


async def test_state_at_uses_ny_trading_day(session: Session) -> None:
    async with LogReader(session.path) as r:
        view = await state_at(r)
        proj = await rebuild_at(r)
    assert view.as_of_ts is not None
    assert view.realized_today == realized_on(proj.risk, trading_day(view.as_of_ts))
