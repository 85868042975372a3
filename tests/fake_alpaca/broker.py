"""In-memory broker state for the fake Alpaca server.

Everything here is synchronous and is only ever touched from the fake server's
event-loop thread (see ``server.FakeAlpaca._call``), so it needs no locks.

JSON shapes follow Alpaca's Trading API v2 as parsed by alpaca-py 0.44
(``alpaca/trading/models.py``): numbers are strings, timestamps RFC 3339 UTC.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from . import advanced
from .broker_errors import ApiError

__all__ = ["ApiError", "Broker", "Order"]

NINE_DP = Decimal("1e-9")
ZERO = Decimal(0)

OPEN_STATUSES = {
    "new",
    "partially_filled",
    "accepted",
    "pending_new",
    "pending_cancel",
    "pending_replace",
    "accepted_for_bidding",
    "held",
    "calculated",
    "stopped",
    "suspended",
    "done_for_day",
}
CLOSED_STATUSES = {"filled", "canceled", "expired", "replaced", "rejected"}
CANCELABLE_STATUSES = OPEN_STATUSES - {"pending_cancel"}
ASSET_NAMESPACE = uuid.UUID("6b1f4d0e-2f0c-4c55-9f6a-0f4a3a1f0a11")


# --------------------------------------------------------------------------- helpers


def dec(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise ValueError("boolean is not a number")  # noqa: TRY004 (answered as 422)
    if isinstance(value, float):
        return Decimal(repr(value))
    try:
        return Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {value!r}") from exc


def opt_dec(value: Any) -> Decimal | None:
    return None if value is None or value == "" else dec(value)


def fmt(value: Decimal | None) -> str | None:
    """Format a Decimal like Alpaca does: plain notation, no trailing zeros."""
    if value is None:
        return None
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def floor9(value: Decimal) -> Decimal:
    return value.quantize(NINE_DP, rounding=ROUND_DOWN)


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_dt(value: Any) -> datetime:
    """Parse RFC 3339 / ISO timestamps or dates (as sent by alpaca-py or tests)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    text = str(value).strip()
    # an unescaped '+' in a query string decodes to a space
    if len(text) > 19 and text[19:20] == " ":
        text = text[:19] + "+" + text[20:]
    text = text.replace(" +", "+")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if len(text) == 10:
        d = date.fromisoformat(text)
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    # Python 3.11 fromisoformat accepts up to 6 fractional digits only
    if "." in text:
        head, _, rest = text.partition(".")
        frac = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            frac += rest[i]
            i += 1
        text = head + "." + (frac[:6].ljust(6, "0")) + rest[i:]
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def new_client_order_id() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- records


@dataclass
class Asset:
    symbol: str
    id: str
    name: str
    exchange: str = "NASDAQ"
    asset_class: str = "us_equity"
    status: str = "active"
    tradable: bool = True
    marginable: bool = True
    shortable: bool = True
    easy_to_borrow: bool = True
    fractionable: bool = True
    maintenance_margin_requirement: float = 30.0
    attributes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "class": self.asset_class,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "name": self.name,
            "status": self.status,
            "tradable": self.tradable,
            "marginable": self.marginable,
            "maintenance_margin_requirement": self.maintenance_margin_requirement,
            "margin_requirement_long": "30",
            "margin_requirement_short": "100",
            "shortable": self.shortable,
            "easy_to_borrow": self.easy_to_borrow,
            "fractionable": self.fractionable,
            "attributes": list(self.attributes),
        }


@dataclass
class Order:
    seq: int
    id: str
    client_order_id: str
    symbol: str
    asset_id: str
    side: str
    type: str
    time_in_force: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    extended_hours: bool
    status: str
    created_at: datetime
    position_intent: str | None = None
    order_class: str = "simple"
    external: bool = False
    updated_at: datetime | None = None
    submitted_at: datetime | None = None
    filled_at: datetime | None = None
    expired_at: datetime | None = None
    canceled_at: datetime | None = None
    failed_at: datetime | None = None
    replaced_at: datetime | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    expires_at: datetime | None = None
    filled_qty: Decimal = ZERO
    filled_notional: Decimal = ZERO  # sum(qty * price) of executions
    status_before_cancel: str | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    hwm: Decimal | None = None
    # Advanced classes: a parent lists its legs' ids; a leg knows its parent and role
    # ("take_profit" | "stop_loss"). Alpaca's order JSON has no parent field: a client
    # learns the legs only from the parent's `legs`.
    leg_ids: list[str] = field(default_factory=list)
    parent_id: str | None = None
    leg_role: str | None = None
    triggered: bool = False  # a stop_limit whose stop was reached works as a limit

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def filled_avg_price(self) -> Decimal | None:
        if self.filled_qty == 0:
            return None
        return (self.filled_notional / self.filled_qty).quantize(NINE_DP)

    def remaining_qty(self, price: Decimal | None = None) -> Decimal:
        """Shares still to fill; for notional orders this needs a price."""
        if self.qty is not None:
            return self.qty - self.filled_qty
        assert self.notional is not None
        left = self.notional - self.filled_notional
        if left <= Decimal("0.005") or price is None or price <= 0:
            return ZERO if left <= Decimal("0.005") else left  # caller must supply a price
        return floor9(left / price)

    def to_json(self, legs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at or self.created_at),
            "submitted_at": iso(self.submitted_at or self.created_at),
            "filled_at": iso(self.filled_at),
            "expired_at": iso(self.expired_at),
            "canceled_at": iso(self.canceled_at),
            "failed_at": iso(self.failed_at),
            "replaced_at": iso(self.replaced_at),
            "replaced_by": self.replaced_by,
            "replaces": self.replaces,
            "asset_id": self.asset_id,
            "symbol": self.symbol,
            "asset_class": "us_equity",
            "notional": fmt(self.notional),
            "qty": fmt(self.qty),
            "filled_qty": fmt(self.filled_qty),
            "filled_avg_price": fmt(self.filled_avg_price),
            "order_class": self.order_class,
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "position_intent": self.position_intent,
            "time_in_force": self.time_in_force,
            "limit_price": fmt(self.limit_price),
            "stop_price": fmt(self.stop_price),
            "status": self.status,
            "extended_hours": self.extended_hours,
            "legs": legs,
            "trail_percent": fmt(self.trail_percent),
            "trail_price": fmt(self.trail_price),
            "hwm": fmt(self.hwm),
            "subtag": None,
            "source": "access_key" if not self.external else None,
            "expires_at": iso(self.expires_at),
        }


@dataclass
class Position:
    symbol: str
    asset_id: str
    qty: Decimal
    avg_entry_price: Decimal


@dataclass
class Activity:
    id: str
    transaction_time: datetime
    type: str  # fill | partial_fill
    price: Decimal
    qty: Decimal
    side: str
    symbol: str
    leaves_qty: Decimal
    order_id: str
    cum_qty: Decimal
    order_status: str
    execution_id: str
    client_order_id: str

    def to_json(self, account_id: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "account_id": account_id,
            "activity_type": "FILL",
            "transaction_time": iso(self.transaction_time),
            "type": self.type,
            "price": fmt(self.price),
            "qty": fmt(self.qty),
            "side": self.side,
            "symbol": self.symbol,
            "leaves_qty": fmt(self.leaves_qty),
            "order_id": self.order_id,
            "cum_qty": fmt(self.cum_qty),
            "order_status": self.order_status,
        }


# --------------------------------------------------------------------------- broker


UpdateSink = Callable[[dict[str, Any]], None]


class Broker:
    """Orders, positions, cash and activities of one fake Alpaca account."""

    def __init__(
        self,
        *,
        cash: Any = "100000",
        multiplier: Any = "1",
        shorting_enabled: bool = False,
        pdt_fields: bool = False,
        symbols: Iterable[str] = (),
        prices: dict[str, Any] | None = None,
        auto_accept: bool = True,
        auto_fill: bool = False,
        now: Callable[[], datetime] | None = None,
        on_update: UpdateSink | None = None,
    ) -> None:
        self.account_id = str(uuid.uuid4())
        self.account_number = "PA" + "".join(random.choice("0123456789") for _ in range(10))
        self.account_created_at = datetime.now(UTC) - timedelta(days=30)
        self.cash = dec(cash)
        self.multiplier = dec(multiplier)
        self.shorting_enabled = shorting_enabled
        self.pdt_fields = pdt_fields
        self.pattern_day_trader = False
        self.daytrade_count = 0
        self.buying_power_override: Decimal | None = None
        self.last_equity: Decimal | None = None
        self.status = "ACTIVE"
        self.trading_blocked = False
        self.account_blocked = False
        self.transfers_blocked = False
        self.trade_suspended_by_user = False
        self.auto_accept = auto_accept
        self.auto_fill = auto_fill
        self._now_fn = now
        self.frozen_now: datetime | None = None
        self.on_update: UpdateSink = on_update or (lambda update: None)

        self.assets: dict[str, Asset] = {}
        for sym in symbols:
            self.upsert_asset(sym)
        self.prices: dict[str, Decimal] = {}
        for sym, px in (prices or {}).items():
            self.set_price(sym, px)

        self.orders: dict[str, Order] = {}
        self.orders_by_cid: dict[str, Order] = {}
        self.taken_client_ids: set[str] = set()
        self.positions: dict[str, Position] = {}
        self.activities: list[Activity] = []
        self._order_seq = 0

        self.clock_is_open = True
        self.clock_next_open: datetime | None = None
        self.clock_next_close: datetime | None = None

        # cancel behaviour switches
        self.slow_cancel = False
        self.slow_cancel_delay: float | None = None
        self.cancel_rejects: list[str] = []  # queue of modes for the next cancels
        self.pending_cancel_ids: list[str] = []
        self.schedule: Callable[[float, Callable[[], object]], object] = lambda d, fn: None

    # ------------------------------------------------------------------ time

    def now(self) -> datetime:
        if self.frozen_now is not None:
            return self.frozen_now
        if self._now_fn is not None:
            return self._now_fn()
        return datetime.now(UTC)

    # ------------------------------------------------------------------ assets/prices

    def upsert_asset(self, symbol: str, **attrs: Any) -> Asset:
        symbol = symbol.upper()
        asset = self.assets.get(symbol)
        if asset is None:
            asset = Asset(
                symbol=symbol,
                id=str(uuid.uuid5(ASSET_NAMESPACE, symbol)),
                name=f"{symbol} Common Stock",
            )
            self.assets[symbol] = asset
        for key, value in attrs.items():
            if key == "class":
                key = "asset_class"
            if not hasattr(asset, key):
                raise ValueError(f"unknown asset attribute {key!r}")
            setattr(asset, key, value)
        return asset

    def find_asset(self, symbol_or_id: str) -> Asset | None:
        asset = self.assets.get(symbol_or_id.upper())
        if asset is not None:
            return asset
        for candidate in self.assets.values():
            if candidate.id == symbol_or_id:
                return candidate
        return None

    def set_price(self, symbol: str, price: Any) -> None:
        self.prices[symbol.upper()] = dec(price)

    def price_of(self, symbol: str) -> Decimal | None:
        px = self.prices.get(symbol)
        if px is not None:
            return px
        pos = self.positions.get(symbol)
        return pos.avg_entry_price if pos else None

    # ------------------------------------------------------------------ account

    def _market_values(self) -> tuple[Decimal, Decimal]:
        long_mv = ZERO
        short_mv = ZERO
        for pos in self.positions.values():
            px = self.price_of(pos.symbol) or pos.avg_entry_price
            mv = pos.qty * px
            if pos.qty > 0:
                long_mv += mv
            else:
                short_mv += mv
        return long_mv, short_mv

    def reserved_for_open_buys(self) -> Decimal:
        total = ZERO
        for order in self.orders.values():
            if not order.is_open or order.side != "buy":
                continue
            if order.notional is not None:
                total += max(ZERO, order.notional - order.filled_notional)
                continue
            px = order.limit_price or self.price_of(order.symbol)
            if px is not None:
                total += (order.qty - order.filled_qty) * px  # type: ignore[operator]
        return total

    def equity(self) -> Decimal:
        long_mv, short_mv = self._market_values()
        return self.cash + long_mv + short_mv

    def buying_power(self) -> Decimal:
        reserved = self.reserved_for_open_buys()
        if self.buying_power_override is not None:
            return max(ZERO, self.buying_power_override - reserved)
        long_mv, short_mv = self._market_values()
        equity = self.cash + long_mv + short_mv
        # cash account (multiplier 1): buying power == cash for a long-only book;
        # margin account: equity * multiplier minus what positions already use
        base = equity * max(self.multiplier, Decimal(1)) - (long_mv + abs(short_mv))
        return max(ZERO, base - reserved)

    def account_json(self) -> dict[str, Any]:
        long_mv, short_mv = self._market_values()
        equity = self.cash + long_mv + short_mv
        bp = self.buying_power()
        gross = long_mv + abs(short_mv)
        data: dict[str, Any] = {
            "id": self.account_id,
            "admin_configurations": {},
            "user_configurations": None,
            "account_number": self.account_number,
            "status": self.status,
            "crypto_status": "ACTIVE",
            "options_approved_level": 0,
            "options_trading_level": 0,
            "currency": "USD",
            "buying_power": fmt(bp),
            "regt_buying_power": fmt(bp),
            "non_marginable_buying_power": fmt(
                max(ZERO, self.cash - self.reserved_for_open_buys())
            ),
            "options_buying_power": fmt(max(ZERO, self.cash - self.reserved_for_open_buys())),
            "effective_buying_power": fmt(bp),
            "cash": fmt(self.cash),
            "accrued_fees": "0",
            "pending_transfer_in": "0",
            "portfolio_value": fmt(equity),
            "trading_blocked": self.trading_blocked,
            "transfers_blocked": self.transfers_blocked,
            "account_blocked": self.account_blocked,
            "created_at": iso(self.account_created_at),
            "trade_suspended_by_user": self.trade_suspended_by_user,
            "multiplier": fmt(self.multiplier),
            "shorting_enabled": self.shorting_enabled,
            "equity": fmt(equity),
            "last_equity": fmt(self.last_equity if self.last_equity is not None else equity),
            "long_market_value": fmt(long_mv),
            "short_market_value": fmt(short_mv),
            "position_market_value": fmt(gross),
            "initial_margin": fmt(gross / self.multiplier if self.multiplier > 0 else gross),
            "maintenance_margin": fmt(gross * Decimal("0.3")),
            "last_maintenance_margin": "0",
            "sma": fmt(equity),
            "crypto_tier": 1,
            "intraday_adjustments": "0",
            "pending_reg_taf_fees": "0",
            "balance_asof": (self.now() - timedelta(days=1)).date().isoformat(),
        }
        if self.pdt_fields:
            data["pattern_day_trader"] = self.pattern_day_trader
            data["daytrade_count"] = self.daytrade_count
            data["daytrading_buying_power"] = fmt(bp)
        return data

    def account_configurations_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "fractional_trading": True,
            "max_margin_multiplier": fmt(self.multiplier),
            "no_shorting": not self.shorting_enabled,
            "suspend_trade": self.trade_suspended_by_user,
            "trade_confirm_email": "none",
            "ptp_no_exception_entry": False,
            "max_options_trading_level": 0,
        }
        if self.pdt_fields:
            data["dtbp_check"] = "entry"
            data["pdt_check"] = "entry"
        return data

    # ------------------------------------------------------------------ clock

    def clock_json(self) -> dict[str, Any]:
        now = self.now()
        next_open = self.clock_next_open or (now + timedelta(days=1)).replace(
            hour=14, minute=30, second=0, microsecond=0
        )
        next_close = self.clock_next_close or (
            now.replace(hour=21, minute=0, second=0, microsecond=0)
            if now.hour < 21
            else (now + timedelta(days=1)).replace(hour=21, minute=0, second=0, microsecond=0)
        )
        et = timezone(timedelta(hours=-5))
        return {
            "timestamp": now.astimezone(et).isoformat(),
            "is_open": self.clock_is_open,
            "next_open": next_open.astimezone(et).isoformat(timespec="seconds"),
            "next_close": next_close.astimezone(et).isoformat(timespec="seconds"),
        }

    def calendar_json(self, start: str | None, end: str | None) -> list[dict[str, Any]]:
        today = self.now().date()
        d0 = parse_dt(start).date() if start else today - timedelta(days=7)
        d1 = parse_dt(end).date() if end else today + timedelta(days=7)
        out = []
        day = d0
        while day <= d1:
            if day.weekday() < 5:
                out.append(
                    {
                        "date": day.isoformat(),
                        "open": "09:30",
                        "close": "16:00",
                        "session_open": "0400",
                        "session_close": "2000",
                        "settlement_date": (day + timedelta(days=1)).isoformat(),
                    }
                )
            day += timedelta(days=1)
        return out

    # ------------------------------------------------------------------ positions

    def position_json(self, pos: Position) -> dict[str, Any]:
        asset = self.assets.get(pos.symbol)
        px = self.price_of(pos.symbol) or pos.avg_entry_price
        market_value = pos.qty * px
        cost_basis = pos.qty * pos.avg_entry_price
        unrealized = market_value - cost_basis
        plpc = (unrealized / abs(cost_basis)) if cost_basis else ZERO
        return {
            "asset_id": pos.asset_id,
            "symbol": pos.symbol,
            "exchange": asset.exchange if asset else "NASDAQ",
            "asset_class": "us_equity",
            "asset_marginable": asset.marginable if asset else True,
            "qty": fmt(pos.qty),
            "qty_available": fmt(
                pos.qty - self._held_for_sells(pos.symbol) if pos.qty > 0 else pos.qty
            ),
            "avg_entry_price": fmt(pos.avg_entry_price),
            "side": "long" if pos.qty > 0 else "short",
            "market_value": fmt(market_value),
            "cost_basis": fmt(cost_basis),
            "unrealized_pl": fmt(unrealized),
            "unrealized_plpc": fmt(plpc.quantize(Decimal("1e-6"))),
            "unrealized_intraday_pl": fmt(unrealized),
            "unrealized_intraday_plpc": fmt(plpc.quantize(Decimal("1e-6"))),
            "current_price": fmt(px),
            "lastday_price": fmt(px),
            "change_today": "0",
        }

    def _held_for_sells(self, symbol: str) -> Decimal:
        """Shares open sells hold; a one-cancels-other group holds its shares once, and
        legs of an unfilled parent hold none yet."""
        groups: dict[str, Decimal] = {}
        for order in self.orders.values():
            if not (order.is_open and order.side == "sell" and order.symbol == symbol
                    and order.qty is not None):
                continue
            if order.status == "held" and not self._leg_is_active(order):
                continue
            key = order.parent_id or order.id
            groups[key] = max(groups.get(key, ZERO), order.qty - order.filled_qty)
        return sum(groups.values(), ZERO)

    def set_position(self, symbol: str, qty: Any, avg_price: Any) -> None:
        symbol = symbol.upper()
        qty_d = dec(qty)
        asset = self.find_asset(symbol) or self.upsert_asset(symbol)
        if qty_d == 0:
            self.positions.pop(symbol, None)
        else:
            self.positions[symbol] = Position(symbol, asset.id, qty_d, dec(avg_price))

    def _apply_execution(self, symbol: str, side: str, qty: Decimal, price: Decimal) -> Decimal:
        """Update position and cash for one execution; returns the new signed position qty."""
        signed = qty if side == "buy" else -qty
        pos = self.positions.get(symbol)
        old_qty = pos.qty if pos else ZERO
        new_qty = old_qty + signed
        if side == "buy":
            self.cash -= qty * price
        else:
            self.cash += qty * price
        if new_qty == 0:
            self.positions.pop(symbol, None)
            return new_qty
        asset = self.find_asset(symbol) or self.upsert_asset(symbol)
        if pos is None or old_qty == 0 or (old_qty > 0) != (new_qty > 0):
            # opened, or flipped through zero: the remainder is at this price
            self.positions[symbol] = Position(symbol, asset.id, new_qty, price)
        elif abs(new_qty) > abs(old_qty):
            avg = (abs(old_qty) * pos.avg_entry_price + qty * price) / abs(new_qty)
            pos.avg_entry_price = avg.quantize(NINE_DP)
            pos.qty = new_qty
        else:
            pos.qty = new_qty
        return new_qty

    # ------------------------------------------------------------------ orders

    def resolve(self, order_id_or_client_id: str) -> Order:
        key = str(order_id_or_client_id)
        order = self.orders.get(key) or self.orders_by_cid.get(key)
        if order is None:
            raise KeyError(f"no order with id or client_order_id {key!r}")
        return order

    def _emit(self, event: str, order: Order, **extra: Any) -> None:
        update: dict[str, Any] = {
            "event": event,
            "execution_id": str(uuid.uuid4()),
            "order": self.order_json(order),
            "timestamp": iso(extra.pop("timestamp", None) or self.now()),
        }
        update.update({k: v for k, v in extra.items() if v is not None})
        self.on_update(update)

    def _position_intent(self, symbol: str, side: str) -> str:
        pos = self.positions.get(symbol)
        qty = pos.qty if pos else ZERO
        if side == "buy":
            return "buy_to_close" if qty < 0 else "buy_to_open"
        return "sell_to_close" if qty > 0 else "sell_to_open"

    def validate_and_create(self, body: Any, *, external: bool = False) -> Order:
        """Validate a POST /v2/orders body like Alpaca and create the order."""
        if not isinstance(body, dict):
            raise ApiError(400, 40010000, "request body format is invalid")
        cid = body.get("client_order_id")
        if cid is not None and not isinstance(cid, str):
            raise ApiError(422, 40010001, "client_order_id must be a string")
        if cid is not None and len(cid) > 48:
            raise ApiError(422, 40010001, "client_order_id must be no more than 48 characters")
        if cid is not None and cid in self.taken_client_ids:
            raise ApiError(422, 40010001, "client_order_id must be unique")
        symbol = body.get("symbol")
        if not symbol:
            raise ApiError(422, 40010001, "symbol is required")
        symbol = str(symbol).upper()
        side = body.get("side")
        if side not in ("buy", "sell"):
            raise ApiError(422, 40010001, "side is required and must be buy or sell")
        otype = body.get("type") or body.get("order_type")
        if otype not in advanced.ORDER_TYPES:
            raise ApiError(422, 40010001, f"invalid order type {otype!r}")
        tif = body.get("time_in_force")
        if tif not in ("day", "gtc", "opg", "cls", "ioc", "fok"):
            raise ApiError(422, 40010001, "invalid time_in_force")
        order_class = body.get("order_class") or "simple"
        if order_class not in advanced.ORDER_CLASSES:
            raise ApiError(422, 40010001, f"invalid order_class {order_class!r}")
        try:
            qty = opt_dec(body.get("qty"))
            notional = opt_dec(body.get("notional"))
            limit_price = opt_dec(body.get("limit_price"))
            stop_price = opt_dec(body.get("stop_price"))
            trail_price = opt_dec(body.get("trail_price"))
            trail_percent = opt_dec(body.get("trail_percent"))
        except ValueError as exc:
            raise ApiError(422, 40010001, str(exc)) from None
        tp_limit, sl_stop, sl_limit = advanced.leg_prices(body, dec)
        advanced.check_trail(otype, trail_price, trail_percent)
        if (qty is None) == (notional is None):
            raise ApiError(422, 40010001, "qty or notional is required (exactly one)")
        if qty is not None and qty <= 0:
            raise ApiError(422, 40010001, "qty must be > 0")
        if notional is not None and notional <= 0:
            raise ApiError(422, 40010001, "notional must be > 0")
        asset = self.assets.get(symbol)
        if asset is None:
            raise ApiError(422, 42210000, f'asset "{symbol}" not found')
        if not asset.tradable or asset.status != "active":
            raise ApiError(422, 42210000, f"asset {symbol} is not tradable")
        if self.trading_blocked or self.account_blocked or self.status != "ACTIVE":
            raise ApiError(403, 40310000, "account is not allowed to trade")
        if otype in ("limit", "stop_limit") and limit_price is None:
            raise ApiError(422, 42210000, "limit orders require a limit_price")
        if otype in ("stop", "stop_limit") and stop_price is None:
            raise ApiError(422, 42210000, "stop orders require a stop_price")
        if otype == "limit" and stop_price is not None:
            raise ApiError(422, 42210000, "limit orders must not have stop_price")
        fractional = notional is not None or (qty is not None and qty != qty.to_integral_value())
        if fractional:
            if not asset.fractionable:
                raise ApiError(422, 42210000, f"requested asset {symbol} is not fractionable")
            advanced.check_fractional(otype, tif, order_class)
            if notional is not None and otype not in ("market", "stop", "stop_limit"):
                raise ApiError(422, 42210000, "notional orders must be market, stop or "
                                              "stop_limit orders")
        advanced.check_increment("limit_price", limit_price)
        advanced.check_increment("stop_price", stop_price)
        if order_class == "simple" and otype in ("stop", "stop_limit"):
            advanced.check_stop_side(side, stop_price, self.price_of(symbol))
        base = limit_price if otype == "limit" else self.price_of(symbol)
        advanced.check_class(order_class, otype, tif, side, base, tp_limit, sl_stop, sl_limit)
        if order_class == "oco":
            # the OCO order is the take-profit limit itself; its stop is checked like a stop
            limit_price = tp_limit if limit_price is None else limit_price
            advanced.check_stop_side(side, sl_stop, self.price_of(symbol))
        if qty is not None and qty != floor9(qty):
            raise ApiError(422, 40010001, "qty must have at most 9 decimal places")

        ref_price = limit_price if otype in ("limit", "stop_limit") else self.price_of(symbol)
        bp = self.buying_power()
        pos = self.positions.get(symbol)
        pos_qty = pos.qty if pos else ZERO
        if side == "buy":
            cost = notional
            if cost is None and qty is not None and ref_price is not None:
                cost = qty * ref_price
            if cost is not None and cost > bp:
                raise ApiError(
                    403,
                    40310000,
                    "insufficient buying power",
                    buying_power=fmt(bp),
                    cost_basis=fmt(cost),
                )
        else:
            available = pos_qty - self._held_for_sells(symbol) if pos_qty > 0 else ZERO
            if notional is not None:
                if ref_price is not None and pos_qty <= 0:
                    raise ApiError(403, 40310000, "insufficient qty available for order")
            elif pos_qty > 0 and qty > available:  # type: ignore[operator]
                raise ApiError(
                    403,
                    40310000,
                    f"insufficient qty available for order (requested: {fmt(qty)}, available: {fmt(available)})",
                    symbol=symbol,
                    available=fmt(available),
                    existing_qty=fmt(pos_qty),
                    held_for_orders=fmt(pos_qty - available),
                )
            elif pos_qty <= 0:
                if not (self.shorting_enabled and asset.shortable):
                    raise ApiError(
                        403,
                        40310000,
                        f"insufficient qty available for order (requested: {fmt(qty)}, available: 0)",
                        symbol=symbol,
                        available="0",
                        existing_qty=fmt(pos_qty),
                        held_for_orders="0",
                    )
                if fractional:
                    raise ApiError(403, 40310000, "fractional orders cannot be sold short")
                if ref_price is not None and qty * ref_price > bp:  # type: ignore[operator]
                    raise ApiError(
                        403,
                        40310000,
                        "insufficient buying power",
                        buying_power=fmt(bp),
                        cost_basis=fmt(qty * ref_price),
                    )

        now = self.now()
        self._order_seq += 1
        order = Order(
            seq=self._order_seq,
            id=str(uuid.uuid4()),
            client_order_id=cid or new_client_order_id(),
            symbol=symbol,
            asset_id=asset.id,
            side=side,
            type=otype,
            time_in_force=tif,
            qty=qty,
            notional=notional,
            limit_price=limit_price,
            stop_price=stop_price,
            extended_hours=bool(body.get("extended_hours") or False),
            status="pending_new",
            created_at=now,
            updated_at=now,
            submitted_at=now,
            position_intent=body.get("position_intent") or self._position_intent(symbol, side),
            external=external,
            expires_at=(
                now.replace(hour=20, minute=0, second=0, microsecond=0) if tif == "day" else None
            ),
            order_class=order_class,
            trail_price=trail_price,
            trail_percent=trail_percent,
        )
        if otype == "trailing_stop":
            px = self.price_of(symbol)
            if px is not None:
                order.hwm = px
                order.stop_price = advanced.trail_stop(side, px, trail_price, trail_percent)
        self._register(order)
        if order_class in ("bracket", "oto"):
            if tp_limit is not None:
                self._add_leg(order, "take_profit", "limit", tp_limit, None)
            if sl_stop is not None:
                self._add_leg(order, "stop_loss", "stop" if sl_limit is None else "stop_limit",
                              sl_limit, sl_stop)
        elif order_class == "oco":
            order.leg_role = "take_profit"
            self._add_leg(order, "stop_loss", "stop" if sl_limit is None else "stop_limit",
                          sl_limit, sl_stop, held=False)
        return order

    def _register(self, order: Order) -> None:
        self.orders[order.id] = order
        self.orders_by_cid[order.client_order_id] = order
        self.taken_client_ids.add(order.client_order_id)

    def _add_leg(self, parent: Order, role: str, otype: str, limit_price: Decimal | None,
                 stop_price: Decimal | None, *, held: bool = True) -> Order:
        """A leg: the opposite side, the parent's quantity, its own id and a client id
        Alpaca makes up (legs cannot be given one)."""
        self._order_seq += 1
        leg = Order(
            seq=self._order_seq, id=str(uuid.uuid4()), client_order_id=new_client_order_id(),
            symbol=parent.symbol, asset_id=parent.asset_id,
            side="sell" if (parent.side == "buy") != (parent.order_class == "oco") else "buy",
            type=otype, time_in_force=parent.time_in_force, qty=parent.qty, notional=None,
            limit_price=limit_price, stop_price=stop_price, extended_hours=False,
            status="held" if held else parent.status, created_at=parent.created_at,
            updated_at=parent.created_at, submitted_at=parent.submitted_at,
            position_intent="sell_to_close" if parent.side == "buy" else "buy_to_close",
            order_class=parent.order_class, external=parent.external,
            expires_at=parent.expires_at, parent_id=parent.id, leg_role=role,
        )
        if parent.order_class == "oco":
            leg.side = parent.side
            leg.position_intent = parent.position_intent
        parent.leg_ids.append(leg.id)
        self._register(leg)
        return leg

    # ------------------------------------------------------------------ legs

    def legs_of(self, order: Order) -> list[Order]:
        return [self.orders[i] for i in order.leg_ids if i in self.orders]

    def order_json(self, order: Order, *, nested: bool = True) -> dict[str, Any]:
        """An order as Alpaca shows it; a parent carries its legs when `nested`."""
        legs = [leg.to_json() for leg in self.legs_of(order)] if nested and order.leg_ids \
            else None
        return order.to_json(legs)

    def siblings(self, order: Order) -> list[Order]:
        """The other members of an order's one-cancels-other group: a bracket/OTO leg's
        sibling leg, or for an OCO the parent and its stop."""
        if order.parent_id is None:
            return self.legs_of(order) if order.order_class == "oco" else []
        parent = self.orders.get(order.parent_id)
        if parent is None:
            return []
        group = self.legs_of(parent)
        if parent.order_class == "oco":
            group.append(parent)
        return [o for o in group if o.id != order.id]

    def _leg_is_active(self, order: Order) -> bool:
        """A `held` bracket leg works once its parent filled (the stop-loss stays `held`
        until it triggers, like Alpaca shows it)."""
        if order.status != "held":
            return order.is_open and order.status not in ("pending_new", "pending_cancel")
        parent = self.orders.get(order.parent_id or "")
        return parent is not None and parent.status == "filled"

    def _activate_legs(self, parent: Order, qty: Decimal) -> None:
        """The parent filled (or ended with `qty` filled): its legs work for that quantity.
        The take-profit goes `new` (pushed); the stop-loss stays `held` until it triggers."""
        for leg in self.legs_of(parent):
            if leg.status != "held":
                continue
            leg.qty = qty
            leg.updated_at = self.now()
            if leg.leg_role == "take_profit":
                leg.status = "new"
                self._emit("new", leg)
            if leg.type == "trailing_stop" and leg.hwm is None:
                px = self.price_of(leg.symbol)
                if px is not None:
                    leg.hwm = px
                    leg.stop_price = advanced.trail_stop(leg.side, px, leg.trail_price,
                                                         leg.trail_percent)

    def _close_group(self, order: Order, why: str) -> None:
        """One member of an OCO group filled or was canceled: cancel the others."""
        for other in self.siblings(order):
            if other.is_open:
                self._terminate(other, "canceled", "canceled")

    def _parent_ended(self, parent: Order) -> None:
        """A parent closed without filling completely: held legs are canceled, or, when
        part of it filled, work for that part (assumed: Alpaca documents no rule for a
        partially filled parent; a stop-loss then shows `new`, since its parent never
        reaches `filled`)."""
        if parent.order_class == "oco":
            return
        if parent.filled_qty > 0:
            self._activate_legs(parent, parent.filled_qty)
            for leg in self.legs_of(parent):
                if leg.status == "held":
                    leg.status = "new"
                    self._emit("new", leg)
            return
        for leg in self.legs_of(parent):
            if leg.is_open:
                self._terminate(leg, "canceled", "canceled")

    def after_create(self, order: Order, *, notify: bool = True) -> None:
        """Broker-side progression right after creation: accept, maybe auto-fill."""
        if self.auto_accept and order.status == "pending_new":
            self.accept(order, notify=notify)
        if self.auto_fill and order.is_open and order.status != "pending_new":
            px = self.price_of(order.symbol)
            if px is None:
                return
            marketable = order.type == "market" or (
                order.type == "limit"
                and order.limit_price is not None
                and (
                    (order.side == "buy" and order.limit_price >= px)
                    or (order.side == "sell" and order.limit_price <= px)
                )
            )
            if marketable:
                self.fill(order, None, px)

    def accept(self, order: Order, *, notify: bool = True) -> None:
        if order.status != "pending_new":
            raise ValueError(f"order {order.id} is {order.status}, not pending_new")
        order.status = "new"
        order.updated_at = self.now()
        if notify:
            self._emit("new", order)
        if order.order_class == "oco":
            for leg in self.legs_of(order):
                if leg.status == "pending_new":
                    leg.status = "new"
                    leg.updated_at = order.updated_at
                    if notify:
                        self._emit("new", leg)

    def fill(self, order: Order, qty: Any | None, price: Any | None) -> dict[str, Any]:
        if order.status in CLOSED_STATUSES:
            raise ValueError(f"order {order.id} is {order.status}; cannot fill")
        px = dec(price) if price is not None else self.price_of(order.symbol)
        if px is None or px <= 0:
            raise ValueError(f"no price for {order.symbol}: pass price= or set_price()")
        remaining = order.remaining_qty(px)
        fill_qty = remaining if qty is None else dec(qty)
        if fill_qty <= 0:
            raise ValueError("fill qty must be > 0")
        if order.qty is not None and fill_qty > remaining:
            raise ValueError(f"fill qty {fill_qty} exceeds remaining {remaining}")
        now = self.now()
        order.filled_qty += fill_qty
        order.filled_notional += fill_qty * px
        if order.qty is not None:
            done = order.filled_qty >= order.qty
        else:
            done = qty is None or (order.notional - order.filled_notional) <= Decimal("0.005")  # type: ignore[operator]
        if order.status == "pending_new":
            order.status = "new"
        if done:
            order.status = "filled"
            order.filled_at = now
        elif order.status != "pending_cancel":
            order.status = "partially_filled"
        order.updated_at = now
        position_qty = self._apply_execution(order.symbol, order.side, fill_qty, px)
        self.prices.setdefault(order.symbol, px)
        execution_id = str(uuid.uuid4())
        leaves = ZERO if done else order.remaining_qty(px)
        activity = Activity(
            id=now.strftime("%Y%m%d%H%M%S")
            + f"{now.microsecond // 1000:03d}::"
            + str(uuid.uuid4()),
            transaction_time=now,
            type="fill" if done else "partial_fill",
            price=px,
            qty=fill_qty,
            side=order.side,
            symbol=order.symbol,
            leaves_qty=leaves,
            order_id=order.id,
            cum_qty=order.filled_qty,
            order_status=order.status,
            execution_id=execution_id,
            client_order_id=order.client_order_id,
        )
        self.activities.append(activity)
        if done and order.id in self.pending_cancel_ids:
            self.pending_cancel_ids.remove(order.id)
        update = {
            "event": "fill" if done else "partial_fill",
            "execution_id": execution_id,
            "order": self.order_json(order),
            "timestamp": iso(now),
            "price": fmt(px),
            "qty": fmt(fill_qty),
            "position_qty": fmt(position_qty),
        }
        self.on_update(update)
        if done and order.leg_ids and order.order_class in ("bracket", "oto"):
            self._activate_legs(order, order.filled_qty)
        if done and (order.parent_id is not None or order.order_class == "oco"):
            self._close_group(order, "filled")
        return {
            "execution_id": execution_id,
            "order_id": order.id,
            "client_order_id": order.client_order_id,
            "qty": fmt(fill_qty),
            "price": fmt(px),
            "status": order.status,
            "position_qty": fmt(position_qty),
        }

    def _terminate(self, order: Order, status: str, event: str) -> None:
        now = self.now()
        order.status = status
        order.updated_at = now
        if status == "canceled":
            order.canceled_at = now
        elif status == "expired":
            order.expired_at = now
        elif status == "rejected":
            order.failed_at = now
        if order.id in self.pending_cancel_ids:
            self.pending_cancel_ids.remove(order.id)
        self._emit(event, order)
        if order.leg_ids and order.order_class in ("bracket", "oto"):
            self._parent_ended(order)
        elif order.parent_id is not None or order.order_class == "oco":
            self._close_group(order, status)

    def broker_cancel(self, order: Order) -> None:
        if order.status in CLOSED_STATUSES:
            raise ValueError(f"order {order.id} is already {order.status}")
        self._terminate(order, "canceled", "canceled")

    def expire(self, order: Order) -> None:
        if order.status in CLOSED_STATUSES:
            raise ValueError(f"order {order.id} is already {order.status}")
        self._terminate(order, "expired", "expired")

    def reject(self, order: Order) -> None:
        if order.status in CLOSED_STATUSES:
            raise ValueError(f"order {order.id} is already {order.status}")
        self._terminate(order, "rejected", "rejected")

    def request_cancel(self, order: Order) -> None:
        """DELETE /v2/orders/{id} semantics (raises ApiError for the HTTP answer)."""
        if order.status in CLOSED_STATUSES or order.status == "pending_cancel":
            raise ApiError(422, 42210000, f'order is already in "{order.status}" state')
        if self.cancel_rejects:
            mode = self.cancel_rejects.pop(0)
            if mode == "422":
                raise ApiError(422, 42210000, "order is not cancelable")
            # "ignore": accepted (204) but the order stays open; Alpaca then reports
            # the failed cancel on the stream as order_cancel_rejected
            self._emit("order_cancel_rejected", order)
            return
        if self.slow_cancel:
            order.status_before_cancel = order.status
            order.status = "pending_cancel"
            order.updated_at = self.now()
            self.pending_cancel_ids.append(order.id)
            self._emit("pending_cancel", order)
            if self.slow_cancel_delay is not None:
                oid = order.id
                self.schedule(self.slow_cancel_delay, lambda: self._complete_cancel(oid))
            return
        self._terminate(order, "canceled", "canceled")

    def _complete_cancel(self, order_id: str) -> bool:
        order = self.orders.get(order_id)
        if order is None or order.status != "pending_cancel":
            if order_id in self.pending_cancel_ids:
                self.pending_cancel_ids.remove(order_id)
            return False
        self._terminate(order, "canceled", "canceled")
        return True

    def complete_pending_cancels(self) -> int:
        done = 0
        for oid in list(self.pending_cancel_ids):
            if self._complete_cancel(oid):
                done += 1
        return done

    def replace(self, order: Order, body: dict[str, Any]) -> Order:
        """PATCH /v2/orders/{id}: Alpaca replaces by creating a new order; the old one goes
        `replaced`. A leg's replacement takes its place in the parent's legs. `trail` is
        the new trail_price or trail_percent, whichever the order has."""
        if order.status not in CANCELABLE_STATUSES:
            raise ApiError(422, 42210000, f'order is already in "{order.status}" state')
        cid = body.get("client_order_id")
        if cid is not None and len(cid) > 48:
            raise ApiError(422, 40010001, "client_order_id must be no more than 48 characters")
        if cid is not None and cid in self.taken_client_ids:
            raise ApiError(422, 40010001, "client_order_id must be unique")
        try:
            new_qty = opt_dec(body.get("qty"))
            new_limit = opt_dec(body.get("limit_price"))
            new_stop = opt_dec(body.get("stop_price"))
            new_trail = opt_dec(body.get("trail"))
        except ValueError as exc:
            raise ApiError(422, 40010001, str(exc)) from None
        if new_stop is not None and order.type in ("market", "limit"):
            raise ApiError(422, 42210000, f"{order.type} orders must not have stop_price")
        if new_limit is not None and order.type in ("market", "stop", "trailing_stop"):
            raise ApiError(422, 42210000, f"{order.type} orders must not have limit_price")
        if new_trail is not None:
            if order.type != "trailing_stop":
                raise ApiError(422, 42210000, "trail is only for trailing_stop orders")
            if new_trail <= 0:
                raise ApiError(422, 40010001, "trail must be > 0")
        if new_qty is not None and new_qty <= 0:
            raise ApiError(422, 40010001, "qty must be > 0")
        advanced.check_increment("limit_price", new_limit)
        advanced.check_increment("stop_price", new_stop)
        if new_stop is not None and order.status != "held":
            advanced.check_stop_side(order.side, new_stop, self.price_of(order.symbol))
        now = self.now()
        self._order_seq += 1
        if new_qty is None and order.qty is not None:
            new_qty = order.qty - order.filled_qty
        trail_price, trail_percent = order.trail_price, order.trail_percent
        if new_trail is not None:
            if trail_price is not None:
                trail_price = new_trail
            else:
                trail_percent = new_trail
        new = Order(
            seq=self._order_seq,
            id=str(uuid.uuid4()),
            client_order_id=cid or new_client_order_id(),
            symbol=order.symbol,
            asset_id=order.asset_id,
            side=order.side,
            type=order.type,
            time_in_force=body.get("time_in_force") or order.time_in_force,
            qty=new_qty,
            notional=order.notional if new_qty is None else None,
            limit_price=new_limit or order.limit_price,
            stop_price=new_stop or order.stop_price,
            extended_hours=order.extended_hours,
            status="held" if order.status == "held" else "new",
            created_at=now,
            updated_at=now,
            submitted_at=now,
            position_intent=order.position_intent,
            external=order.external,
            replaces=order.id,
            expires_at=order.expires_at,
            order_class=order.order_class,
            trail_price=trail_price,
            trail_percent=trail_percent,
            hwm=order.hwm,
            parent_id=order.parent_id,
            leg_role=order.leg_role,
            leg_ids=list(order.leg_ids),
        )
        if new.type == "trailing_stop" and new.hwm is not None:
            new.stop_price = advanced.trail_stop(new.side, new.hwm, trail_price, trail_percent)
        order.status = "replaced"
        order.replaced_at = now
        order.replaced_by = new.id
        order.updated_at = now
        self._register(new)
        parent = self.orders.get(order.parent_id or "")
        if parent is not None:
            parent.leg_ids = [new.id if i == order.id else i for i in parent.leg_ids]
        for leg in self.legs_of(new):
            leg.parent_id = new.id
        self._emit("replaced", order)
        if new.status != "held":
            self._emit("new", new)
        return new

    # ------------------------------------------------------------------ prices and triggers

    def tick(self, symbol: str, price: Any) -> list[str]:
        """The market trades at `price`: trailing stops move their high-water mark and stop,
        working stops trigger (a stop fills at this price, which is the gap fill when the
        market jumped through it; a stop-limit becomes a limit), and working limits that
        are marketable fill at this price. Market orders are left to `fill()`/auto_fill.
        Returns the ids of the orders that filled."""
        symbol = symbol.upper()
        px = dec(price)
        self.set_price(symbol, px)
        filled: list[str] = []
        for order in sorted(self.orders.values(), key=lambda o: o.seq):
            if order.symbol != symbol or not order.is_open or not self._leg_is_active(order):
                continue
            if order.type == "trailing_stop":
                self._ratchet(order, px)
            if self._should_fill(order, px):
                self.fill(order, None, px)
                filled.append(order.id)
        return filled

    def _ratchet(self, order: Order, px: Decimal) -> None:
        better = order.hwm is None or (px > order.hwm if order.side == "sell" else px < order.hwm)
        if better:
            order.hwm = px
            order.stop_price = advanced.trail_stop(order.side, px, order.trail_price,
                                                   order.trail_percent)
            order.updated_at = self.now()

    def _should_fill(self, order: Order, px: Decimal) -> bool:
        if order.status in CLOSED_STATUSES:
            return False
        sell = order.side == "sell"
        if order.type == "market":
            return False  # fills only by fill() or auto_fill: tests decide when
        if order.type in ("stop", "trailing_stop", "stop_limit") and not order.triggered:
            stop = order.stop_price
            if stop is None or not (px <= stop if sell else px >= stop):
                return False
            if order.type != "stop_limit":
                return True
            order.triggered = True
        if order.type in ("limit", "stop_limit"):
            limit = order.limit_price
            return limit is not None and (px >= limit if sell else px <= limit)
        return False

    # ------------------------------------------------------------------ queries

    def list_orders(self, params: dict[str, str]) -> list[Order]:
        status = (params.get("status") or "open").lower()
        if status not in ("open", "closed", "all"):
            raise ApiError(422, 40010001, f"invalid status {status!r}")
        try:
            limit = int(params.get("limit") or 50)
        except ValueError:
            raise ApiError(422, 40010001, "invalid limit") from None
        limit = max(1, min(limit, 500))
        direction = (params.get("direction") or "desc").lower()
        after = parse_dt(params["after"]) if params.get("after") else None
        until = parse_dt(params["until"]) if params.get("until") else None
        side = params.get("side")
        symbols = (
            {s.strip().upper() for s in params["symbols"].split(",")}
            if params.get("symbols")
            else None
        )
        nested = (params.get("nested") or "").lower() == "true"
        out = []
        for order in self.orders.values():
            if nested and order.parent_id is not None:
                continue  # shown inside its parent's `legs`
            # nested, a parent is rolled up with its legs: open while any of them is
            # (assumed: Alpaca documents "roll up multi-leg orders under legs", not the rule)
            is_open = order.is_open or (nested and any(x.is_open for x in self.legs_of(order)))
            if status == "open" and not is_open:
                continue
            if status == "closed" and is_open:
                continue
            sub = order.submitted_at or order.created_at
            if after is not None and not sub > after:
                continue
            if until is not None and not sub < until:
                continue
            if side and order.side != side:
                continue
            if symbols is not None and order.symbol not in symbols:
                continue
            out.append(order)
        out.sort(
            key=lambda o: (o.submitted_at or o.created_at, o.seq), reverse=(direction != "asc")
        )
        return out[:limit]

    def list_activities(
        self, params: dict[str, str], activity_types: set[str] | None
    ) -> list[dict[str, Any]]:
        if activity_types is not None and not activity_types <= {"FILL"}:
            # the fake only produces FILL activities; other known types are simply empty
            activity_types = activity_types & {"FILL"}
            if not activity_types:
                return []
        direction = (params.get("direction") or "desc").lower()
        acts = sorted(self.activities, key=lambda a: (a.transaction_time, a.id))
        if params.get("date"):
            day = parse_dt(params["date"]).date()
            acts = [a for a in acts if a.transaction_time.date() == day]
        if params.get("after"):
            after = parse_dt(params["after"])
            acts = [a for a in acts if a.transaction_time > after]
        if params.get("until"):
            until = parse_dt(params["until"])
            acts = [a for a in acts if a.transaction_time < until]
        if params.get("order_id"):
            acts = [a for a in acts if a.order_id == params["order_id"]]
        if direction == "desc":
            acts.reverse()
        token = params.get("page_token")
        if token:
            ids = [a.id for a in acts]
            if token in ids:
                acts = acts[ids.index(token) + 1 :]
            else:
                acts = []
        size_param = params.get("page_size")
        if size_param:
            size = max(1, min(int(size_param), 100 if not params.get("date") else 10**9))
        else:
            size = 100 if not params.get("date") else 10**9
        return [a.to_json(self.account_id) for a in acts[:size]]
