"""One test per check: each fails if its check is removed (the same intent is approved in a
world where only that condition differs)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from events.catalogue import KillSwitchEngaged, OrderIntent, TradingStateChanged
from tests.risk.world import approved_, codes, generous, trading_world

D = Decimal


async def test_a_plain_order_is_approved_with_deterministic_client_id(log_path: Path) -> None:
    async with trading_world(log_path) as w:
        d = approved_(await w.submit(intent_id="abc"))
        assert d.client_order_id.startswith("mqd-") and len(d.client_order_id) <= 48
        assert d.qty == 1 and d.symbol == "AAPL"
    async with trading_world(log_path.with_name("other.sqlite")) as w2:
        assert approved_(await w2.submit(intent_id="abc")).client_order_id == d.client_order_id


@pytest.mark.parametrize("state,code", [("halted", "TRADING_HALTED"), ("recovering", "RECOVERING")])
async def test_trading_states_refuse(log_path: Path, state: str, code: str) -> None:
    async with trading_world(log_path, state=state) as w:
        assert code in codes(await w.submit())


async def test_kill_switch_refuses_even_if_state_is_set_active_again(log_path: Path) -> None:
    async with trading_world(log_path) as w:
        await w.log.append(KillSwitchEngaged(ts=w.clock.now(), actor="t", reason="panic"))
        await w.log.append(TradingStateChanged(ts=w.clock.now(), state="active", reason="oops"))
        assert codes(await w.submit()) == {"KILL_SWITCH_ENGAGED"}


async def test_reducing_mode_allows_only_shrinking(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        await w.hold("AAPL", "5", "100")
        await w.log.append(TradingStateChanged(ts=w.clock.now(), state="reducing", reason="t"))
        assert "REDUCE_ONLY_MODE" in codes(await w.submit(side="buy", qty="1"))
        approved_(await w.submit(side="sell", qty="5"))


async def test_reduce_only_intent_that_would_grow(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        await w.hold("AAPL", "2", "100")
        assert "REDUCE_ONLY_WOULD_GROW" in codes(await w.submit(side="sell", qty="3",
                                                                reduce_only=True))
        approved_(await w.submit(side="sell", qty="2", reduce_only=True))


async def test_no_data_and_stale_data(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000", prices={"AAPL": "100"}) as w:
        assert "NO_MARKET_DATA" in codes(await w.submit(symbol="MSFT"))
        approved_(await w.submit())
        w.clock.advance(timedelta(seconds=119))
        approved_(await w.submit())
        w.clock.advance(timedelta(seconds=2))  # the 1-minute bar is now > 2 intervals old
        d = await w.submit()
        assert "STALE_DATA" in codes(d)
        assert d.reasons[0].values["max_age_s"] == "120"  # type: ignore[union-attr]
        await w.tick("AAPL", "101")
        approved_(await w.submit())


async def test_eligibility(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000",
                             limits=generous(deny_symbols="MSFT")) as w:
        assert "SYMBOL_NOT_TRADABLE" in codes(await w.submit(symbol="HALT"))
        assert "SYMBOL_DENIED" in codes(await w.submit(symbol="MSFT"))
        await w.tick("ZZZ", "5")
        assert "SYMBOL_UNKNOWN" in codes(await w.submit(symbol="ZZZ"))
    async with trading_world(log_path.with_name("b.sqlite"), cash="10000",
                             limits=generous(require_asset_info=False)) as w:
        await w.tick("ZZZ", "5")
        approved_(await w.submit(symbol="ZZZ"))


async def test_fractional_rules(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        assert "NOT_FRACTIONABLE" in codes(await w.submit(symbol="WHOLE", qty="0.5"))
        assert "FRACTIONAL_REQUIRES_DAY" in codes(await w.submit(qty="0.5", time_in_force="gtc"))
        approved_(await w.submit(qty="0.5"))
        approved_(await w.submit(symbol="WHOLE", qty="2", time_in_force="gtc"))


async def test_notional_intent_becomes_fractional_quantity(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        d = approved_(await w.submit(symbol="MSFT", qty=None, notional="10"))
        # market buys are priced 50 bps above last: 50 * 1.005 = 50.25
        assert d.qty == (D(10) / D("50.25")).quantize(D("1E-9"), rounding="ROUND_DOWN")
        assert d.qty * d.reference_price <= 10


async def test_one_dollar_minimum(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        assert "BELOW_MIN_NOTIONAL" in codes(await w.submit(qty=None, notional="0.5"))
        assert "BELOW_MIN_NOTIONAL" in codes(await w.submit(qty="0.005"))  # $0.50 of AAPL
        approved_(await w.submit(qty=None, notional="1.01"))


async def test_non_fractionable_notional_buys_whole_shares_or_nothing(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        d = approved_(await w.submit(symbol="WHOLE", qty=None, notional="70"))
        assert d.qty == 3  # 70 / 20.10 -> 3 whole shares
        assert "BELOW_ONE_SHARE" in codes(await w.submit(symbol="WHOLE", qty=None, notional="15"))


async def test_small_account_can_not_buy_a_600_share(log_path: Path) -> None:
    async with trading_world(log_path, cash="200") as w:
        d = await w.submit(symbol="BIG", qty="1")
        assert {"NOTIONAL_EXCEEDS_BUYING_POWER", "NOTIONAL_EXCEEDS_CASH"} <= codes(d)
        bp = next(r for r in d.reasons if r.code == "NOTIONAL_EXCEEDS_BUYING_POWER")  # type: ignore[union-attr]
        assert bp.values["buying_power"] == "200.00" and D(bp.values["notional"]) > 600
        assert "buying power left is 200.00" in bp.message


async def test_small_account_converted_to_notional_when_the_intent_allows(log_path: Path) -> None:
    async with trading_world(log_path, cash="200", limits=generous(daily_loss_limit_pct=D("0.5"))) as w:
        d = approved_(await w.submit(symbol="BIG", qty="1", allow_notional=True))
        assert d.converted_to_notional
        assert 0 < d.qty < 1 and d.estimated_notional <= 200  # type: ignore[operator]
        assert d.estimated_notional >= D("199")
        # and the money is now spoken for: a second order is refused
        assert "NOTIONAL_EXCEEDS_BUYING_POWER" in codes(await w.submit(symbol="AAPL", qty="1"))


async def test_shorting(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        assert "SHORTING_DISABLED" in codes(await w.submit(side="sell", qty="1"))
    async with trading_world(log_path.with_name("s.sqlite"), cash="10000",
                             limits=generous(allow_short=True, intraday_leverage=D(2))) as w:
        approved_(await w.submit(side="sell", qty="1"))
        assert "SHORTING_DISABLED" in codes(await w.submit(symbol="WHOLE", side="sell", qty="1"))


async def test_order_symbol_and_gross_notional_limits(log_path: Path) -> None:
    lim = generous(max_order_notional=D(500), max_symbol_exposure=D(750),
                   max_gross_exposure=D(1000))
    async with trading_world(log_path, cash="100000", limits=lim) as w:
        assert "ORDER_NOTIONAL_LIMIT" in codes(await w.submit(qty="6"))
        approved_(await w.submit(qty="4"))  # ~402
        assert "SYMBOL_EXPOSURE_LIMIT" in codes(await w.submit(qty="4"))
        approved_(await w.submit(symbol="MSFT", qty="9"))  # ~452 -> gross ~854
        assert "GROSS_EXPOSURE_LIMIT" in codes(await w.submit(symbol="MSFT", qty="4"))


async def test_buying_power_counts_open_orders(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000", buying_power="300") as w:
        approved_(await w.submit(qty="2"))
        d = await w.submit(qty="1")
        assert codes(d) == {"NOTIONAL_EXCEEDS_BUYING_POWER"}


async def test_cash_check_for_cash_accounts(log_path: Path) -> None:
    async with trading_world(log_path, cash="150", buying_power="1000") as w:
        assert "NOTIONAL_EXCEEDS_CASH" in codes(await w.submit(qty="2"))
        approved_(await w.submit(qty="1"))


async def test_intraday_margin(log_path: Path) -> None:
    lim = generous(intraday_leverage=D(1))
    async with trading_world(log_path, cash="300", buying_power="10000", limits=lim) as w:
        await w.hold("MSFT", "4", "50")  # 200 of stock; cash now 100 -> equity 300
        d = await w.submit(qty="2", limit_price="100.5", order_type="limit")
        # exposure 200 + 2 x 100 > 300 equity (and 100 cash can't pay either)
        assert "INTRADAY_MARGIN" in codes(d)
    lim2 = generous(intraday_leverage=D(2))
    async with trading_world(log_path.with_name("m2.sqlite"), cash="300", buying_power="10000",
                             limits=lim2) as w:
        await w.hold("MSFT", "4", "50")
        # 2x intraday leverage on 300 equity: 400 of exposure fits (a margin account)
        approved_(await w.submit(qty="2", order_type="limit", limit_price="100.5"))


async def test_max_open_positions(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000", limits=generous(max_open_positions=2)) as w:
        await w.hold("MSFT", "1", "50")
        approved_(await w.submit(qty="1"))  # AAPL: second symbol
        assert "MAX_OPEN_POSITIONS" in codes(await w.submit(symbol="WHOLE", qty="1"))
        approved_(await w.submit(qty="1"))  # adding to AAPL is fine


async def test_daily_loss_limit_uses_realized_and_open_risk(log_path: Path) -> None:
    lim = generous(daily_loss_limit=D(10), daily_loss_limit_pct=None, default_stop_pct=D("0.02"))
    async with trading_world(log_path, cash="10000", limits=lim) as w:
        await w.hold("MSFT", "10", "50")
        await w.hold("MSFT", "10", "49", side="sell")  # realized -10 today
        d = await w.submit(qty="1", stop_price="99")
        assert "DAILY_LOSS_LIMIT" in codes(d)
        assert "WEEKLY_LOSS_LIMIT" not in codes(d)
        # an exit is never blocked by the loss limit
        await w.hold("AAPL", "1", "100")
        approved_(await w.submit(side="sell", qty="1"))


async def test_daily_budget_allows_orders_whose_risk_fits(log_path: Path) -> None:
    lim = generous(daily_loss_limit=D(10), daily_loss_limit_pct=None)
    async with trading_world(log_path, cash="10000", limits=lim) as w:
        # entry ~100.5 (market buffer), stop 98: 2.5 per share at risk -> 4 shares fit exactly
        assert "DAILY_LOSS_LIMIT" in codes(await w.submit(qty="5", stop_price="98"))
        approved_(await w.submit(qty="3", stop_price="98"))
        approved_(await w.submit(qty="1", stop_price="98"))
        assert "DAILY_LOSS_LIMIT" in codes(await w.submit(qty="1", stop_price="98"))


async def test_weekly_loss_limit(log_path: Path) -> None:
    lim = generous(daily_loss_limit=D(1000), daily_loss_limit_pct=None, weekly_loss_limit=D(10),
                   weekly_loss_limit_pct=None)
    async with trading_world(log_path, cash="10000", limits=lim) as w:
        await w.hold("MSFT", "10", "50", at=w.clock.now() - timedelta(days=3, hours=20))
        await w.hold("MSFT", "10", "48", side="sell", at=w.clock.now() - timedelta(days=3))
        # that loss was last week (Thu/Fri); this Monday's week is clean
        approved_(await w.submit(qty="1", stop_price="95"))
        await w.hold("MSFT", "10", "50")
        await w.hold("MSFT", "10", "49", side="sell")
        assert "WEEKLY_LOSS_LIMIT" in codes(await w.submit(qty="1", stop_price="95"))


async def test_day_trade_guard_limit_mode(log_path: Path) -> None:
    lim = generous(day_trade_mode="limit", day_trade_limit=1)
    async with trading_world(log_path, cash="10000", limits=lim) as w:
        await w.hold("AAPL", "1", "100")
        await w.hold("MSFT", "1", "50")
        first = approved_(await w.submit(side="sell", qty="1"))
        assert first.day_trade
        d = await w.submit(symbol="MSFT", side="sell", qty="1")
        assert codes(d) == {"DAY_TRADE_LIMIT"}


async def test_day_trade_guard_auto_mode(log_path: Path) -> None:
    # Broker still reports PDT fields, equity < 25k, already 3 day trades: the old rule applies.
    async with trading_world(log_path, cash="10000", limits=generous(day_trade_mode="auto"),
                             pdt=(3, False)) as w:
        await w.hold("AAPL", "1", "100")
        assert "DAY_TRADE_LIMIT" in codes(await w.submit(side="sell", qty="1"))
    # Fields gone (Alpaca, July 2026): the rule is retired, nothing crashes, nothing blocks.
    async with trading_world(log_path.with_name("b.sqlite"), cash="10000",
                             limits=generous(day_trade_mode="auto")) as w:
        await w.hold("AAPL", "1", "100")
        approved_(await w.submit(side="sell", qty="1"))


async def test_position_held_overnight_is_not_a_day_trade(log_path: Path) -> None:
    lim = generous(day_trade_mode="limit", day_trade_limit=0)
    async with trading_world(log_path, cash="10000", limits=lim) as w:
        await w.hold("AAPL", "1", "100", at=w.clock.now() - timedelta(days=3))
        d = approved_(await w.submit(side="sell", qty="1"))
        assert not d.day_trade


async def test_potential_wash_trade(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        await w.hold("AAPL", "5", "100")
        approved_(await w.submit(side="sell", qty="1"))  # still open
        assert "POTENTIAL_WASH_TRADE" in codes(await w.submit(side="buy", qty="1"))
        approved_(await w.submit(symbol="MSFT", side="buy", qty="1"))


async def test_limit_price_too_far_from_last(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        assert "LIMIT_PRICE_AWAY" in codes(await w.submit(order_type="limit", limit_price="80"))
        approved_(await w.submit(order_type="limit", limit_price="95"))


async def test_order_rate_limit(log_path: Path) -> None:
    async with trading_world(log_path, cash="100000", limits=generous(max_orders_per_minute=3)) as w:
        for _ in range(3):
            approved_(await w.submit(qty="0.1"))
        assert codes(await w.submit(qty="0.1")) == {"ORDER_RATE_LIMIT"}
        w.clock.advance(timedelta(seconds=61))
        await w.tick("AAPL", "100")
        approved_(await w.submit(qty="0.1"))


async def test_no_account_state(log_path: Path, tmp_path: Path) -> None:
    import anyio

    from engine.clock import SimClock
    from engine.risk.gate import RiskGate
    from events.store import EventLog
    from projections.state import Projections
    from tests.risk.world import NOW, intent

    proj = Projections()
    async with EventLog.open(log_path) as log:
        log.subscribe(proj.apply)
        await log.append(TradingStateChanged(ts=NOW, state="active", reason="t"))
        gate = RiskGate(log, proj, generous(require_asset_info=False), SimClock(NOW))
        async with anyio.create_task_group() as tg:
            await tg.start(gate.run)
            assert "NO_ACCOUNT_STATE" in codes(await gate.submit(intent()))
            gate.close()


@pytest.mark.parametrize("bad,needle", [
    ({"side": "hold"}, "side 'hold'"),
    ({"qty": "0"}, "qty=0"),
    ({"qty": "-3"}, "qty=-3"),
    ({"qty": "NaN"}, "qty=NaN"),
    ({"qty": "1", "notional": "5"}, "exactly one of qty and notional"),
    ({"qty": None}, "exactly one of qty and notional"),
    ({"order_type": "iceberg"}, "order_type 'iceberg'"),
    ({"order_type": "stop"}, "a stop order needs stop_price"),
    ({"order_type": "trailing_stop"}, "exactly one of trail_price and trail_percent"),
    ({"order_class": "bracket"}, "needs both take_profit and stop_loss"),
    ({"order_type": "limit"}, "needs limit_price"),
    ({"symbol": "aapl"}, "upper-case ticker"),
])
async def test_bad_intents_are_rejected_recorded_and_the_gate_keeps_running(
        log_path: Path, bad: dict[str, str | None], needle: str) -> None:
    async with trading_world(log_path, cash="10000") as w:
        d = await w.submit(**bad)
        assert codes(d) == {"INVALID_INTENT"} and needle in d.reasons[0].message  # type: ignore[union-attr]
        approved_(await w.submit())
        assert any(e.intent_id == d.intent_id for e in w.proj.risk.decisions.values())


async def test_loose_input_with_naive_timestamp_is_recorded_as_invalid(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000") as w:
        d = await w.gate.submit({"ts": "2026-11-23T16:00:00", "intent_id": "naive-1",
                                 "strategy": "cli", "symbol": "AAPL", "side": "buy", "qty": "1"})
        assert codes(d) == {"INVALID_INTENT"} and "timezone" in d.reasons[0].message  # type: ignore[union-attr]
        assert w.proj.risk.decisions["naive-1"] == d
        ok = await w.gate.submit({"ts": "2026-11-23T16:00:00Z", "intent_id": "aware-1",
                                  "strategy": "cli", "symbol": "AAPL", "side": "buy", "qty": "1"})
        approved_(ok)


async def test_every_failed_check_is_reported(log_path: Path) -> None:
    async with trading_world(log_path, cash="200", state="halted",
                             limits=generous(max_order_notional=D(100), max_symbol_exposure=D(100),
                                             max_gross_exposure=D(100))) as w:
        d = await w.submit(symbol="BIG", qty="1", time_in_force="gtc")
        assert {"TRADING_HALTED", "ORDER_NOTIONAL_LIMIT", "SYMBOL_EXPOSURE_LIMIT",
                "GROSS_EXPOSURE_LIMIT", "NOTIONAL_EXCEEDS_BUYING_POWER", "NOTIONAL_EXCEEDS_CASH",
                "INTRADAY_MARGIN"} <= codes(d)
        assert all(r.values for r in d.reasons if r.code != "TRADING_HALTED")  # type: ignore[union-attr]


async def test_duplicate_intent_gets_the_first_decision(log_path: Path) -> None:
    async with trading_world(log_path, cash="10000", limits=generous(max_orders_per_minute=1)) as w:
        i = OrderIntent(ts=w.clock.now(), intent_id="dup", strategy="s", symbol="AAPL",
                        side="buy", qty=D(1))
        first = approved_(await w.gate.submit(i))
        # re-checked it would now be refused (rate limit); it must not be re-checked
        again = await w.gate.submit(i)
        assert again == first
        n_decisions = sum(1 for _ in w.proj.risk.decisions)
        assert n_decisions == 1


async def test_a_shrunk_order_that_fails_again_is_refused_as_asked(log_path: Path) -> None:
    """Shrinking is a second try, not the answer: if the smaller (fractional) order breaks a
    rule of its own — here a fraction must be a day order — the rejection reports the order
    as it was asked for, with the size reasons that refused it."""
    async with trading_world(log_path, cash="200", limits=generous(daily_loss_limit_pct=D("0.5"))) as w:
        d = await w.submit(symbol="BIG", qty="1", allow_notional=True, time_in_force="gtc")
        assert codes(d) == {"NOTIONAL_EXCEEDS_BUYING_POWER", "NOTIONAL_EXCEEDS_CASH",
                            "INTRADAY_MARGIN"}
        bp = next(r for r in d.reasons if r.code == "NOTIONAL_EXCEEDS_BUYING_POWER")  # type: ignore[union-attr]
        assert bp.values["qty"] == "1"


async def test_no_shrinking_when_a_reason_is_not_about_size(log_path: Path) -> None:
    async with trading_world(log_path, cash="200",
                             limits=generous(daily_loss_limit_pct=D("0.5"),
                                             max_orders_per_minute=1)) as w:
        approved_(await w.submit(symbol="AAPL", qty="1"))
        d = await w.submit(symbol="BIG", qty="1", allow_notional=True)
        assert {"NOTIONAL_EXCEEDS_BUYING_POWER", "ORDER_RATE_LIMIT"} <= codes(d)


def test_memo_computes_once_per_instance_and_keeps_instances_apart() -> None:
    """The lock-free cache the checks' context uses: one computation per instance, stored on
    that instance only (two decisions never share a figure)."""
    from dataclasses import dataclass as _dc

    from engine.risk.checks import memo

    calls: list[int] = []

    @_dc(frozen=True)
    class Box:
        n: int

        @memo
        def doubled(self) -> int:
            calls.append(self.n)
            return 2 * self.n

    a, b = Box(1), Box(2)
    assert (a.doubled, a.doubled, b.doubled, b.doubled) == (2, 2, 4, 4)
    assert calls == [1, 2]
    assert isinstance(Box.__dict__["doubled"], memo)
