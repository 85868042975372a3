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

Protection (stop, stop-limit and trailing-stop orders; bracket, OTO and OCO legs):
- A sell stop triggers when a bar's low reaches its stop (a buy stop: the high). It fills at
  the stop, or, when the bar opened through it (a gap), at the open moved against us by
  `slippage_bps`. A triggered stop-limit becomes a limit at its limit price: it fills at
  the trigger if that is at or better than the limit, else when the bar comes back to the
  limit, else it rests as a limit. A triggered stop that the volume cap only partly fills
  carries on as a market order.
- A trailing stop ratchets bar by bar along the assumed path open -> high -> low -> close: a
  sell stop checks the open against its stop, then raises its high-water mark to the bar's
  high, then triggers if the low reaches hwm - trail (a buy stop mirrors it: its low-water
  mark follows the low, checked after the high). The mark starts at the last close before
  the order.
- Stop-type orders are looked at before the other orders of a bar. So when one bar touches
  both a bracket's take-profit and its stop-loss, the stop fills and the take-profit is
  canceled: with only OHLC we can not know which came first, and we assume the worse.
- Bracket / OTO legs are `held` until the parent has filled completely, then go live
  (`new`) sized to the filled quantity; a parent that ends partially filled (canceled,
  expired) activates them at the filled quantity, one that ends unfilled cancels them.
  Legs that go live with their parent's fill can trigger from the next bar on. OCO legs
  are live at once. The first fill of a leg cancels its sibling; canceling a leg cancels
  its sibling (as at Alpaca).
- Orders that close a position hold its shares (Alpaca's `held_for_orders`): a sell beyond
  what open sells (legs included) leave is refused without shorting.

Rejections mirror Alpaca: insufficient buying power (cash account: cost beyond cash minus
open buys), selling more than held without shorting, fractional orders on non-fractionable
symbols or with a time in force other than day, brackets / OCO / OTO / trailing stops on
fractional quantities, a reused client order id (reported as the ambiguous duplicate-id
outcome, like Alpaca's 422).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, Decimal

import anyio
import msgspec

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
from engine.brokers.kinds import OrderState, UpdateKind
from engine.clock import Clock
from events.catalogue import STOP_ORDER_TYPES, FillModel, OrderLeg
from events.market import Bar
from events.vocabulary import CENT, SUB_CENT, ZERO, floor_qty, is_whole
from projections.calendar import order_session, trading_day

log = logging.getLogger(__name__)

# The simulator keeps Alpaca-like words for its orders' statuses (they are what its logs have
# always recorded as `broker_status`) and, like any adapter, reports them in neutral kinds.
_STATES = {"new": OrderState.WORKING, "held": OrderState.HELD,
           "partially_filled": OrderState.PARTIALLY_FILLED, "filled": OrderState.FILLED,
           "canceled": OrderState.CANCELED, "expired": OrderState.EXPIRED,
           "rejected": OrderState.REJECTED, "replaced": OrderState.REPLACED}
_CLOSE_KINDS = {"canceled": UpdateKind.CANCELED, "expired": UpdateKind.EXPIRED,
                "rejected": UpdateKind.REJECTED, "replaced": UpdateKind.REPLACED}
_TRAILING_MOVED = "trailing_stop_moved"  # not an Alpaca event: Alpaca shows it on the order


@dataclass(frozen=True)
class SimConfig:
    slippage_bps: Decimal = ZERO
    fee_per_share: Decimal = ZERO
    fee_bps: Decimal = ZERO
    min_fee: Decimal = ZERO
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


@dataclass(slots=True)
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
    parent: _Order | None = None
    legs: list[_Order] = field(default_factory=list)
    triggered: bool = False  # a stop whose trigger was reached: now a market / limit order
    hwm: Decimal | None = None  # a trailing stop's high- (sell) or low- (buy) water mark
    qty: Decimal | None = None  # a leg's size once its parent's fill is known

    @property
    def order_qty(self) -> Decimal | None:
        return self.qty if self.qty is not None else self.request.qty

    def snapshot(self, with_legs: bool = True) -> BrokerOrder:
        r = self.request
        status, filled, legs, parent = self.status, self.filled_qty, self.legs, self.parent
        return BrokerOrder(
            broker_order_id=self.broker_order_id, client_order_id=r.client_order_id,
            symbol=r.symbol, side=r.side, order_type=r.order_type, status=status,
            state=_STATES[status],
            qty=self.qty if self.qty is not None else r.qty, notional=r.notional,
            limit_price=r.limit_price, time_in_force=r.time_in_force, filled_qty=filled,
            filled_avg_price=(self.filled_notional / filled).quantize(SUB_CENT)
            if filled else None,
            submitted_at=self.submitted_at, updated_at=self.updated_at or self.submitted_at,
            replaced_by=self.replaced_by, replaces=self.replaces,
            # Only a trailing stop's trigger moves (`stop()`); every other order's is its own.
            stop_price=self.stop() if r.order_type == "trailing_stop" else r.stop_price,
            trail_price=r.trail_price, trail_percent=r.trail_percent,
            hwm=self.hwm, order_class=r.order_class,
            legs=tuple(leg.snapshot() for leg in legs) if with_legs and legs else (),
            parent_broker_order_id=parent.broker_order_id if parent is not None else None)

    def stop(self) -> Decimal | None:
        """The trigger: a stop's own, a trailing stop's from its mark."""
        r = self.request
        if r.order_type != "trailing_stop" or self.hwm is None:
            return r.stop_price
        sell = r.side == "sell"
        if r.trail_price is not None:
            return self.hwm - r.trail_price if sell else self.hwm + r.trail_price
        f = (r.trail_percent or ZERO) / 100
        return (self.hwm * (1 - f) if sell else self.hwm * (1 + f)).quantize(CENT)

    @property
    def open(self) -> bool:
        return self.status in ("new", "partially_filled", "held")

    @property
    def is_stop(self) -> bool:
        return self.request.order_type in STOP_ORDER_TYPES and not self.triggered


@dataclass(slots=True)
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
        fractional = r.notional is not None or (qty is not None and not is_whole(qty))
        if fractional and not asset.fractionable:
            raise OrderRejectedError(f"asset {r.symbol} is not fractionable", status=422)
        if fractional and r.time_in_force != "day":
            raise OrderRejectedError("fractional orders must be day orders", status=422)
        if fractional and (r.order_class != "simple" or r.order_type == "trailing_stop"):
            raise OrderRejectedError(f"fractional orders can not be {r.order_class} "
                                     f"{r.order_type} orders", status=422)
        last = self._last.get(r.symbol)
        price = r.limit_price if r.order_type in ("limit", "stop_limit") else (
            last.close if last else None)
        if r.side == "buy" and price is not None:
            cost = r.notional if r.notional is not None else (qty or ZERO) * price
            available = self.cash - self._reserved_buys()
            if cost > available:
                raise OrderRejectedError(
                    f"insufficient buying power (cost {cost:.2f}, available {available:.2f})",
                    status=403, code=40310000)
        if r.side == "sell" and not self.config.allow_short:
            position = self._positions.get(r.symbol)
            held = (position.qty if position is not None else ZERO) \
                - self._reserved_sells(r.symbol)
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
        if r.order_type == "trailing_stop":
            o.hwm = last.close if last else None
        for leg in r.legs:
            self._add_leg(o, leg, now, live=r.order_class == "oco")
        # The acknowledgement and the answer show the order as it stands now: one snapshot
        # (frozen) serves both, unless a fill at once changes it before the answer.
        snap = o.snapshot()
        self._emit(TradeUpdate(kind=UpdateKind.ACCEPTED, event="new", order=snap, timestamp=now))
        for child in o.legs:
            if child.status == "new":
                self._accepted(child, now)
        if self.config.fill_at_signal_close and r.order_type == "market" and last is not None:
            self._fill(o, last.close, last, immediate=True)
            snap = o.snapshot()
        return snap

    def _add_leg(self, parent: _Order, leg: OrderLeg, now: datetime, *, live: bool) -> None:
        if leg.client_order_id in self._by_coid:
            raise AmbiguousSubmitError("duplicate_id", "client_order_id must be unique")
        pr = parent.request
        req = OrderRequest(client_order_id=leg.client_order_id, symbol=pr.symbol, side=leg.side,
                           order_type=leg.order_type, time_in_force=pr.time_in_force,
                           qty=leg.qty, limit_price=leg.limit_price, stop_price=leg.stop_price,
                           trail_price=leg.trail_price, trail_percent=leg.trail_percent,
                           order_class=pr.order_class)
        self._n_orders += 1
        child = _Order(broker_order_id=f"sim-{self._n_orders:08d}", request=req,
                       submitted_at=now, seq=self._n_orders, updated_at=now,
                       status="new" if live else "held", parent=parent)
        parent.legs.append(child)
        self._orders[child.broker_order_id] = child
        self._by_coid[req.client_order_id] = child
        self._open.setdefault(req.symbol, {})[child.broker_order_id] = child

    async def cancel(self, broker_order_id: str) -> None:
        o = self._orders.get(broker_order_id)
        if o is None:
            raise OrderNotFoundError(broker_order_id)
        if not o.open:
            raise CancelRejectedError(f"order is {o.status}")
        self._close(o, "canceled")
        # Canceling one leg cancels the other (Alpaca); in an OCO the parent is a leg too.
        for other in self._one_cancels_other(o):
            self._close(other, "canceled")

    async def replace(self, broker_order_id: str, *, qty: Decimal | None = None,
                      limit_price: Decimal | None = None,
                      client_order_id: str | None = None,
                      stop_price: Decimal | None = None,
                      trail: Decimal | None = None) -> BrokerOrder:
        o = self._orders.get(broker_order_id)
        if o is None:
            raise OrderNotFoundError(broker_order_id)
        if not o.open:
            raise OrderRejectedError(f"order is {o.status}", status=422)
        r = o.request
        if stop_price is not None and r.order_type not in ("stop", "stop_limit"):
            raise OrderRejectedError(f"{r.order_type} orders must not have stop_price", status=422)
        if trail is not None and r.order_type != "trailing_stop":
            raise OrderRejectedError("only trailing stops take trail", status=422)
        if trail is not None and trail <= 0:
            raise OrderRejectedError("trail must be positive", status=422)
        percent = r.trail_percent is not None
        new_req = msgspec.structs.replace(
            r, client_order_id=client_order_id or f"{r.client_order_id[:44]}-r",
            qty=qty if qty is not None else o.order_qty,
            limit_price=limit_price if limit_price is not None else r.limit_price,
            stop_price=stop_price if stop_price is not None else r.stop_price,
            trail_percent=trail if trail is not None and percent else r.trail_percent,
            trail_price=trail if trail is not None and not percent else r.trail_price,
            legs=())
        self._n_orders += 1
        now = self.clock.now()
        new = _Order(broker_order_id=f"sim-{self._n_orders:08d}", request=new_req,
                     submitted_at=now, seq=self._n_orders, updated_at=now,
                     replaces=o.broker_order_id, parent=o.parent, hwm=o.hwm,
                     status="held" if o.status == "held" else "new")
        if o.parent is not None:
            o.parent.legs = [new if x is o else x for x in o.parent.legs]
        new.legs, o.legs = o.legs, []
        for leg in new.legs:
            leg.parent = new
        o.replaced_by = new.broker_order_id
        self._orders[new.broker_order_id] = new
        self._by_coid[new_req.client_order_id] = new
        self._open.setdefault(new_req.symbol, {})[new.broker_order_id] = new
        self._close(o, "replaced")
        if new.status == "new":
            self._accepted(new, now)
        return new.snapshot()

    def _accepted(self, o: _Order, when: datetime) -> None:
        self._emit(TradeUpdate(kind=UpdateKind.ACCEPTED, event="new", order=o.snapshot(),
                               timestamp=when))

    def _close(self, o: _Order, status: str, when: datetime | None = None) -> None:
        self._open.get(o.request.symbol, {}).pop(o.broker_order_id, None)
        o.status = status
        o.updated_at = when or self.clock.now()
        self._emit(TradeUpdate(kind=_CLOSE_KINDS[status], event=status, order=o.snapshot(),
                               timestamp=o.updated_at))
        if o.legs and status in ("canceled", "expired", "rejected"):
            self._parent_ended(o, o.updated_at)

    def _parent_ended(self, parent: _Order, when: datetime) -> None:
        """A parent is done filling: its held legs go live at the filled size, or, with
        nothing filled, are canceled."""
        for leg in parent.legs:
            if leg.status != "held":
                continue
            if parent.filled_qty <= 0:
                self._close(leg, "canceled", when)
                continue
            leg.qty = parent.filled_qty
            leg.status = "new"
            leg.updated_at = when
            self._accepted(leg, when)

    def _open_orders(self) -> list[_Order]:
        return [o for book in self._open.values() for o in book.values()]

    def _reserved_buys(self) -> Decimal:
        total = ZERO
        for o in self._open_orders():
            # A leg (a short's buy stop, its take-profit) only covers: it needs no cash.
            if o.request.side == "buy" and o.parent is None:
                r = o.request
                if r.notional is not None:
                    total += r.notional - o.filled_notional
                else:
                    last = self._last.get(r.symbol)
                    px = r.limit_price or (last.close if last else ZERO)
                    total += ((r.qty or ZERO) - o.filled_qty) * px
        return total

    def _reserved_sells(self, symbol: str) -> Decimal:
        # One-cancels-other orders hold the same shares once: an OCO's stop leg holds what
        # its take-profit parent holds, a bracket's second live leg what its first holds.
        # Held legs hold nothing yet.
        total = ZERO
        for o in self._open.get(symbol, {}).values():
            if o.request.side != "sell" or o.status == "held":
                continue
            parent = o.parent
            if parent is not None and (parent.request.order_class == "oco" or any(
                    x.seq < o.seq and x.open and x.status != "held" for x in parent.legs)):
                continue
            total += (o.order_qty or ZERO) - o.filled_qty
        return total

    # --- the market ----------------------------------------------------------------------

    def on_bar(self, bar: Bar) -> None:
        """A new bar: expire yesterday's day orders, then fill what this bar allows."""
        book = self._open.get(bar.symbol)
        if book:
            day = trading_day(bar.start)
            for o in list(book.values()):
                if o.request.time_in_force == "day" and order_session(o.submitted_at) < day:
                    self._close(o, "expired")
        book = self._open.get(bar.symbol)
        if book:
            # Held legs wait; legs that went live during this bar wait for the next one.
            todo = [o for o in book.values()
                    if o.status != "held" and o.submitted_at <= bar.start]
            # Stops first: a bar touching a take-profit and a stop-loss fills the stop.
            for o in [o for o in todo if o.is_stop] + [o for o in todo if not o.is_stop]:
                if o.open:
                    self._on_bar_order(o, bar)
        self._last[bar.symbol] = bar

    def _on_bar_order(self, o: _Order, bar: Bar) -> None:
        r = o.request
        sell = r.side == "sell"
        if o.is_stop:
            stop = o.stop()
            if r.order_type == "trailing_stop":
                if stop is not None and (bar.open <= stop if sell else bar.open >= stop):
                    self._trigger(o, bar, gapped=True, stop=stop)
                    return
                # open -> high -> low: the mark follows the high, then the low is checked.
                before = o.hwm
                o.hwm = (max(o.hwm, bar.high) if sell else min(o.hwm, bar.low)) \
                    if o.hwm is not None else (bar.high if sell else bar.low)
                stop = o.stop()
                assert stop is not None
                if o.hwm != before:
                    o.updated_at = bar.start
                    self._emit(TradeUpdate(kind=UpdateKind.TRAILING_MOVED,
                                           event=_TRAILING_MOVED, order=o.snapshot(),
                                           timestamp=bar.start))
                if bar.low <= stop if sell else bar.high >= stop:
                    self._trigger(o, bar, gapped=False, stop=stop)
                return
            assert stop is not None
            if bar.open <= stop if sell else bar.open >= stop:
                self._trigger(o, bar, gapped=True, stop=stop)
            elif bar.low <= stop if sell else bar.high >= stop:
                self._trigger(o, bar, gapped=False, stop=stop)
            return
        if r.order_type in ("market", "stop", "trailing_stop"):  # a triggered stop: market
            self._fill(o, bar.open, bar, market=True)
        elif r.limit_price is not None:
            if not sell and bar.low <= r.limit_price:
                self._fill(o, min(bar.open, r.limit_price), bar)
            elif sell and bar.high >= r.limit_price:
                self._fill(o, max(bar.open, r.limit_price), bar)

    def _trigger(self, o: _Order, bar: Bar, *, gapped: bool, stop: Decimal) -> None:
        """The stop was reached: at the open if the bar gapped through it, else at the stop."""
        o.triggered = True
        r = o.request
        at = bar.open if gapped else stop
        if r.order_type != "stop_limit":
            self._fill(o, at, bar, market=gapped)
            return
        limit = r.limit_price
        assert limit is not None
        if (at >= limit) if r.side == "sell" else (at <= limit):
            self._fill(o, at, bar)
        elif (bar.high >= limit) if r.side == "sell" else (bar.low <= limit):
            self._fill(o, limit, bar)
        # else: it rests as a limit order

    def _fill(self, o: _Order, base_price: Decimal, bar: Bar, *, immediate: bool = False,
              market: bool | None = None) -> None:
        r = o.request
        if market if market is not None else r.order_type == "market":
            slip = self.config.slippage_bps / 10_000
            price = base_price * (1 + slip) if r.side == "buy" else base_price * (1 - slip)
        else:
            price = base_price
        price = price.quantize(SUB_CENT)
        order_qty = o.order_qty
        if order_qty is not None:
            remaining = order_qty - o.filled_qty
        else:
            remaining = ((r.notional or ZERO) - o.filled_notional) / price
            remaining = floor_qty(remaining)
        if immediate or (bar.volume == 0 and self.config.zero_volume == "fill"):
            cap = remaining
        else:
            cap = bar.volume * self.config.volume_participation
        whole = order_qty is not None and is_whole(order_qty)
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
        pos = self._positions.get(r.symbol)
        if pos is None:
            pos = self._positions[r.symbol] = _Position()
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
            book = self._open.get(r.symbol)
            if book is not None:
                book.pop(o.broker_order_id, None)
        when = self.clock.now() if immediate else bar.start
        o.updated_at = when
        self._n_execs += 1
        exec_id = f"sim-x-{self._n_execs:010d}"
        self._fills.append(BrokerFill(activity_id=exec_id, broker_order_id=o.broker_order_id,
                                      symbol=r.symbol, side=r.side, qty=qty, price=price,
                                      timestamp=when, client_order_id=r.client_order_id,
                                      cum_qty=o.filled_qty))
        self._emit(TradeUpdate(kind=UpdateKind.FILL if done else UpdateKind.PARTIAL_FILL,
                               event="fill" if done else "partial_fill", order=o.snapshot(),
                               timestamp=when, execution_id=exec_id, qty=qty, price=price,
                               position_qty=pos.qty, fee=fee))
        if o.parent is not None or r.order_class == "oco":  # a family (else there is none)
            for other in self._one_cancels_other(o):  # one leg's fill cancels its sibling
                self._close(other, "canceled", when)
        if done and o.legs:
            self._parent_ended(o, when)

    def _one_cancels_other(self, o: _Order) -> list[_Order]:
        """The open orders `o` cancels by filling or being canceled: its sibling legs, and
        in an OCO (whose parent is the take-profit) the parent and its stop alike."""
        if o.parent is not None:
            family = [*o.parent.legs]
            if o.parent.request.order_class == "oco":
                family.append(o.parent)
        elif o.request.order_class == "oco":
            family = [*o.legs]
        else:
            return []
        return [x for x in family if x is not o and x.open]

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
                orders_seen: int, executions_seen: int,
                held: AbstractSet[str] = frozenset(), parents: Mapping[str, str] | None = None,
                hwms: Mapping[str, Decimal] | None = None) -> None:
        """Rebuild the paper account from the engine's log (the simulated broker has no
        memory of its own between processes): cash, positions (qty, avg) and resting orders
        (request, broker id, filled qty, filled notional, submitted at), the legs among them
        `held` and linked to their `parents` (client ids). Id counters start past everything
        the log has seen, so no id is ever reused."""
        self.cash = cash
        self._n_orders = max(self._n_orders, orders_seen)
        self._n_execs = max(self._n_execs, executions_seen)
        self._positions = {s: _Position(qty=q, avg=a) for s, (q, a) in positions.items() if q}
        for req, broker_id, filled, notional, submitted in open_orders:
            self._n_orders += 1
            status = "held" if req.client_order_id in held else (
                "partially_filled" if filled else "new")
            o = _Order(broker_order_id=broker_id, request=req, submitted_at=submitted,
                       seq=self._n_orders, status=status,
                       filled_qty=filled, filled_notional=notional, updated_at=submitted)
            if req.order_type == "trailing_stop":
                last = self._last.get(req.symbol)
                o.hwm = (hwms or {}).get(req.client_order_id) or (last.close if last else None)
            self._orders[broker_id] = o
            self._by_coid[req.client_order_id] = o
            self._open.setdefault(req.symbol, {})[broker_id] = o
        for child_coid, parent_coid in (parents or {}).items():
            child, parent = self._by_coid.get(child_coid), self._by_coid.get(parent_coid)
            if child is not None and parent is not None:
                child.parent = parent
                parent.legs.append(child)
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
