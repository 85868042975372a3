"""AlpacaBroker builds every order through alpaca-py's own request type (its validation and
field names) and sends our exact Decimal strings in place of the SDK's floats."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.brokers.alpaca import AlpacaBroker, sdk_request
from engine.brokers.base import OrderRejectedError, OrderRequest
from events.catalogue import OrderLeg, StopLoss, TakeProfit

D = Decimal


def req(**kw: object) -> OrderRequest:
    base: dict[str, object] = {"client_order_id": "mqd-x", "symbol": "AAPL", "side": "buy",
                               "order_type": "market", "qty": D(3), "time_in_force": "gtc"}
    base.update(kw)
    return OrderRequest(**base)  # type: ignore[arg-type]


SL = StopLoss(stop_price=D("95.01"))
TP = TakeProfit(limit_price=D("110.07"))
LEGS = (OrderLeg(client_order_id="mqd-x-tp", role="take_profit", side="sell",
                 order_type="limit", qty=D(3), limit_price=D("110.07")),
        OrderLeg(client_order_id="mqd-x-sl", role="stop_loss", side="sell", order_type="stop",
                 qty=D(3), stop_price=D("95.01")))


@pytest.mark.parametrize(("r", "expected"), [
    (req(side="sell", order_type="stop", stop_price=D("95.01")),
     {"type": "stop", "stop_price": "95.01"}),
    (req(side="sell", order_type="stop_limit", stop_price=D("95.01"), limit_price=D("94.5")),
     {"type": "stop_limit", "stop_price": "95.01", "limit_price": "94.5"}),
    (req(side="sell", order_type="trailing_stop", trail_percent=D("1.5")),
     {"type": "trailing_stop", "trail_percent": "1.5"}),
    (req(side="sell", order_type="trailing_stop", trail_price=D("2.25")),
     {"type": "trailing_stop", "trail_price": "2.25"}),
    (req(order_class="bracket", take_profit=TP, stop_loss=SL, legs=LEGS),
     {"order_class": "bracket", "take_profit": {"limit_price": "110.07"},
      "stop_loss": {"stop_price": "95.01"}}),
    (req(order_class="oto", order_type="limit", limit_price=D("100.1"),
         stop_loss=StopLoss(stop_price=D("95.01"), limit_price=D("94.99")), legs=LEGS[1:]),
     {"order_class": "oto", "limit_price": "100.1",
      "stop_loss": {"stop_price": "95.01", "limit_price": "94.99"}}),
    (req(side="sell", order_class="oco", order_type="limit", limit_price=D("110.07"),
         take_profit=TP, stop_loss=SL, legs=LEGS[1:]),
     {"order_class": "oco", "limit_price": "110.07", "take_profit": {"limit_price": "110.07"},
      "stop_loss": {"stop_price": "95.01"}}),
])
def test_body_has_the_sdks_fields_with_exact_amounts(r: OrderRequest,
                                                     expected: dict[str, object]) -> None:
    body = AlpacaBroker._order_body(r)
    sdk = sdk_request(r).to_request_fields()
    assert set(body) == set(sdk) | {"client_order_id"}  # the SDK's shape, nothing invented
    assert body["qty"] == "3" and body["client_order_id"] == "mqd-x"
    for key, value in expected.items():
        assert body[key] == value
    assert not any(isinstance(v, float) for v in body.values())


@pytest.mark.parametrize(("r", "message"), [
    (req(side="sell", order_type="trailing_stop"), "trail"),
    (req(side="sell", order_type="trailing_stop", trail_percent=D(0)), "trail_percent must be"),
    (req(order_class="bracket", take_profit=None, stop_loss=None), "needs its legs"),
    (req(stop_loss=SL), "legs need order_class"),
    (req(side="sell", order_type="stop"), "stop"),
])
def test_bad_orders_are_refused_before_sending(r: OrderRequest, message: str) -> None:
    with pytest.raises(OrderRejectedError, match="not sent") as err:
        AlpacaBroker._order_body(r)
    assert message in str(err.value)
