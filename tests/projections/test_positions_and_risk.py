from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from events.catalogue import PositionAdjusted
from projections.calendar import business_days_back, is_business_day, nyse_holidays, trading_day
from projections.risk import day_trades_in_window, realized_in_week, realized_on
from projections.state import Projections
from tests.factories import T0, approved, fill, submitted_chain

D = Decimal


def proj_with(*events: object) -> Projections:
    p = Projections()
    for i, e in enumerate(events, 1):
        p.apply(i, e)
    return p


def test_long_average_cost_and_partial_close() -> None:
    p = proj_with(approved("a", qty="10"), approved("b", qty="10"), approved("c", side="sell", qty="15"),
                  fill("a", "10", "100"), fill("b", "10", "110"), fill("c", "15", "120", side="sell"))
    pos = p.positions.positions["AAPL"]
    assert pos.qty == D(5) and pos.avg_cost == D(105)
    assert pos.realized_pnl == D(15) * D(15)


def test_fill_that_flips_long_to_short() -> None:
    p = proj_with(approved("a", qty="2"), approved("b", side="sell", qty="5"),
                  fill("a", "2", "50"), fill("b", "5", "40", side="sell", fee="1"))
    pos = p.positions.positions["AAPL"]
    assert pos.qty == D(-3) and pos.avg_cost == D(40)
    assert pos.realized_pnl == D(2) * D(-10) - D(1)


def test_short_then_cover_at_profit() -> None:
    p = proj_with(approved("a", side="sell", qty="4"), approved("b", qty="4"),
                  fill("a", "4", "30", side="sell"), fill("b", "4", "25"))
    pos = p.positions.positions["AAPL"]
    assert pos.qty == 0 and pos.avg_cost == 0 and pos.realized_pnl == D(20)


def test_fractional_quantities_are_exact() -> None:
    p = proj_with(approved("a", qty=None, notional="5"), *submitted_chain("a"),
                  fill("a", "0.012345678", "405.00", done=True),
                  approved("b", side="sell", qty="0.012345678"),
                  fill("b", "0.012345678", "410.00", side="sell"))
    pos = p.positions.positions["AAPL"]
    assert pos.qty == 0
    assert pos.realized_pnl == D("0.012345678") * D(5)
    assert p.orders.orders["a"].status == "filled"


def test_adjustment_sets_broker_quantity_without_inventing_pnl() -> None:
    p = proj_with(approved("a", qty="10"), fill("a", "10", "100"),
                  PositionAdjusted(ts=T0, adjustment_id="adj1", symbol="AAPL", qty_before=D(10),
                                   qty_after=D(4), avg_price=D(100), reason="sold by hand"))
    pos = p.positions.positions["AAPL"]
    assert pos.qty == D(4) and pos.realized_pnl == 0


def test_loss_is_booked_on_the_new_york_trading_day() -> None:
    # 2026-11-24 03:30 UTC is still Monday 2026-11-23 in New York.
    late_monday = datetime(2026, 11, 24, 3, 30, tzinfo=UTC)
    p = proj_with(approved("a", qty="1"), approved("b", side="sell", qty="1"),
                  fill("a", "1", "100", ts=T0), fill("b", "1", "90", side="sell", ts=late_monday))
    assert realized_on(p.risk, date(2026, 11, 23)) == D(-10)
    assert realized_on(p.risk, date(2026, 11, 24)) == 0
    assert realized_in_week(p.risk, date(2026, 11, 27)) == D(-10)  # same ISO week
    assert realized_in_week(p.risk, date(2026, 11, 30)) == 0


def test_day_trade_counting_over_five_business_days() -> None:
    events: list[object] = []
    # Round trips on Mon 11-23 and Tue 11-24, then a position opened Tue and closed Wed.
    mon, tue, wed = T0, T0 + timedelta(days=1), T0 + timedelta(days=2)
    for day, tag in ((mon, "m"), (tue, "t")):
        events += [approved(f"{tag}b", qty="1"), fill(f"{tag}b", "1", "10", ts=day),
                   approved(f"{tag}s", side="sell", qty="1"),
                   fill(f"{tag}s", "1", "11", side="sell", ts=day + timedelta(minutes=5))]
    events += [approved("ob", qty="1"), fill("ob", "1", "10", ts=tue + timedelta(hours=1)),
               approved("os", side="sell", qty="1"), fill("os", "1", "10", side="sell", ts=wed)]
    p = proj_with(*events)
    assert day_trades_in_window(p.risk, date(2026, 11, 25)) == 2
    # Thanksgiving (11-26) is not a business day, so the window from Mon 11-30 still reaches
    # back to Mon 11-23; Monday's day trade drops out on Tue 12-01, Tuesday's on Wed 12-02.
    assert not is_business_day(date(2026, 11, 26))
    assert day_trades_in_window(p.risk, date(2026, 11, 30)) == 2
    assert day_trades_in_window(p.risk, date(2026, 12, 1)) == 1
    assert day_trades_in_window(p.risk, date(2026, 12, 2)) == 0


def test_partial_fills_of_one_closing_order_are_one_day_trade() -> None:
    p = proj_with(approved("b", qty="10"), fill("b", "10", "10"),
                  approved("s", side="sell", qty="10"),
                  fill("s", "4", "11", side="sell", exec_id="s1"),
                  fill("s", "6", "11", side="sell", exec_id="s2"))
    assert day_trades_in_window(p.risk, date(2026, 11, 23)) == 1


def test_calendar() -> None:
    assert date(2026, 4, 3) in nyse_holidays(2026)  # Good Friday 2026
    assert date(2026, 7, 3) in nyse_holidays(2026)  # July 4th observed (Saturday)
    assert date(2027, 12, 31) not in nyse_holidays(2027)  # New Year 2028 is a Saturday
    assert business_days_back(date(2026, 11, 30), 3) == [date(2026, 11, 30), date(2026, 11, 27),
                                                         date(2026, 11, 25)]
    assert trading_day(datetime(2026, 7, 1, 3, 59, tzinfo=UTC)) == date(2026, 6, 30)


def test_open_risk_follows_the_position() -> None:
    p = proj_with(approved("a", qty="10", at_risk="20"), fill("a", "5", "100", exec_id="1"))
    assert p.risk.open_risk["AAPL"] == D(10)
    p.apply(3, fill("a", "5", "100", exec_id="2"))
    assert p.risk.open_risk["AAPL"] == D(20)
    p.apply(4, approved("s", side="sell", qty="5"))
    p.apply(5, fill("s", "5", "101", side="sell"))
    assert p.risk.open_risk["AAPL"] == D(10)
    p.apply(6, approved("s2", side="sell", qty="5"))
    p.apply(7, fill("s2", "5", "101", side="sell"))
    assert p.risk.open_risk["AAPL"] == 0


def test_business_days_from_skips_weekends_and_holidays() -> None:
    from projections.calendar import business_days_from

    # Thu 2026-07-02, Fri 07-03 is Independence Day observed, then the weekend
    assert business_days_from(date(2026, 7, 2), 3) == [date(2026, 7, 2), date(2026, 7, 6),
                                                       date(2026, 7, 7)]
    assert business_days_from(date(2026, 7, 4), 1) == [date(2026, 7, 6)]
