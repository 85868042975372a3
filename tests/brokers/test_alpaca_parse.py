"""Alpaca JSON -> value types: the edge cases the fake does not produce."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from engine.brokers.alpaca_parse import (
    AlpacaParseError,
    dec,
    format_dec,
    format_ts,
    parse_account,
    parse_asset,
    parse_error_body,
    parse_fill_activity,
    parse_order,
    parse_position,
    parse_trade_update,
    parse_ts,
)
from engine.brokers.alpaca_stream import RedactingLogger

ORDER = {
    "id": "61e69015-8549-4bfd-b9c3-01e75843f47d",
    "client_order_id": "c-1",
    "symbol": "AAPL",
    "side": "buy",
    "type": "limit",
    "status": "new",
    "qty": "1.5",
    "limit_price": "190.01",
    "filled_qty": "0",
    "time_in_force": "day",
    "created_at": "2026-01-02T15:04:05.123456789Z",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-02T15:04:05Z", datetime(2026, 1, 2, 15, 4, 5, tzinfo=UTC)),
        ("2026-01-02T15:04:05.123456789Z", datetime(2026, 1, 2, 15, 4, 5, 123456, tzinfo=UTC)),
        ("2026-01-02T10:04:05.5-05:00", datetime(2026, 1, 2, 15, 4, 5, 500000, tzinfo=UTC)),
    ],
)
def test_timestamps_are_utc_and_truncated_to_microseconds(text, expected):
    parsed = parse_ts(text, "t")
    assert parsed == expected and parsed.tzinfo is UTC


@pytest.mark.parametrize("bad", ["2026-01-02T15:04:05", "yesterday", 1700000000, None])
def test_bad_or_naive_timestamps_are_refused(bad):
    with pytest.raises(AlpacaParseError):
        parse_ts(bad, "t")


def test_amounts_are_exact_decimals_and_floats_are_refused():
    assert dec("0.1", "x") == D("0.1") and dec(3, "x") == D(3) and dec(D("2.5"), "x") == D("2.5")
    for bad in (0.1, True, "NaN", "Infinity", "abc", [1]):
        with pytest.raises(AlpacaParseError):
            dec(bad, "x")
    assert format_dec(D("1E-5")) == "0.00001" and format_dec(D("1E+2")) == "100"
    assert format_ts(datetime(2026, 1, 2, 10, 0, tzinfo=UTC)) == "2026-01-02T10:00:00.000000Z"


def test_order_falls_back_to_created_at_and_keeps_decimals():
    order = parse_order(ORDER)
    assert order.qty == D("1.5") and order.limit_price == D("190.01")
    assert order.submitted_at == datetime(2026, 1, 2, 15, 4, 5, 123456, tzinfo=UTC)
    with pytest.raises(AlpacaParseError, match="side"):
        parse_order({**ORDER, "side": "sideways"})
    with pytest.raises(AlpacaParseError, match="id"):
        parse_order({k: v for k, v in ORDER.items() if k != "id"})


def test_documented_fill_activity_without_account_fields():
    # Alpaca's documented sample: no account_id, order_status or client_order_id
    fill = parse_fill_activity({
        "id": "20210127144930176::ddc0a142-ebfd-4890-9021-641d33e58742",
        "activity_type": "FILL", "transaction_time": "2021-01-27T19:49:30.176Z",
        "type": "partial_fill", "price": "31.6", "qty": "100", "side": "sell_short",
        "symbol": "QQQJ", "leaves_qty": "131", "order_id": "ee8058e5-41a0-48fd-8156-915ae0af6d17",
        "cum_qty": "869",
    })
    assert fill.side == "sell" and fill.cum_qty == D(869) and fill.client_order_id is None


def test_short_position_sign_follows_side():
    pos = parse_position({"symbol": "TSLA", "qty": "5", "side": "short", "avg_entry_price": "1"})
    assert pos.qty == D(-5)


def test_account_without_pdt_fields():
    account = parse_account({"id": "a", "equity": "10", "cash": "10", "buying_power": "20"})
    assert account.daytrade_count is None and account.pattern_day_trader is None
    with pytest.raises(AlpacaParseError):
        parse_account({"id": "a", "equity": "10", "cash": "10", "buying_power": "20",
                       "daytrade_count": "1.5"})


def test_error_bodies():
    assert parse_error_body('{"code": 40010001, "message": "client_order_id must be unique"}') \
        == (40010001, "client_order_id must be unique")
    assert parse_error_body("<html>504 Gateway Time-out</html>") == (None, None)
    assert parse_error_body("[]") == (None, None)


def test_redacting_logger_hides_frames_that_carry_the_secret(caplog):
    class Frame:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def __str__(self) -> str:  # elided like websockets' own, which cuts the secret
            return repr(self.data[:20]) + "..." + repr(self.data[-12:])

    secret = "top-secret-value-123"
    adapter = RedactingLogger(logging.getLogger("test.redact"), (secret,))
    caplog.set_level(logging.DEBUG, logger="test.redact")
    adapter.debug("> %s", Frame(b'{"action":"authenticate","secret_key":"top-secret-value-123"}'))
    adapter.debug("> %s", Frame(b'{"action":"listen"}'))
    adapter.warning("text with %s inside", secret)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "> <frame redacted: contains credentials>"
    assert "listen" in messages[1]
    assert messages[2] == "text with *** inside"
    assert not any("value-123" in m for m in messages)


# ------------------------------------------------------------------ typed decoding (wire structs)


def test_amounts_decode_exactly_whatever_their_form():
    order = parse_order({**ORDER, "qty": "0.000000001", "limit_price": "190.123456789",
                         "filled_avg_price": D("190.10"), "filled_qty": 0})
    assert order.qty == D("0.000000001") and str(order.limit_price) == "190.123456789"
    assert str(order.filled_avg_price) == "190.10"  # the trailing zero survives: exact
    assert order.filled_qty == D(0) and isinstance(order.filled_qty, D)


def test_missing_optional_fields_take_their_defaults():
    minimal = {k: ORDER[k] for k in ("id", "client_order_id", "symbol", "side", "type",
                                     "status")}
    order = parse_order(minimal)
    assert order.qty is None and order.limit_price is None and order.submitted_at is None
    assert order.filled_qty == D(0) and order.time_in_force == "day"
    assert order.order_class == "simple" and order.legs == ()
    # Alpaca's "" for an unset field is the same as leaving it out
    blank = parse_order({**minimal, "limit_price": "", "replaced_by": "", "order_class": ""})
    assert blank.limit_price is None and blank.replaced_by is None
    assert blank.order_class == "simple"


@pytest.mark.parametrize(("field", "value", "match"), [
    ("qty", ["1"], r"Expected `decimal \| null`, got `array` - at `\$\.qty`"),
    ("qty", True, r"Expected `decimal \| null`, got `bool` - at `\$\.qty`"),
    ("qty", "ten", r"Invalid decimal.*\$\.qty"),
    ("limit_price", "Infinity", "limit_price: not finite"),
    ("symbol", 7, r"Expected `str`, got `int`.*\$\.symbol"),
    ("side", "sideways", r"side"),
    ("legs", {"id": "x"}, r"Expected `array \| null`, got `object` - at `\$\.legs`"),
    ("qty", 1.5, "float"),
])
def test_wrong_types_are_clear_errors_naming_the_field(field, value, match):
    with pytest.raises(AlpacaParseError, match=match) as err:
        parse_order({**ORDER, field: value})
    assert str(err.value).startswith("order: ")


def test_a_bad_leg_is_named_by_its_path():
    with pytest.raises(AlpacaParseError, match=r"\$\.legs\[1\]\.stop_price"):
        parse_order({**ORDER, "legs": [{**ORDER, "id": "a"},
                                       {**ORDER, "id": "b", "stop_price": "soon"}]})
    with pytest.raises(AlpacaParseError, match=r"missing required field `client_order_id`"):
        parse_order({**ORDER, "legs": [{k: v for k, v in ORDER.items()
                                        if k != "client_order_id"}]})


def test_trade_update_decimals_and_missing_parts():
    update = parse_trade_update({"event": "partial_fill", "order": ORDER, "execution_id": "x1",
                                 "timestamp": "2026-01-02T15:04:05.999999999Z",
                                 "qty": "0.5", "price": "190.015", "position_qty": "-0.5"})
    assert (update.qty, update.price, update.position_qty) == (D("0.5"), D("190.015"),
                                                              D("-0.5"))
    assert update.timestamp == datetime(2026, 1, 2, 15, 4, 5, 999999, tzinfo=UTC)  # truncated
    assert update.fee == D(0) and update.order.client_order_id == "c-1"
    with pytest.raises(AlpacaParseError, match="missing required field `order`"):
        parse_trade_update({"event": "new", "timestamp": "2026-01-02T15:04:05Z"})
    with pytest.raises(AlpacaParseError, match=r"Expected `object`.*\$\.order"):
        parse_trade_update({"event": "new", "order": "c-1", "timestamp": "2026-01-02T15:04:05Z"})
    with pytest.raises(AlpacaParseError, match=r"Expected `object`"):
        parse_trade_update([ORDER])


def test_account_and_asset_flags_as_booleans_or_strings():
    account = parse_account({"id": "a", "equity": "10.01", "cash": "10", "buying_power": "20",
                             "daytrade_count": 3, "pattern_day_trader": "false",
                             "trading_blocked": False, "account_blocked": "true"})
    assert account.equity == D("10.01") and account.daytrade_count == 3
    assert account.pattern_day_trader is False and account.trading_blocked is True
    with pytest.raises(AlpacaParseError, match=r"\$\.trading_blocked"):
        parse_account({"id": "a", "equity": "10", "cash": "10", "buying_power": "20",
                       "trading_blocked": "maybe"})
    with pytest.raises(AlpacaParseError, match="missing required field `buying_power`"):
        parse_account({"id": "a", "equity": "10", "cash": "10"})
    asset = parse_asset({"symbol": "AAPL", "tradable": "true"})
    assert asset.tradable and not asset.fractionable and asset.status == "active"
    with pytest.raises(AlpacaParseError, match="missing required field `tradable`"):
        parse_asset({"symbol": "AAPL"})


def test_fill_activity_and_position_refuse_bad_amounts():
    with pytest.raises(AlpacaParseError, match="fill activity: price: not finite"):
        parse_fill_activity({"id": "1", "order_id": "o", "symbol": "A", "side": "buy",
                             "qty": "1", "price": "NaN", "transaction_time": "2026-01-02T15:04:05Z"})
    with pytest.raises(AlpacaParseError, match=r"position: .*\$\.side"):
        parse_position({"symbol": "TSLA", "qty": "5", "side": "sideways", "avg_entry_price": "1"})
    assert parse_position({"symbol": "TSLA", "qty": "-5", "side": "long",
                           "avg_entry_price": "1.25"}).qty == D(5)
