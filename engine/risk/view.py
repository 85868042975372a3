"""What the gate decides on: the projections (durable state) plus the gate's own approvals
that are appended but not yet committed (the overlay), so a burst of intents can not race
past a limit while their approvals are still on the way to disk."""

from __future__ import annotations

import bisect
import collections
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from events.catalogue import AssetInfo, RiskApproved, RiskRejected
from projections.calendar import trading_day
from projections.market import LastBar
from projections.orders import ZERO, Reservation
from projections.risk import day_trades_in_window, realized_in_week, realized_on
from projections.state import Projections

Decision = RiskApproved | RiskRejected


class Overlay:
    """Decisions appended to the log whose commit has not been folded into the projections."""

    def __init__(self) -> None:
        self.pending: collections.deque[tuple[int, Decision]] = collections.deque()
        self.reserved: dict[str, Reservation] = {}
        self.total = Reservation()
        self.decisions: dict[str, tuple[int, Decision, Any]] = {}
        # In decision order, which is clock order: the rate check bisects it.
        self.approval_times: collections.deque[datetime] = collections.deque()

    def add(self, seq: int, decision: Decision, future: Any) -> None:
        self.pending.append((seq, decision))
        self.decisions[decision.intent_id] = (seq, decision, future)
        if isinstance(decision, RiskApproved):
            self._count(decision, 1)
            self.approval_times.append(decision.ts)

    def prune(self, folded_seq: int) -> None:
        """Forget what the projections now hold (seq at or below `folded_seq`)."""
        while self.pending and self.pending[0][0] <= folded_seq:
            _, d = self.pending.popleft()
            entry = self.decisions.get(d.intent_id)
            if entry is not None and entry[1] is d:
                del self.decisions[d.intent_id]
            if isinstance(d, RiskApproved):
                self._count(d, -1)
                self.approval_times.popleft()

    def _count(self, d: RiskApproved, sign: int) -> None:
        r = self.reserved.get(d.symbol)
        if r is None:
            r = self.reserved[d.symbol] = Reservation()
        qty = d.qty or ZERO
        notional = d.estimated_notional
        for agg in (r, self.total):
            if d.side == "buy":
                agg.buy_qty += sign * qty
                agg.buy_notional += sign * notional
            else:
                agg.sell_qty += sign * qty
                agg.sell_notional += sign * notional
            agg.at_risk += sign * d.at_risk
            agg.day_trades += sign * int(d.day_trade)
            agg.orders += sign


class GateView:
    """Read-only questions the checks ask, answered from projections + overlay."""

    def __init__(self, proj: Projections, overlay: Overlay, now: datetime) -> None:
        self.proj = proj
        self.overlay = overlay
        self.now = now
        self.today: date = trading_day(now)

    # state
    @property
    def trading_state(self) -> str:
        return self.proj.risk.trading_state

    @property
    def kill_switch(self) -> str:
        return self.proj.risk.kill_switch

    def decision_for(self, intent_id: str) -> tuple[Decision, Any] | None:
        d = self.proj.risk.decisions.get(intent_id)
        if d is not None:
            return d, None
        pending = self.overlay.decisions.get(intent_id)
        if pending is not None:
            return pending[1], pending[2]
        return None

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
        a = self.proj.orders.reserved.get(symbol)
        b = self.overlay.reserved.get(symbol)
        if b is None:
            return a if a is not None else Reservation()
        if a is None:
            return b
        return Reservation(
            buy_qty=a.buy_qty + b.buy_qty, sell_qty=a.sell_qty + b.sell_qty,
            buy_notional=a.buy_notional + b.buy_notional,
            sell_notional=a.sell_notional + b.sell_notional,
            at_risk=a.at_risk + b.at_risk, day_trades=a.day_trades + b.day_trades,
            orders=a.orders + b.orders,
        )

    def symbols(self) -> set[str]:
        """Symbols with a position or an open order."""
        out = {s for s, p in self.proj.positions.positions.items() if p.qty != 0}
        out.update(s for s, r in self.proj.orders.reserved.items() if r.orders)
        out.update(s for s, r in self.overlay.reserved.items() if r.orders)
        return out

    def exposure(self, symbol: str, extra_buy: Decimal = ZERO, extra_sell: Decimal = ZERO) -> Decimal:
        """Worst-case dollar exposure in `symbol` if every open order (plus the extra) fills."""
        price = self.mark(symbol)
        if price is None:
            r = self.reserved(symbol)
            return r.buy_notional + r.sell_notional
        pos = self.position(symbol)
        r = self.reserved(symbol)
        long_side = pos + r.buy_qty + extra_buy
        short_side = pos - r.sell_qty - extra_sell
        return max(abs(long_side), abs(short_side)) * price

    def exposure_of_others(self, skip: str) -> Decimal:
        """Sum of `exposure()` over every other symbol, without building merged objects
        (this runs for every growing order, so it is written for speed)."""
        positions = self.proj.positions.positions
        res_a = self.proj.orders.reserved
        res_b = self.overlay.reserved
        total = ZERO
        for sym in positions.keys() | res_a.keys() | res_b.keys():
            if sym == skip:
                continue
            p = positions.get(sym)
            q = p.qty if p is not None else ZERO
            a = res_a.get(sym)
            b = res_b.get(sym)
            buy = (a.buy_qty if a is not None else ZERO) + (b.buy_qty if b is not None else ZERO)
            sell = (a.sell_qty if a is not None else ZERO) + (b.sell_qty if b is not None else ZERO)
            if not (q or buy or sell):
                continue
            price = self.mark(sym)
            if price is None:
                total += ((a.buy_notional + a.sell_notional) if a is not None else ZERO) + \
                         ((b.buy_notional + b.sell_notional) if b is not None else ZERO)
            else:
                total += max(abs(q + buy), abs(q - sell)) * price
        return total

    def total_reserved(self) -> Reservation:
        a, b = self.proj.orders.reserved_total, self.overlay.total
        return Reservation(
            buy_qty=a.buy_qty + b.buy_qty, sell_qty=a.sell_qty + b.sell_qty,
            buy_notional=a.buy_notional + b.buy_notional,
            sell_notional=a.sell_notional + b.sell_notional,
            at_risk=a.at_risk + b.at_risk, day_trades=a.day_trades + b.day_trades,
            orders=a.orders + b.orders,
        )

    def positions_risk(self) -> Decimal:
        """The loss budget held by open positions (recorded at entry, or the default stop)."""
        return sum(self.proj.risk.open_risk.values(), ZERO)

    def unrecorded_position_risk(self, default_stop_pct: Decimal) -> Decimal:
        """Positions we hold with no recorded loss budget (adopted from the broker)."""
        total = ZERO
        for sym, pos in self.proj.positions.positions.items():
            if pos.qty != 0 and not self.proj.risk.open_risk.get(sym):
                price = self.mark(sym) or pos.avg_cost
                total += abs(pos.qty) * price * default_stop_pct
        return total

    # account
    @property
    def account_known(self) -> bool:
        return self.proj.account.known

    def equity(self) -> Decimal:
        acct = self.proj.account
        value = acct.cash_now
        for sym, pos in self.proj.positions.positions.items():
            if pos.qty:
                value += pos.qty * (self.mark(sym) or pos.avg_cost)
        return value

    @property
    def cash(self) -> Decimal:
        return self.proj.account.cash_now

    @property
    def buying_power(self) -> Decimal:
        return self.proj.account.buying_power_now

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
        return self.proj.risk.opened_day.get(symbol) == self.today.isoformat()

    def day_trades_in_window(self) -> int:
        return day_trades_in_window(self.proj.risk, self.today)

    def approvals_in_last_minute(self) -> int:
        since = self.now - timedelta(minutes=1)
        # Approval times are appended in clock order, so a bisection finds the window.
        recent = self.proj.risk.recent_approvals
        pending = self.overlay.approval_times
        n = len(recent) - bisect.bisect_right(recent, since)
        if pending and pending[0] > since:
            return n + len(pending)
        return n + sum(1 for t in pending if t > since)
