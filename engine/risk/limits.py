"""Risk limits, validated so that a negative or nonsensical limit refuses to start.

Money limits are dollars (Decimal). Loss limits may be given in dollars, as a fraction of
equity, or both (the tighter one wins). The defaults suit a small cash account.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

D = Decimal


class RiskLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_order_notional: Decimal = Field(D(5_000), gt=0, description="largest single order, $")
    max_symbol_exposure: Decimal = Field(D(10_000), gt=0, description="largest position+orders in one symbol, $")
    max_gross_exposure: Decimal = Field(D(25_000), gt=0, description="sum over symbols, $")
    max_open_positions: int = Field(5, ge=1)
    daily_loss_limit: Decimal | None = Field(None, gt=0, description="$ per New York trading day")
    daily_loss_limit_pct: Decimal | None = Field(D("0.03"), gt=0, le=1)
    weekly_loss_limit: Decimal | None = Field(None, gt=0, description="$ per ISO week")
    weekly_loss_limit_pct: Decimal | None = Field(D("0.06"), gt=0, le=1)
    default_stop_pct: Decimal = Field(
        D("0.02"), gt=0, le=1,
        description="loss assumed per order (fraction of notional) when the intent has no stop")
    intraday_leverage: Decimal = Field(D(1), gt=0, le=4,
                                       description="exposure may not exceed equity x this")
    stale_after_bars: Decimal = Field(D(2), gt=0,
                                      description="a symbol is stale after this many bar intervals")
    max_orders_per_minute: int = Field(30, ge=1)
    max_limit_away_pct: Decimal = Field(D("0.10"), gt=0, le=1,
                                        description="limit price at most this far from last")
    market_buffer_bps: Decimal = Field(D(50), ge=0, le=1000,
                                       description="market buys are priced this much above last")
    min_notional: Decimal = Field(D(1), ge=D(1), description="Alpaca's $1 fractional minimum")
    allow_short: bool = False
    deny_symbols: frozenset[str] = frozenset()
    require_asset_info: bool = True
    day_trade_mode: Literal["off", "limit", "auto"] = "auto"
    day_trade_limit: int = Field(3, ge=0, description="day trades per 5 business days (mode=limit)")
    pdt_equity_threshold: Decimal = Field(D(25_000), gt=0)
    # Protection (issue 11).
    require_protection: bool | None = Field(
        None, description="an order that opens or adds to a position must carry a stop-loss "
                          "(None: on for broker=alpaca, off for the simulated broker)")
    stop_gap_allowance_pct: Decimal = Field(
        D("0.005"), ge=0, le=1,
        description="a stop may fill this fraction of the price beyond its level (gaps)")
    engine_side_protection: bool = Field(
        False, description="where the broker can not hold a stop (fractional shares), accept "
                           "the order and record its protection as engine-side only")

    @field_validator("deny_symbols", mode="before")
    @classmethod
    def _symbols(cls, v: object) -> object:
        if isinstance(v, str):
            return frozenset(s.strip().upper() for s in v.split(",") if s.strip())
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RiskLimits:
        if self.max_order_notional > self.max_symbol_exposure:
            raise ValueError(
                f"max_order_notional ({self.max_order_notional}) is larger than "
                f"max_symbol_exposure ({self.max_symbol_exposure}); no order could use it")
        if self.max_symbol_exposure > self.max_gross_exposure:
            raise ValueError(
                f"max_symbol_exposure ({self.max_symbol_exposure}) is larger than "
                f"max_gross_exposure ({self.max_gross_exposure})")
        if self.daily_loss_limit is None and self.daily_loss_limit_pct is None:
            raise ValueError("set daily_loss_limit ($) or daily_loss_limit_pct (of equity)")
        if self.weekly_loss_limit is None and self.weekly_loss_limit_pct is None:
            raise ValueError("set weekly_loss_limit ($) or weekly_loss_limit_pct (of equity)")
        return self

    def daily_limit(self, equity: Decimal) -> Decimal:
        return _tighter(self.daily_loss_limit, self.daily_loss_limit_pct, equity)

    def weekly_limit(self, equity: Decimal) -> Decimal:
        return _tighter(self.weekly_loss_limit, self.weekly_loss_limit_pct, equity)


def _tighter(usd: Decimal | None, pct: Decimal | None, equity: Decimal) -> Decimal:
    """The smaller of the dollar limit and pct of equity (the dollar one when equal), of
    those set. Written out rather than as min() over a list: the loss-limit watch asks on
    every bar of a day in loss."""
    share = pct * equity if pct is not None else None
    if usd is None:
        if share is None:
            raise ValueError("no loss limit set (validation requires one)")
        return share
    return share if share is not None and share < usd else usd
