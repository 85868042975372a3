"""Buying power with resting buys: the broker's figure already nets its open buy orders
(the SimulatedBroker's and Alpaca's both do: "your available buying power is reduced by your
existing open buy long ... orders"), so the gate must subtract each open buy once — an order
that fits in what is left is approved, one that does not is refused."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from engine.risk.limits import RiskLimits
from events.catalogue import AccountSnapshot, RiskApproved, RiskRejected
from projections.orders import OrderStatus
from tests.execution.simworld import mk_bar, sim_world
from tests.fake_alpaca import FakeAlpaca
from tests.integration.alpaca_world import alpaca_world

D = Decimal
CASH_ACCOUNT = RiskLimits(max_order_notional=D(10**6), max_symbol_exposure=D(10**6),
                          max_gross_exposure=D(10**6), max_open_positions=50,
                          daily_loss_limit_pct=D(1), weekly_loss_limit_pct=D(1),
                          max_orders_per_minute=10**6, day_trade_mode="off",
                          max_limit_away_pct=D("0.5"), market_buffer_bps=D(0))


def codes(d: object) -> set[str]:
    return {r.code for r in d.reasons} if isinstance(d, RiskRejected) else set()


async def test_simulated_broker_resting_buy_then_snapshot(tmp_path: Path) -> None:
    async with sim_world(tmp_path / "log.sqlite", cash="1000", limits=CASH_ACCOUNT) as w:
        await w.bar(mk_bar("WHOLE", 0, "100"))
        rest = await w.order("WHOLE", qty="6", order_type="limit", limit_price=D("90"))
        assert isinstance(rest, RiskApproved)  # $540 resting below the market
        await w.bar(mk_bar("WHOLE", 1, "100"))
        assert w.proj.orders.orders[rest.client_order_id].status == OrderStatus.ACCEPTED
        a = await w.broker.account()
        assert a.buying_power == D(460)  # the broker's own figure nets the resting $540
        await w.log.append(AccountSnapshot(ts=w.clock.now(), equity=a.equity, cash=a.cash,
                                           buying_power=a.buying_power, as_of=w.clock.now()))
        fits = await w.order("WHOLE", qty="4")  # $400 of the $460 left
        assert isinstance(fits, RiskApproved), codes(fits)
        too_big = await w.order("WHOLE", qty="1")  # $100 more than the $60 still left
        assert "NOTIONAL_EXCEEDS_BUYING_POWER" in codes(too_big)
        # Canceling the resting buy frees its $540 again.
        await w.execution.cancel(rest.client_order_id, reason="test")
        await w.pump()
        again = await w.order("WHOLE", qty="5", intent_id="again")
        assert isinstance(again, RiskApproved), codes(again)



async def test_alpaca_resting_buy_then_snapshot(tmp_path: Path, fake: FakeAlpaca) -> None:
    limits = {"max_order_notional": 80000, "max_symbol_exposure": 80000,
              "max_gross_exposure": 200000, "daily_loss_limit_pct": "0.9",
              "weekly_loss_limit_pct": "0.9", "default_stop_pct": "0.01",
              "day_trade_mode": "off", "max_limit_away_pct": "0.5", "market_buffer_bps": 0}
    async with alpaca_world(tmp_path / "log.sqlite", fake, risk=limits) as w:
        rest = await w.order("MSFT", qty="100", order_type="limit", limit_price=D("390"))
        assert isinstance(rest, RiskApproved)  # $39,000 resting below the market
        await w.until(lambda: w.order_of(rest.client_order_id).status == OrderStatus.ACCEPTED)
        snap = await w.engine.reconciler.account_snapshot()
        assert snap.buying_power == D(61000)  # Alpaca's figure already nets the $39,000
        fits = await w.order("AAPL", qty="150")  # $28,500 of the $61,000 left
        assert isinstance(fits, RiskApproved), codes(fits)
        await w.until(lambda: w.order_of(fits.client_order_id).status == OrderStatus.ACCEPTED)
        too_big = await w.order("F", qty="3000")  # $36,000, more than the $32,500 left
        assert "NOTIONAL_EXCEEDS_BUYING_POWER" in codes(too_big)
