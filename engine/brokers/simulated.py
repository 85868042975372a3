"""A deterministic broker for backtests and the default paper mode.

Fill model (documented, default-safe; see also replay/README):
- An order is eligible from the first bar that *opens at or after* it was submitted, so an
  order sent after seeing bar t can fill at bar t+1 at the earliest — never on the bar whose
  close produced the signal (no look-ahead).
- Market orders fill at that bar's open, moved against us by `slippage_bps`.
- Limit orders fill when the bar trades through the limit: a buy when low <= limit, at
  min(open, limit); a sell when high >= limit, at max(open, limit). Within a bar prices are
  assumed to go open -> high -> low -> close when both sides could matter; with only market
  and limit orders the fill price above does not depend on that path.
- Each bar fills at most `volume_participation` x its volume per order (partial fills carry on
  into later bars). A zero-volume bar fills nothing with `zero_volume="no_fill"` (the
  default: nobody traded, so neither did we); with `zero_volume="fill"` it fills in full at
  the prices above (the bar's open for market orders), as bar-based backtesters do.
- Fees: `fee_per_share` x qty + `fee_bps` of notional, at least `min_fee` per fill.
- Day orders belong to the session they were sent in, or to the next one when sent at or
  after a session's close (as Alpaca queues them): a daily bar's signal, sent at the close,
  fills at the next session's open. They expire when a bar of a later trading day arrives.
- `fill_at_signal_close=True` fills market orders at once at the last close: that looks ahead
  (the strategy saw that close) and exists only for comparisons; it logs a warning.

Rejections mirror Alpaca: insufficient buying power (cash account: cost beyond cash minus
open buys), selling more than held without shorting, fractional orders on non-fractionable
symbols or with a time in force other than day, a reused client order id (reported as the
ambiguous duplicate-id outcome, like Alpaca's 422).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, Decimal

import anyio

from engine.brokers.base import (
    AmbiguousSubmitError,
    BrokerAccount,
    BrokerAsset,
    BrokerEvent,
    BrokerFill,
    BrokerOrder,
    BrokerPosition,
    CancelRejectedError,
    OrderNotFoundError,
    OrderRejectedError,
    OrderRequest,
    StreamConnected,
    TradeUpdate,
)
from engine.clock import Clock
from events.catalogue import FillModel
from events.market import Bar
from projections.calendar import order_session, trading_day

log = logging.getLogger(__name__)
ZERO = Decimal(0)
QTY_STEP = Decimal("0.000000001")
CENT = Decimal("0.01")


@dataclass(frozen=True)
class SimConfig:
    slippage_bps: Decimal = Decimal(0)
    fee_per_share: Decimal = Decimal(0)
    fee_bps: Decimal = Decimal(0)
    min_fee: Decimal = Decimal(0)
    volume_participation: Decimal = Decimal("0.1")
    allow_short: bool = False
    fill_at_signal_close: bool = False
    account_id: str = "sim-account"
    zero_volume: str = "no_fill"  # or "fill"

    def fill_model(self, time_in_force: str = "day") -> FillModel:
        """This configuration as recorded in `RunStarted` and printed in reports."""
        rule = ("at the signal bar's close (LOOKS AHEAD)" if self.fill_at_signal_close
                else "market at the next bar's open; limit when a later bar trades through")
        return FillModel(fill_rule=rule, slippage_bps=self.slippage_bps,
                         fee_per_share=self.fee_per_share, fee_bps=self.fee_bps,
                         min_fee=self.min_fee, volume_participation=self.volume_participation,
                         zero_volume=self.zero_volume, time_in_force=time_in_force)


@dataclass
class _Order:
    broker_order_id: str
    request: OrderRequest
    submitted_at: datetime
    seq: int
    status: str = "new"
    filled_qty: Decimal = ZERO
    filled_notional: Decimal = ZERO
    updated_at: datetime | None = None
    replaced_by: str | None = None
    replaces: str | None = None

    def snapshot(self) -> BrokerOrder:
        r = self.request
        return BrokerOrder(
            broker_order_id=self.broker_order_id, client_order_id=r.client_order_id,
            symbol=r.symbol, side=r.side, order_type=r.order_type, status=self.status,
            qty=r.qty, notional=r.notional, limit_price=r.limit_price,
            time_in_force=r.time_in_force, filled_qty=self.filled_qty,
            filled_avg_price=(self.filled_notional / self.filled_qty).quantize(Decimal("0.0001"))
            if self.filled_qty else None,
            submitted_at=self.submitted_at, updated_at=self.updated_at or self.submitted_at,
            replaced_by=self.replaced_by, replaces=self.replaces)

    @property
    def open(self) -> bool:
        return self.status in ("new", "accepted", "partially_filled", "pending_cancel")


@dataclass
class _Position:
    qty: Decimal = ZERO
    avg: Decimal = ZERO


@dataclass
class SimulatedBroker:
    clock: Clock
    assets: Mapping[str, BrokerAsset]
    cash: Decimal
    config: SimConfig = field(default_factory=SimConfig)
    name: str = "simulated"
    # The book lives in this process and is rebuilt from the log after a restart, so an order
    # whose submit record never reached the disk never existed: no need to wait for it.
    external: bool = False

    def __post_init__(self) -> None:
        self._orders: dict[str, _Order] = {}
        self._by_coid: dict[str, _Order] = {}
        # Open orders only, by symbol, in submission order: a bar touches just these.
        self._open: dict[str, dict[str, _Order]] = {}
        self._positions: dict[str, _Position] = {}
        self._last: dict[str, Bar] = {}
        self._fills: list[BrokerFill] = []
        self._updates: list[BrokerEvent] = []
        self._wake = anyio.Event()
        self._n_orders = 0
        self._n_execs = 0
        self.submits = 0
        if self.config.fill_at_signal_close:
            log.warning("SimulatedBroker: fill_at_signal_close fills market orders at the close "
                        "the strategy already saw; results LOOK AHEAD and are optimistic")

    # --- the stream ----------------------------------------------------------------------

    def _emit(self, u: BrokerEvent) -> None:
        self._updates.append(u)
        self._wake.set()

    def drain_updates(self) -> list[BrokerEvent]:
        """Take every update emitted so far (step-driven use: backtests)."""
        out, self._updates = self._updates, []
        return out

    async def trade_updates(self) -> AsyncIterator[BrokerEvent]:
        yield StreamConnected(since=None, reconnect=False)
        while True:
            while self._updates:
                yield self._updates.pop(0)
            self._wake = anyio.Event()
            if self._updates:
                continue
            await self._wake.wait()

    # --- orders --------------------------------------------------------------------------

    async def submit(self, request: OrderRequest) -> BrokerOrder:
        self.submits += 1
        r = request
        if r.client_order_id in self._by_coid:
            raise AmbiguousSubmitError("duplicate_id", "client_order_id must be unique")
        asset = self.assets.get(r.symbol)
        if asset is None or not asset.tradable:
            raise OrderRejectedError(f"asset {r.symbol} is not tradable", status=422)
        qty = r.qty
        fractional = r.notional is not None or (qty is not None and qty != qty.to_integral_value())
        if fractional and not asset.fractionable:
            raise OrderRejectedError(f"asset {r.symbol} is not fractionable", status=422)
        if fractional and r.time_in_force != "day":
            raise OrderRejectedError("fractional orders must be day orders", status=422)
        last = self._last.get(r.symbol)
        price = r.limit_price if r.order_type == "limit" else (last.close if last else None)
        if r.side == "buy" and price is not None:
            cost = r.notional if r.notional is not None else (qty or ZERO) * price
            available = self.cash - self._reserved_buys()
            if cost > available:
                raise OrderRejectedError(
                    f"insufficient buying power (cost {cost:.2f}, available {available:.2f})",
                    status=403, code=40310000)
        if r.side == "sell" and not self.config.allow_short:
            held = self._positions.get(r.symbol, _Position()).qty - self._reserved_sells(r.symbol)
            if qty is not None and qty > held:
                raise OrderRejectedError(
                    f"insufficient qty available for order (requested: {qty}, available: {held})",
                    status=403, code=40310000)
        self._n_orders += 1
        now = self.clock.now()
        o = _Order(broker_order_id=f"sim-{self._n_orders:08d}", request=r, submitted_at=now,
                   seq=self._n_orders, updated_at=now)
        self._orders[o.broker_order_id] = o
        self._by_coid[r.client_order_id] = o
        self._open.setdefault(r.symbol, {})[o.broker_order_id] = o
        self._emit(TradeUpdate(event="new", order=o.snapshot(), timestamp=now))
        if self.config.fill_at_signal_close and r.order_type == "market" and last is not None:
            self._fill(o, last.close, last, immediate=True)
        return o.snapshot()

    async def cancel(self, broker_order_id: str) -> None:
        o = self._orders.get(broker_order_id)
        if o is None:
            raise OrderNotFoundError(broker_order_id)
        if not o.open:
            raise CancelRejectedError(f"order is {o.status}")
        self._close(o, "canceled")

    async def replace(self, broker_order_id: str, *, qty: Decimal | None = None,
                      limit_price: Decimal | None = None,
                      client_order_id: str | None = None) -> BrokerOrder:
        o = self._orders.get(broker_order_id)
        if o is None:
            raise OrderNotFoundError(broker_order_id)
        if not o.open:
            raise OrderRejectedError(f"order is {o.status}", status=422)
        new_req = OrderRequest(
            client_order_id=client_order_id or f"{o.request.client_order_id[:44]}-r",
            symbol=o.request.symbol, side=o.request.side, order_type=o.request.order_type,
            time_in_force=o.request.time_in_force,
            qty=qty if qty is not None else o.request.qty, notional=o.request.notional,
            limit_price=limit_price if limit_price is not None else o.request.limit_price)
        self._n_orders += 1
        now = self.clock.now()
        new = _Order(broker_order_id=f"sim-{self._n_orders:08d}", request=new_req,
                     submitted_at=now, seq=self._n_orders, updated_at=now,
                     replaces=o.broker_order_id)
        o.replaced_by = new.broker_order_id
        self._orders[new.broker_order_id] = new
        self._by_coid[new_req.client_order_id] = new
        self._open.setdefault(new_req.symbol, {})[new.broker_order_id] = new
        self._close(o, "replaced")
        self._emit(TradeUpdate(event="new", order=new.snapshot(), timestamp=now))
        return new.snapshot()

    def _close(self, o: _Order, status: str) -> None:
        self._open.get(o.request.symbol, {}).pop(o.broker_order_id, None)
        o.status = status
        o.updated_at = self.clock.now()
        self._emit(TradeUpdate(event=status, order=o.snapshot(), timestamp=o.updated_at))

    def _open_orders(self) -> list[_Order]:
        return [o for book in self._open.values() for o in book.values()]

    def _reserved_buys(self) -> Decimal:
        total = ZERO
        for o in self._open_orders():
            if o.request.side == "buy":
                r = o.request
                if r.notional is not None:
                    total += r.notional - o.filled_notional
                else:
                    last = self._last.get(r.symbol)
                    px = r.limit_price or (last.close if last else ZERO)
                    total += ((r.qty or ZERO) - o.filled_qty) * px
        return total

    def _reserved_sells(self, symbol: str) -> Decimal:
        return sum(((o.request.qty or ZERO) - o.filled_qty
                    for o in self._open.get(symbol, {}).values()
                    if o.request.side == "sell"), ZERO)

    # --- the market ----------------------------------------------------------------------

    def on_bar(self, bar: Bar) -> None:
        """A new bar: expire yesterday's day orders, then fill what this bar allows."""
        book = self._open.get(bar.symbol)
        if book:
            day = trading_day(bar.start)
            for o in list(book.values()):
                if o.request.time_in_force == "day" and order_session(o.submitted_at) < day:
                    self._close(o, "expired")
        for o in list(self._open.get(bar.symbol, {}).values()):
            if o.submitted_at > bar.start:
                continue
            r = o.request
            if r.order_type == "market":
                self._fill(o, bar.open, bar)
            elif r.limit_price is not None:
                if r.side == "buy" and bar.low <= r.limit_price:
                    self._fill(o, min(bar.open, r.limit_price), bar)
                elif r.side == "sell" and bar.high >= r.limit_price:
                    self._fill(o, max(bar.open, r.limit_price), bar)
        self._last[bar.symbol] = bar

    def _fill(self, o: _Order, base_price: Decimal, bar: Bar, *, immediate: bool = False) -> None:
        r = o.request
        slip = self.config.slippage_bps / 10_000
        if r.order_type == "market":
            price = base_price * (1 + slip) if r.side == "buy" else base_price * (1 - slip)
        else:
            price = base_price
        price = price.quantize(Decimal("0.0001"))
        if r.qty is not None:
            remaining = r.qty - o.filled_qty
        else:
            remaining = ((r.notional or ZERO) - o.filled_notional) / price
            remaining = remaining.quantize(QTY_STEP, ROUND_DOWN)
        if immediate or (bar.volume == 0 and self.config.zero_volume == "fill"):
            cap = remaining
        else:
            cap = bar.volume * self.config.volume_participation
        whole = r.qty is not None and r.qty == r.qty.to_integral_value()
        qty = min(remaining, cap)
        if whole:
            qty = qty.to_integral_value(ROUND_DOWN)
        if qty <= 0:
            return
        notional = qty * price
        fee = max(self.config.min_fee,
                  (qty * self.config.fee_per_share + notional * self.config.fee_bps / 10_000))
        fee = fee.quantize(CENT)
        sign = 1 if r.side == "buy" else -1
        pos = self._positions.setdefault(r.symbol, _Position())
        new_qty = pos.qty + sign * qty
        if pos.qty == 0 or (pos.qty > 0) == (sign > 0):
            pos.avg = (abs(pos.qty) * pos.avg + notional) / abs(new_qty)
        elif new_qty != 0 and (new_qty > 0) != (pos.qty > 0):
            pos.avg = price
        pos.qty = new_qty
        if pos.qty == 0:
            pos.avg = ZERO
        self.cash += -notional - fee if sign > 0 else notional - fee
        o.filled_qty += qty
        o.filled_notional += notional
        done = qty >= remaining
        o.status = "filled" if done else "partially_filled"
        if done:
            self._open.get(r.symbol, {}).pop(o.broker_order_id, None)
        when = self.clock.now() if immediate else bar.start
        o.updated_at = when
        self._n_execs += 1
        exec_id = f"sim-x-{self._n_execs:010d}"
        self._fills.append(BrokerFill(activity_id=exec_id, broker_order_id=o.broker_order_id,
                                      symbol=r.symbol, side=r.side, qty=qty, price=price,
                                      timestamp=when, client_order_id=r.client_order_id,
                                      cum_qty=o.filled_qty))
        self._emit(TradeUpdate(event="fill" if done else "partial_fill", order=o.snapshot(),
                               timestamp=when, execution_id=exec_id, qty=qty, price=price,
                               position_qty=pos.qty, fee=fee))

    # --- reads ---------------------------------------------------------------------------

    async def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        o = self._by_coid.get(client_order_id)
        return o.snapshot() if o is not None else None

    async def open_orders(self) -> list[BrokerOrder]:
        return [o.snapshot() for o in sorted(self._open_orders(), key=lambda x: x.seq)]

    async def orders_since(self, after: datetime) -> list[BrokerOrder]:
        return [o.snapshot() for o in self._orders.values()
                if (o.updated_at or o.submitted_at) >= after or o.open]

    async def fills_since(self, after: datetime) -> list[BrokerFill]:
        return [f for f in self._fills if f.timestamp >= after]

    async def positions(self) -> list[BrokerPosition]:
        out = []
        for sym, p in sorted(self._positions.items()):
            if p.qty:
                last = self._last.get(sym)
                out.append(BrokerPosition(symbol=sym, qty=p.qty, avg_entry_price=p.avg,
                                          market_value=p.qty * last.close if last else None))
        return out

    async def account(self) -> BrokerAccount:
        equity = self.cash
        for sym, p in self._positions.items():
            last = self._last.get(sym)
            equity += p.qty * (last.close if last else p.avg)
        return BrokerAccount(account_id=self.config.account_id, equity=equity, cash=self.cash,
                             buying_power=self.cash - self._reserved_buys())

    async def asset(self, symbol: str) -> BrokerAsset | None:
        return self.assets.get(symbol)

    # --- persistence ---------------------------------------------------------------------

    def restore(self, cash: Decimal, positions: Mapping[str, tuple[Decimal, Decimal]],
                open_orders: list[tuple[OrderRequest, str, Decimal, Decimal, datetime]], *,
                orders_seen: int, executions_seen: int) -> None:
        """Rebuild the paper account from the engine's log (the simulated broker has no
        memory of its own between processes): cash, positions (qty, avg) and resting orders
        (request, broker id, filled qty, filled notional, submitted at). Id counters start
        past everything the log has seen, so no id is ever reused."""
        self.cash = cash
        self._n_orders = max(self._n_orders, orders_seen)
        self._n_execs = max(self._n_execs, executions_seen)
        self._positions = {s: _Position(qty=q, avg=a) for s, (q, a) in positions.items() if q}
        for req, broker_id, filled, notional, submitted in open_orders:
            self._n_orders += 1
            o = _Order(broker_order_id=broker_id, request=req, submitted_at=submitted,
                       seq=self._n_orders, status="partially_filled" if filled else "new",
                       filled_qty=filled, filled_notional=notional, updated_at=submitted)
            self._orders[broker_id] = o
            self._by_coid[req.client_order_id] = o
            self._open.setdefault(req.symbol, {})[broker_id] = o
        n = [int(b.removeprefix("sim-")) for b in self._orders if b.removeprefix("sim-").isdigit()]
        self._n_orders = max([self._n_orders, *n])

    def add_default_assets(self, symbols: Iterable[str]) -> list[str]:
        """Symbols the assets file does not list become tradable, whole-share, not shortable
        (your own data trades out of the box; a listed symbol keeps what the file says).
        Returns the symbols added."""
        added = sorted(set(symbols) - set(self.assets))
        if added:
            self.assets = {**self.assets, **{s: BrokerAsset(
                symbol=s, tradable=True, fractionable=False, shortable=False) for s in added}}
        return added

    # --- test and operator hooks ---------------------------------------------------------

    def set_position(self, symbol: str, qty: Decimal, avg: Decimal) -> None:
        """Someone traded by hand at the broker: no trade update is sent."""
        self._positions[symbol] = _Position(qty=qty, avg=avg)


def default_assets_line(symbols: list[str]) -> str:
    """The one line telling a user which symbols `add_default_assets` added."""
    shown = ", ".join(symbols[:8]) + (", ..." if len(symbols) > 8 else "")
    return (f"{len(symbols)} symbol(s) not in the assets file, traded as tradable whole-share, "
            f"not shortable: {shown} (an assets file with --assets decides otherwise)")
