"""Protection on the SimulatedBroker, end to end: intents through the gate and execution to
the simulated broker and back into the log. Stops, gaps, stop-limits, trailing stops,
brackets held and sized, siblings canceled, the both-touched rule, determinism."""

from __future__ import annotations

import hashlib
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.brokers.simulated import SimConfig
from events.catalogue import (
    FillReceived,
    IllegalTransition,
    RiskApproved,
    RiskRejected,
    StopLoss,
    TakeProfit,
    UnknownBrokerMessage,
)
from projections.orders import OrderStatus
from tests.execution.simworld import mk_bar, sim_world

D = Decimal
S = OrderStatus


def bracket(sl: str = "98", tp: str = "104", sl_limit: str | None = None) -> dict[str, Any]:
    return {"order_class": "bracket", "time_in_force": "gtc",
                "stop_loss": StopLoss(stop_price=D(sl),
                                   limit_price=D(sl_limit) if sl_limit else None),
                "take_profit": TakeProfit(limit_price=D(tp))}


def fills_of(w: Any, coid: str) -> list[tuple[Decimal, Decimal]]:
    return [(f.qty, f.price) for f in w.fills_seen if f.client_order_id == coid]


async def fills(w: Any, coid: str) -> list[tuple[Decimal, Decimal]]:
    return [(e.qty, e.price) for e in await w.events()
            if isinstance(e, FillReceived) and e.client_order_id == coid]


async def entered(w: Any, qty: str = "10", **kw: Any) -> tuple[RiskApproved, Any, Any]:
    await w.bar(mk_bar("AAPL", 0, "100"))
    d = await w.order(qty=qty, **(kw or bracket()))
    assert isinstance(d, RiskApproved), d
    o = w.proj.orders.orders
    tp, sl = (o[leg.client_order_id] for leg in d.legs)
    return d, tp, sl


async def test_bracket_legs_held_until_fill_then_stop_fills_and_cancels_take_profit(
        log_path: Path) -> None:
    async with sim_world(log_path) as w:
        d, tp, sl = await entered(w)
        assert (tp.status, sl.status) == (S.HELD, S.HELD)
        assert tp.broker_order_id and sl.broker_order_id  # known from the submit answer
        await w.bar(mk_bar("AAPL", 1, "100", h="101", lo="99.5"))  # parent fills at 100
        assert w.proj.orders.orders[d.client_order_id].status == S.FILLED
        assert (tp.status, sl.status) == (S.ACCEPTED, S.ACCEPTED)  # live from the next bar
        await w.bar(mk_bar("AAPL", 2, "99", h="99", lo="97"))  # trades through the stop
        assert await fills(w, sl.client_order_id) == [(D(10), D(98))]
        assert (sl.status, tp.status) == (S.FILLED, S.CANCELED)
        assert w.proj.positions.positions["AAPL"].qty == 0
        assert w.proj.orders.open_ids == set()
        bad = [e for e in await w.events() if isinstance(e, IllegalTransition | UnknownBrokerMessage)]
        assert bad == []


async def test_stop_gapped_through_fills_at_the_open_with_slippage(log_path: Path) -> None:
    async with sim_world(log_path, config=SimConfig(slippage_bps=D(10))) as w:
        _d, _tp, sl = await entered(w)
        await w.bar(mk_bar("AAPL", 1, "100"))
        await w.bar(mk_bar("AAPL", 2, "95", h="96", lo="94"))  # opens below the 98 stop
        # 95 less 10 bps: not the stop price a gap never traded at
        assert await fills(w, sl.client_order_id) == [(D(10), D("94.905"))]


async def test_bar_touching_both_legs_fills_the_stop(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        _d, tp, sl = await entered(w)
        await w.bar(mk_bar("AAPL", 1, "100"))
        await w.bar(mk_bar("AAPL", 2, "100", h="105", lo="97"))  # 104 and 98 both touched
        assert (sl.status, tp.status) == (S.FILLED, S.CANCELED)
        assert await fills(w, tp.client_order_id) == []


async def test_take_profit_fill_cancels_the_stop(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        _d, tp, sl = await entered(w)
        await w.bar(mk_bar("AAPL", 1, "100"))
        await w.bar(mk_bar("AAPL", 2, "101", h="105", lo="100.5"))
        assert await fills(w, tp.client_order_id) == [(D(10), D(104))]
        assert (tp.status, sl.status) == (S.FILLED, S.CANCELED)


async def test_partial_parent_fill_sizes_the_legs(log_path: Path) -> None:
    async with sim_world(log_path, config=SimConfig(volume_participation=D("0.01"))) as w:
        d, tp, sl = await entered(w, qty="10",
                                  **{**bracket(), "order_type": "limit",
                                     "limit_price": D(100)})
        await w.bar(mk_bar("AAPL", 1, "100", v="400"))  # 4 of 10 fill
        assert w.proj.orders.orders[d.client_order_id].filled_qty == 4
        assert (tp.status, sl.status) == (S.HELD, S.HELD)
        await w.execution.cancel(d.client_order_id, reason="enough")
        await w.pump()
        assert w.proj.orders.orders[d.client_order_id].status == S.CANCELED
        assert (tp.status, sl.status, tp.qty, sl.qty) == (S.ACCEPTED, S.ACCEPTED, D(4), D(4))
        await w.bar(mk_bar("AAPL", 2, "99", lo="97", v="100000"))
        assert await fills(w, sl.client_order_id) == [(D(4), D(98))]
        assert w.proj.positions.positions["AAPL"].qty == 0


async def test_unfilled_parent_canceled_cancels_its_legs(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        d, tp, sl = await entered(w, **{**bracket(sl="93"), "order_type": "limit",
                                        "limit_price": D(95)})
        await w.execution.cancel(d.client_order_id, reason="changed my mind")
        await w.pump()
        assert (tp.status, sl.status) == (S.CANCELED, S.CANCELED)
        assert not [e for e in await w.events() if isinstance(e, IllegalTransition)]


async def test_stop_limit_becomes_a_limit(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        _d, _tp, sl = await entered(w, **bracket(sl="98", sl_limit="97.5"))
        await w.bar(mk_bar("AAPL", 1, "100"))
        await w.bar(mk_bar("AAPL", 2, "97", h="97.2", lo="96"))  # gaps below the limit
        assert await fills(w, sl.client_order_id) == []
        assert sl.status == S.ACCEPTED  # resting as a limit at 97.5
        await w.bar(mk_bar("AAPL", 3, "97", h="97.8", lo="96.5"))
        assert await fills(w, sl.client_order_id) == [(D(10), D("97.5"))]


async def test_trailing_stop_ratchets_bar_by_bar(log_path: Path) -> None:
    async with sim_world(log_path) as w:
        await w.bar(mk_bar("AAPL", 0, "100"))
        await w.order(qty="10")
        await w.bar(mk_bar("AAPL", 1, "100"))
        d = await w.order(side="sell", qty="10", order_type="trailing_stop",
                          trail_percent=D(2), time_in_force="gtc")
        assert isinstance(d, RiskApproved) and d.protective
        await w.bar(mk_bar("AAPL", 2, "104", h="105", lo="103.5"))  # hwm 105 -> stop 102.90
        sim = w.broker._by_coid[d.client_order_id]
        assert (sim.hwm, sim.stop()) == (D(105), D("102.90"))
        await w.bar(mk_bar("AAPL", 3, "104", h="104", lo="103"))  # above the stop
        assert sim.hwm == D(105) and await fills(w, d.client_order_id) == []
        await w.bar(mk_bar("AAPL", 4, "108", h="110", lo="107.9", c="109"))  # ratchets: 107.80
        assert sim.stop() == D("107.80")
        # The log follows the mark as the broker reports it (status and the budget use it).
        ours = w.proj.orders.orders[d.client_order_id]
        assert (ours.hwm, ours.stop_price) == (D(110), D("107.80"))
        await w.bar(mk_bar("AAPL", 5, "109", h="109", lo="106"))
        assert await fills(w, d.client_order_id) == [(D(10), D("107.80"))]


async def test_bad_protection_is_refused_with_a_code_and_the_engine_keeps_going(
        log_path: Path) -> None:
    async with sim_world(log_path) as w:
        await w.bar(mk_bar("AAPL", 0, "100"))
        for kw, code in [(bracket(sl="101"), "STOP_WRONG_SIDE"),
                         ({**bracket(), "qty": "1.5"}, "ADVANCED_ORDER_WHOLE_SHARES")]:
            qty = kw.pop("qty", "10")
            d = await w.order(qty=qty, **kw)
            assert isinstance(d, RiskRejected) and code in {r.code for r in d.reasons}
        await w.order(qty="10")
        await w.bar(mk_bar("AAPL", 1, "100"))
        d = await w.order(side="sell", qty="10", order_type="trailing_stop",
                          trail_percent=D(0), time_in_force="gtc")
        assert isinstance(d, RiskRejected) and {r.code for r in d.reasons} == {
            "TRAIL_NOT_POSITIVE"}
        assert w.broker.submits == 1
        d = await w.order(qty="1", **bracket())
        assert isinstance(d, RiskApproved)


async def _story(path: Path) -> str:
    async with sim_world(path, config=SimConfig(slippage_bps=D(5),
                                                 volume_participation=D("0.01"))) as w:
        await w.bar(mk_bar("AAPL", 0, "100"))
        await w.order(qty="10", **bracket())
        closes = ["100", "101", "102", "99", "98.5", "97", "103", "104.5"]
        for i, c in enumerate(closes, start=1):
            await w.bar(mk_bar("AAPL", i, c, h=str(D(c) + 1), lo=str(D(c) - 1), v="600"))
        await w.log.flush()
    con = sqlite3.connect(path)
    rows = con.execute("SELECT type, payload FROM events ORDER BY seq").fetchall()
    return hashlib.sha256(b"".join(t.encode() + p for t, p in rows)).hexdigest()


async def test_protected_runs_are_byte_identical(tmp_path: Path) -> None:
    assert await _story(tmp_path / "a.sqlite") == await _story(tmp_path / "b.sqlite")


async def test_moving_a_stop_goes_through_the_gate_and_the_broker(log_path: Path) -> None:
    from engine.risk.limits import RiskLimits
    limits = RiskLimits(max_order_notional=D(10**6), max_symbol_exposure=D(10**6),
                        max_gross_exposure=D(10**6), max_open_positions=50,
                        daily_loss_limit=D(60), daily_loss_limit_pct=None,
                        weekly_loss_limit_pct=D(1), max_orders_per_minute=10**6,
                        day_trade_mode="off")
    async with sim_world(log_path, limits=limits) as w:
        d, tp, sl = await entered(w)  # 10 shares, stop 98: 20 + gap of the 60 budget
        await w.bar(mk_bar("AAPL", 1, "100"))
        move = {"side": "sell", "qty": "10", "order_type": "stop", "time_in_force": "gtc",
                    "replaces": sl.client_order_id}
        up = await w.order(**move, stop_price=D("99.5"))
        assert isinstance(up, RiskApproved) and up.replaces == sl.client_order_id
        new = w.proj.orders.orders[up.client_order_id]
        assert (sl.status, new.status, new.stop_price, new.parent_id) == (
            S.REPLACED, S.ACCEPTED, D("99.5"), d.client_order_id)
        assert w.broker._by_coid[up.client_order_id].request.stop_price == D("99.5")
        # Loosening to 90 would hold 10 x 10 = 100 of a 60 budget: refused; 96 fits.
        far = await w.order(**{**move, "replaces": new.client_order_id}, stop_price=D(90))
        assert isinstance(far, RiskRejected) and {r.code for r in far.reasons} == {
            "DAILY_LOSS_LIMIT"}
        wrong = await w.order(**{**move, "replaces": new.client_order_id},
                              stop_price=D("100.5"))
        assert isinstance(wrong, RiskRejected) and {r.code for r in wrong.reasons} == {
            "STOP_WRONG_SIDE"}
        bogus = await w.order(**{**move, "replaces": tp.client_order_id}, stop_price=D(97))
        assert isinstance(bogus, RiskRejected) and {r.code for r in bogus.reasons} == {
            "REPLACE_TARGET_INVALID"}
        ok = await w.order(**{**move, "replaces": new.client_order_id}, stop_price=D(96))
        assert isinstance(ok, RiskApproved)
        assert w.proj.orders.orders[ok.client_order_id].stop_price == D(96)
        await w.bar(mk_bar("AAPL", 2, "97", lo="95.5"))
        assert await fills(w, ok.client_order_id) == [(D(10), D(96))]
        assert tp.status == S.CANCELED and w.proj.positions.positions["AAPL"].qty == 0


async def test_oco_on_an_open_position_both_legs_live_one_cancels_the_other(
        log_path: Path) -> None:
    async with sim_world(log_path) as w:
        await w.bar(mk_bar("AAPL", 0, "100"))
        await w.order(qty="10")
        await w.bar(mk_bar("AAPL", 1, "100"))
        oco = await w.order(side="sell", qty="10", order_class="oco", order_type="limit",
                            limit_price=D(105), time_in_force="gtc", reduce_only=True,
                            take_profit=TakeProfit(limit_price=D(105)),
                            stop_loss=StopLoss(stop_price=D(97)))
        assert isinstance(oco, RiskApproved) and oco.protective
        assert (oco.order_type, oco.limit_price, [leg.role for leg in oco.legs]) == (
            "limit", D(105), ["stop_loss"])
        tp = w.proj.orders.orders[oco.client_order_id]
        sl = w.proj.orders.orders[oco.legs[0].client_order_id]
        assert (tp.status, sl.status) == (S.ACCEPTED, S.ACCEPTED)  # both live at once
        assert [o.client_order_id for o in w.gate_view_protection("AAPL")] == [
            sl.client_order_id]
        await w.bar(mk_bar("AAPL", 2, "100", h="106", lo="99"))
        assert await fills(w, tp.client_order_id) == [(D(10), D(105))]
        assert sl.status == S.CANCELED and w.proj.positions.positions["AAPL"].qty == 0


async def test_short_bracket_mirrors_the_long(log_path: Path) -> None:
    from tests.execution.simworld import WIDE
    async with sim_world(log_path, config=SimConfig(allow_short=True),
                         limits=WIDE.model_copy(update={"allow_short": True})) as w:
        await w.bar(mk_bar("AAPL", 0, "100"))
        d = await w.order(side="sell", qty="5", order_class="bracket", time_in_force="gtc",
                          stop_loss=StopLoss(stop_price=D(103)),
                          take_profit=TakeProfit(limit_price=D(95)))
        assert isinstance(d, RiskApproved), d
        assert [(leg.side, leg.role) for leg in d.legs] == [("buy", "take_profit"),
                                                            ("buy", "stop_loss")]
        await w.bar(mk_bar("AAPL", 1, "100"))
        await w.bar(mk_bar("AAPL", 2, "104", h="104.5", lo="103.5"))  # gaps above the stop
        sl = w.proj.orders.orders[d.legs[1].client_order_id]
        assert await fills(w, sl.client_order_id) == [(D(5), D(104))]
        assert w.proj.positions.positions["AAPL"].qty == 0
