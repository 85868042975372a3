"""The stable set of reasons the risk gate gives. Logs, tests and people match on these codes;
never rename one (add new ones instead). Each rejection carries the numbers behind it in
`RejectReason.values`.

| code | refused because |
|---|---|
| INVALID_INTENT | malformed: bad side/type/time in force, qty or notional non-positive or NaN, both or neither set, naive timestamp, limit order without a sane limit price |
| RECOVERING | startup reconciliation has not finished |
| TRADING_HALTED | trading state is halted |
| KILL_SWITCH_ENGAGED | the kill switch is engaged (until a person releases it) |
| REDUCE_ONLY_MODE | trading state is "reducing" and the order would not shrink a position |
| REDUCE_ONLY_WOULD_GROW | the intent is reduce-only and would open or grow a position |
| NO_MARKET_DATA | no valid bar for the symbol yet |
| STALE_DATA | the last valid bar is older than the allowed number of bar intervals |
| SYMBOL_UNKNOWN | no asset information for the symbol |
| SYMBOL_NOT_TRADABLE | the broker says the symbol is not tradable / not active |
| SYMBOL_DENIED | the symbol is on the configured deny list |
| NOT_FRACTIONABLE | fractional quantity or dollar amount on a symbol that is not fractionable |
| FRACTIONAL_REQUIRES_DAY | fractional orders must be time-in-force day |
| SHORTING_DISABLED | the order would open a short and shorting is off (or not shortable) |
| BELOW_MIN_NOTIONAL | below Alpaca's $1 minimum for fractional/notional orders |
| BELOW_ONE_SHARE | a dollar amount too small for one whole share of a non-fractionable symbol |
| ORDER_NOTIONAL_LIMIT | the order's notional exceeds the per-order limit |
| SYMBOL_EXPOSURE_LIMIT | position plus open orders in the symbol would exceed the limit |
| GROSS_EXPOSURE_LIMIT | total exposure would exceed the gross limit |
| NOTIONAL_EXCEEDS_BUYING_POWER | the order costs more than the buying power left after open orders |
| NOTIONAL_EXCEEDS_CASH | the order costs more than the cash left after open orders |
| INTRADAY_MARGIN | exposure after the order would exceed equity x intraday leverage |
| MAX_OPEN_POSITIONS | the order would open one position more than allowed |
| DAILY_LOSS_LIMIT | today's realized loss plus the risk of open positions and orders (and this one) would exceed the daily limit |
| WEEKLY_LOSS_LIMIT | the same for the ISO week |
| DAY_TRADE_LIMIT | the order would complete a day trade beyond the allowed count in 5 business days |
| POTENTIAL_WASH_TRADE | an opposite-side order in the same symbol is still open (Alpaca refuses these) |
| LIMIT_PRICE_AWAY | the limit price is too far from the last price (Alpaca refuses these) |
| ORDER_RATE_LIMIT | too many approvals in the last minute |
| NO_ACCOUNT_STATE | the account's equity/cash is not known yet |
| STOP_WRONG_SIDE | a stop (an order's trigger or a stop-loss leg) is not at least $0.01 on the losing side of the market / entry: a sell stop below, a buy stop above |
| TAKE_PROFIT_WRONG_SIDE | a take-profit is not on the profitable side of the entry (above it for a long, below for a short) |
| TAKE_PROFIT_TOO_CLOSE | a take-profit less than $0.01 from the base price (Alpaca refuses these) |
| TRAIL_NOT_POSITIVE | a trailing stop's trail_price / trail_percent is zero or negative |
| ADVANCED_ORDER_WHOLE_SHARES | a bracket / OCO / OTO or a trailing stop with a fractional or notional quantity (Alpaca takes whole shares only) |
| ADVANCED_ORDER_TIME_IN_FORCE | a bracket / OCO / OTO or a stop-type order with a time in force other than day or gtc |
| SUB_PENNY_PRICE | a price not in Alpaca's increments: $0.01 at or above $1, $0.0001 below |
| PROTECTION_REQUIRED | `risk.require_protection` is on and the order opens or adds to a position without a stop-loss |
| PROTECTION_EXCEEDS_POSITION | a closing stop would cover more than the position its open stops leave unprotected (two stops triggering would open the other way) |
| REPLACE_TARGET_INVALID | a stop move names no open protective stop of this symbol, or changes what the order is (type, trail unit) |
| FRACTIONAL_PROTECTION_UNAVAILABLE | the order opens a fractional position whose stop the broker can not hold with it (no bracket for fractions) and `risk.engine_side_protection` is off |
"""

from __future__ import annotations

from enum import StrEnum

from events.catalogue import RejectReason


class Reason(StrEnum):
    INVALID_INTENT = "INVALID_INTENT"
    RECOVERING = "RECOVERING"
    TRADING_HALTED = "TRADING_HALTED"
    KILL_SWITCH_ENGAGED = "KILL_SWITCH_ENGAGED"
    REDUCE_ONLY_MODE = "REDUCE_ONLY_MODE"
    REDUCE_ONLY_WOULD_GROW = "REDUCE_ONLY_WOULD_GROW"
    NO_MARKET_DATA = "NO_MARKET_DATA"
    STALE_DATA = "STALE_DATA"
    SYMBOL_UNKNOWN = "SYMBOL_UNKNOWN"
    SYMBOL_NOT_TRADABLE = "SYMBOL_NOT_TRADABLE"
    SYMBOL_DENIED = "SYMBOL_DENIED"
    NOT_FRACTIONABLE = "NOT_FRACTIONABLE"
    FRACTIONAL_REQUIRES_DAY = "FRACTIONAL_REQUIRES_DAY"
    SHORTING_DISABLED = "SHORTING_DISABLED"
    BELOW_MIN_NOTIONAL = "BELOW_MIN_NOTIONAL"
    BELOW_ONE_SHARE = "BELOW_ONE_SHARE"
    ORDER_NOTIONAL_LIMIT = "ORDER_NOTIONAL_LIMIT"
    SYMBOL_EXPOSURE_LIMIT = "SYMBOL_EXPOSURE_LIMIT"
    GROSS_EXPOSURE_LIMIT = "GROSS_EXPOSURE_LIMIT"
    NOTIONAL_EXCEEDS_BUYING_POWER = "NOTIONAL_EXCEEDS_BUYING_POWER"
    NOTIONAL_EXCEEDS_CASH = "NOTIONAL_EXCEEDS_CASH"
    INTRADAY_MARGIN = "INTRADAY_MARGIN"
    MAX_OPEN_POSITIONS = "MAX_OPEN_POSITIONS"
    DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
    WEEKLY_LOSS_LIMIT = "WEEKLY_LOSS_LIMIT"
    DAY_TRADE_LIMIT = "DAY_TRADE_LIMIT"
    POTENTIAL_WASH_TRADE = "POTENTIAL_WASH_TRADE"
    LIMIT_PRICE_AWAY = "LIMIT_PRICE_AWAY"
    ORDER_RATE_LIMIT = "ORDER_RATE_LIMIT"
    NO_ACCOUNT_STATE = "NO_ACCOUNT_STATE"
    STOP_WRONG_SIDE = "STOP_WRONG_SIDE"
    TAKE_PROFIT_WRONG_SIDE = "TAKE_PROFIT_WRONG_SIDE"
    TAKE_PROFIT_TOO_CLOSE = "TAKE_PROFIT_TOO_CLOSE"
    TRAIL_NOT_POSITIVE = "TRAIL_NOT_POSITIVE"
    ADVANCED_ORDER_WHOLE_SHARES = "ADVANCED_ORDER_WHOLE_SHARES"
    ADVANCED_ORDER_TIME_IN_FORCE = "ADVANCED_ORDER_TIME_IN_FORCE"
    SUB_PENNY_PRICE = "SUB_PENNY_PRICE"
    PROTECTION_REQUIRED = "PROTECTION_REQUIRED"
    FRACTIONAL_PROTECTION_UNAVAILABLE = "FRACTIONAL_PROTECTION_UNAVAILABLE"
    REPLACE_TARGET_INVALID = "REPLACE_TARGET_INVALID"
    PROTECTION_EXCEEDS_POSITION = "PROTECTION_EXCEEDS_POSITION"


def reason(code: Reason, message: str, **values: object) -> RejectReason:
    """A reason with its numbers as strings (the log keeps them exactly as shown)."""
    return RejectReason(code=code.value, message=message,
                        values={k: str(v) for k, v in values.items()})
