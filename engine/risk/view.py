"""What the gate decides on: the projections, which fold every event as it is appended — the
gate's own earlier approvals included — so a burst of intents can not race past a limit while
earlier approvals are still on their way to disk."""

from __future__ import annotations

import bisect
from datetime import date, datetime, timedelta
from decimal import Decimal

from events.catalogue import AssetInfo
from events.vocabulary import ZERO
from projections.calendar import day_keys, trading_day
from projections.market import LastBar
from projections.orders import Order, Reservation, armed_stops, stop_level
from projections.risk import Decision, day_trades_in_window, realized_in_week, realized_on
from projections.state import Projections

_EMPTY = Reservation()
_MINUTE = timedelta(minutes=1)


class GateView:
    """Read-only questions the checks ask, answered from the projections."""

    def __init__(self, proj: Projections, now: datetime) -> None:
        self.proj = proj
        self.now = now
        self.today: date = trading_day(now)

    # state
    @property
    def trading_state(self) -> str:
        return self.proj.risk.trading_state

    @property
    def kill_switch(self) -> str:
        return self.proj.risk.kill_switch

    def decision_for(self, intent_id: str) -> Decision | None:
        return self.proj.risk.decisions.get(intent_id)

    # market
    def last_bar(self, symbol: str) -> LastBar | None:
        return self.proj.market.last_bar.get(symbol)

    def asset(self, symbol: str) -> AssetInfo | None:
        return self.proj.market.assets.get(symbol)

    def mark(self, symbol: str) -> Decimal | None:
        bar = self.proj.market.last_bar.get(symbol)
        if bar is not None:
            return bar.close
        pos = self.proj.positions.positions.get(symbol)
        return pos.avg_cost if pos is not None and pos.avg_cost else None

    # positions and orders
    def position(self, symbol: str) -> Decimal:
        pos = self.proj.positions.positions.get(symbol)
        return pos.qty if pos is not None else ZERO

    def reserved(self, symbol: str) -> Reservation:
        r = self.proj.orders.reserved.get(symbol)
        return r if r is not None else _EMPTY

    def symbols(self) -> set[str]:
        """Symbols with a position or an open order."""
        out = {s for s, p in self.proj.positions.positions.items() if p.qty != 0}
        out.update(s for s, r in self.proj.orders.reserved.items() if r.orders)
        return out

    def exposure(self, symbol: str, extra_buy: Decimal = ZERO, extra_sell: Decimal = ZERO) -> Decimal:
        """Worst-case dollar exposure in `symbol` if every open order (plus the extra) fills."""
        return _worst_case(self.position(symbol), self.reserved(symbol), self.mark(symbol),
                           extra_buy, extra_sell)

    def exposure_of_others(self, skip: str) -> Decimal:
        """Sum of `exposure()` over every other symbol with a position or an open order."""
        positions = self.proj.positions.positions
        reserved = self.proj.orders.reserved
        total = ZERO
        for sym in positions.keys() | reserved.keys():
            if sym != skip:
                p = positions.get(sym)
                total += _worst_case(p.qty if p is not None else ZERO,
                                     reserved.get(sym, _EMPTY), self.mark(sym))
        return total

    def total_reserved(self) -> Reservation:
        return self.proj.orders.reserved_total

    def position_risk(self, default_stop_pct: Decimal, gap_pct: Decimal) -> Decimal:
        """The loss budget held by open positions: what their live protective stops allow
        (qty x distance from the mark to the stop, plus the gap allowance), and for the part
        no stop covers the budget recorded at entry, or the default stop where none was."""
        total = ZERO
        open_risk = self.proj.risk.open_risk
        orders = self.proj.orders
        for sym, pos in self.proj.positions.positions.items():
            if pos.qty == 0:
                continue
            qty = abs(pos.qty)
            price = self.mark(sym) or pos.avg_cost
            left = qty
            if sym in orders.stops:
                for s in armed_stops(orders, sym):
                    covered = min(left, (s.qty or ZERO) - s.filled_qty)
                    if covered <= 0:
                        continue
                    left -= covered
                    level = stop_level(s, price)
                    distance = price - level if pos.qty > 0 else level - price
                    total += covered * (max(distance, ZERO) + price * gap_pct)
                    if left == 0:
                        break
            if left:
                recorded = open_risk.get(sym)
                total += (recorded * left / qty if recorded
                          else left * price * default_stop_pct)
        return total

    def protected_qty(self, symbol: str, side: str) -> Decimal:
        """The unfilled quantity of the stops on `side` that guard the position now (not
        the held legs of an entry still to fill: they guard what it will open)."""
        return sum(((o.qty or ZERO) - o.filled_qty for o in self.protection(symbol)
                    if o.side == side), ZERO)

    def order(self, client_order_id: str) -> Order | None:
        return self.proj.orders.orders.get(client_order_id)

    def protection(self, symbol: str) -> list[Order]:
        """The stops protecting `symbol`'s position now."""
        return armed_stops(self.proj.orders, symbol)

    # account
    @property
    def account_known(self) -> bool:
        return self.proj.account.known

    def equity(self) -> Decimal:
        return self.proj.equity()

    @property
    def cash(self) -> Decimal:
        return self.proj.account.cash_now

    @property
    def buying_power(self) -> Decimal:
        """The broker's buying power before any of our open buys: its own figure nets the
        buys it already had (Alpaca and the simulated broker both), so those are added back
        and the gate subtracts every open buy exactly once."""
        return self.proj.account.buying_power_before_orders

    @property
    def broker_daytrade_count(self) -> int | None:
        return self.proj.account.daytrade_count

    @property
    def broker_reports_pdt(self) -> bool:
        a = self.proj.account
        return a.daytrade_count is not None or a.pattern_day_trader is not None

    # risk history
    def realized_today(self) -> Decimal:
        return realized_on(self.proj.risk, self.today)

    def realized_this_week(self) -> Decimal:
        return realized_in_week(self.proj.risk, self.today)

    def opened_today(self, symbol: str) -> bool:
        return self.proj.risk.opened_day.get(symbol) == day_keys(self.today)[0]

    def day_trades_in_window(self) -> int:
        return day_trades_in_window(self.proj.risk, self.today)

    def approvals_in_last_minute(self) -> int:
        since = self.now - _MINUTE
        # Approval times are appended in clock order, so a bisection finds the window.
        recent = self.proj.risk.recent_approvals
        return len(recent) - bisect.bisect_right(recent, since)


def _worst_case(pos: Decimal, r: Reservation, price: Decimal | None,
                extra_buy: Decimal = ZERO, extra_sell: Decimal = ZERO) -> Decimal:
    """The larger side of a position if every open buy, or every open sell, fills; in dollars
    at `price` (or the orders' own notional when the symbol has no price yet)."""
    if price is None:
        return r.buy_notional + r.sell_notional
    return max(abs(pos + r.buy_qty + extra_buy), abs(pos - r.sell_qty - extra_sell)) * price
